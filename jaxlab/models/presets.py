"""The model shapes the experiments share, as `ModelConfig` presets: one place for each family.

  gpt_model       a GPT-2-style stack of blocks (nanoGPT's layout): pre-LayerNorm blocks of causal
                  softmax attention and a GeLU MLP of width 4 d_model, learned positions, token
                  embedding and linear readout, biases on. instruction-clustering, steerability,
                  latent-ambiguity, representation-dissimilarity and the benchmark's softmax workload
                  use it, at their own sizes.
  linear_attention_model
                  linear self-attention layers on raw tokens (von Oswald et al. 2023; Sander et al.
                  2024): no LayerNorm, MLP, biases or positions, identity read-in. icl-regression
                  (keys from the context only, `readout="neg_y_block"`) and icl-autoregressive (causal,
                  `readout="y_block"`) use it.

Every field of `ModelConfig` can be overridden by keyword; the presets only fix the family's shape.
"""

from __future__ import annotations

from typing import Any

from jaxlab.config import ModelConfig


def gpt_model(*, n_layers: int, n_heads: int, d_model: int, d_mlp: int | None = None, **overrides: Any) -> ModelConfig:
    """A GPT-2-style block stack; `d_mlp` defaults to 4 * d_model (GPT-2's ratio).

    Shape: pre-LN blocks (`layernorm=True`), causal softmax attention, GeLU MLP, discrete tokens with
    a linear embedding and readout, learned positional embeddings. `overrides` sets any other field
    (e.g. `activation="solu"`, `input="continuous"` for real-valued tokens).
    """
    base: dict[str, Any] = dict(
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_mlp=4 * d_model if d_mlp is None else d_mlp,
        attention="softmax",
        mask="causal",
        activation="gelu",
        layernorm=True,
        use_bias=True,
        input="discrete",
        read_in="linear",
        readout="linear",
        pos_encoding="learned",
    )
    return ModelConfig(**{**base, **overrides})


def linear_attention_model(*, mask: str, readout: str, init_scale: float, **overrides: Any) -> ModelConfig:
    """One linear self-attention layer (one head) on raw tokens, without LayerNorm, MLP, biases or
    positions, identity read-in (d_model = token width).

    `mask`: which keys a query sees ("context_keys": the context tokens only, von Oswald et al.;
    "causal": Sander et al.). `readout`: which block of the residual stream is the prediction.
    `init_scale`: the weights' initial scale (small: the models start near zero).
    """
    base: dict[str, Any] = dict(
        n_layers=1,
        n_heads=1,
        attention="linear",
        mask=mask,
        d_mlp=0,
        layernorm=False,
        use_bias=False,
        read_in="identity",
        readout=readout,
        pos_encoding="none",
        init_scale=init_scale,
    )
    return ModelConfig(**{**base, **overrides})


__all__ = ["gpt_model", "linear_attention_model"]

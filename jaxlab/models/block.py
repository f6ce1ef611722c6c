"""One transformer block. With `layernorm`, `norm_position` places its LayerNorms:

  pre       x <- x + Attn(LN1(x));  x <- x + MLP(LN2(x)) when d_mlp > 0   (pre-norm, GPT-2)
  attn_out  x <- x + LN1(Attn(x));  x <- x + LN2(MLP(x)) when d_mlp > 0   (the sublayer's output normalized)

and without it x <- x + Attn(x); x <- x + MLP(x). `attn_out` is the block of Sander et al. 2024's released
augmented.py (github.com/michaelsdr/ical, Fig. 5), which reads, for tokens e_t [B, T, 3d]:

  TransformerBlock.forward:  norm1(SelfAttention(x))     (nn.LayerNorm(3d): learned weight 1 / bias 0, eps 1e-5)
  Decoder.forward:           out = x + layer(x)          (the residual is around the normalized attention)
  Transformer.forward:       fc_out(out)                 (nn.Linear(3d, 3d), no final norm; the loss reads :d)
  SelfAttention:             fc_out(((q k^T) * causal / sqrt(3d)) v), q, k, v = nn.Linear(3d, 3d)(x), biases

that is y = W_r (x + LN(Attn(x))) + b_r, the model `norm_position="attn_out"` builds with a linear readout
(`model.final_norm` is False: `jaxlab.models.transformer` then has no ln_final).

Its hook points (`jaxlab.models.hooks`): `{prefix}.hook_resid_pre`, the attention's, LayerNorms'
and MLP's points, `hook_attn_out`, `hook_resid_mid`, `hook_mlp_out`, `hook_resid_post`; `hook_attn_out` and
`hook_mlp_out` are the terms added to the stream (with `attn_out`: after the LayerNorm, whose `ln1.hook_scale`
then follows the attention's points), so resid_post = resid_pre + attn_out + mlp_out holds for both. Parameters
sit under the block's own path: `attn`, `ln1`, `ln2`, `mlp` (`jaxlab.models.transformer` names the
blocks `blocks_{i}`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxlab.config import ModelConfig
from jaxlab.models.attention import Attention, AttentionExecution, query_index
from jaxlab.models.constrained_attention import ConstrainedAttention, ConstrainedGDAttention
from jaxlab.models.hooks import record
from jaxlab.models.interventions import Intervention
from jaxlab.models.layernorm import LayerNorm
from jaxlab.models.mlp import MLP


class Block(nn.Module):
    """Attention, then an MLP when `cfg.d_mlp` > 0, each on the residual stream, LayerNorms where
    `cfg.norm_position` puts them (module docstring);
    `execution` chooses how outputs at a few query positions are computed, not what."""

    cfg: ModelConfig
    execution: AttentionExecution = AttentionExecution()

    def setup(self) -> None:
        kinds = {"constrained": ConstrainedAttention, "constrained_gd": ConstrainedGDAttention}
        kind = kinds.get(self.cfg.attention)
        self.attn = kind(self.cfg) if kind else Attention(self.cfg, self.execution)
        if self.cfg.layernorm:
            self.ln1 = LayerNorm()
        if self.cfg.d_mlp:
            self.mlp = MLP(self.cfg)
            if self.cfg.layernorm:
                self.ln2 = LayerNorm()

    def __call__(
        self,
        x_BTD: jax.Array,
        prefix: str,
        interventions: Sequence[Intervention] = (),
        queries: Sequence[int] | None = None,
        out_dims: int | None = None,
    ) -> jax.Array:
        """The stream leaving the block [B, T, D] from the stream entering it x [B, T, D]; `prefix` names the
        hook points (`blocks.3`: `blocks.3.hook_resid_pre`, ...).

        `queries` (static positions): the block computes its queries, MLP and output there only
        ([B, P, D]; keys and values still come from every token). `out_dims`: only the last `out_dims`
        coordinates of the stream come out (a read-out that needs no more).
        """
        cfg = self.cfg
        pre = cfg.layernorm and cfg.norm_position == "pre"
        post = cfg.layernorm and cfg.norm_position == "attn_out"
        assert not (post and out_dims), "a LayerNorm on the attention output reads all of its coordinates"
        x = record(self, f"{prefix}.hook_resid_pre", x_BTD, interventions)
        h = self.ln1(x, f"{prefix}.ln1", interventions) if pre else x
        a = self.attn(h, queries, out_dims, f"{prefix}.attn", interventions)
        if post:
            a = self.ln1(a, f"{prefix}.ln1", interventions)
        if queries is not None:
            x = x[:, query_index(queries, x.shape[1])]
        if out_dims is not None:
            x = x[..., -out_dims:]
        x = x + record(self, f"{prefix}.hook_attn_out", a, interventions)
        if cfg.d_mlp:
            x = record(self, f"{prefix}.hook_resid_mid", x, interventions)
            h = self.ln2(x, f"{prefix}.ln2", interventions) if pre else x
            m = self.mlp(h, f"{prefix}.mlp", interventions)
            if post:
                m = self.ln2(m, f"{prefix}.ln2", interventions)
            x = x + record(self, f"{prefix}.hook_mlp_out", m, interventions)
        return record(self, f"{prefix}.hook_resid_post", x, interventions)


__all__ = ["Block"]

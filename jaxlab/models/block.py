"""One transformer block (pre-norm when `layernorm`):

  x <- x + Attn(LN1(x));  x <- x + MLP(LN2(x)) when d_mlp > 0,

with its hook points (`jaxlab.models.hooks`): `{prefix}.hook_resid_pre`, the attention's, LayerNorms'
and MLP's points, `hook_attn_out`, `hook_resid_mid`, `hook_mlp_out`, `hook_resid_post`. Parameters
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
    """Attention, then an MLP when `cfg.d_mlp` > 0, each on the residual stream (module docstring);
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
        x = record(self, f"{prefix}.hook_resid_pre", x_BTD, interventions)
        h = self.ln1(x, f"{prefix}.ln1", interventions) if cfg.layernorm else x
        a = self.attn(h, queries, out_dims, f"{prefix}.attn", interventions)
        if queries is not None:
            x = x[:, query_index(queries, x.shape[1])]
        if out_dims is not None:
            x = x[..., -out_dims:]
        x = x + record(self, f"{prefix}.hook_attn_out", a, interventions)
        if cfg.d_mlp:
            x = record(self, f"{prefix}.hook_resid_mid", x, interventions)
            h = self.ln2(x, f"{prefix}.ln2", interventions) if cfg.layernorm else x
            m = self.mlp(h, f"{prefix}.mlp", interventions)
            x = x + record(self, f"{prefix}.hook_mlp_out", m, interventions)
        return record(self, f"{prefix}.hook_resid_post", x, interventions)


__all__ = ["Block"]

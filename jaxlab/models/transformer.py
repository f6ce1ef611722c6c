"""The transformer family: one Flax Linen module configured by a frozen `ModelConfig`.

Block i (pre-norm when `layernorm`; `jaxlab.models.block`):
  x <- x + Attn_i(LN(x));  x <- x + MLP_i(LN(x)) when d_mlp > 0,
or, with `norm_position="attn_out"`, x <- x + LN(Attn_i(x)) (and x + LN(MLP_i(x))) and no final norm.
With `tie_layers` every block uses the same parameters (the recurrent / "deq" setup of von Oswald
et al. 2023). Inputs are continuous tokens (read in by a linear map or used as they are) or token
ids (embedding); the readout is a linear map (`linear`), or the last `d_output` coordinates of the
residual stream (`y_block`), negated (`neg_y_block`, von Oswald et al.'s convention: the GD
construction writes -y_hat into the query token's y entry).

Hook points: the model records TransformerLens's points (`jaxlab.models.hooks`: hook_embed,
hook_pos_embed, blocks.{i}.hook_resid_pre, blocks.{i}.ln1.hook_scale, blocks.{i}.attn.hook_q/k/v,
hook_attn_scores, hook_pattern, hook_z, blocks.{i}.hook_attn_out, hook_resid_mid, ln2.hook_scale,
mlp.hook_pre/hook_mid/hook_post, hook_mlp_out, hook_resid_post, ln_final.hook_scale; the list of a
config is `hook_names(cfg)`) with `sow` in the collection `intermediates`, and `__call__` takes a
tuple of `Intervention`s (`jaxlab.models.interventions`), applied at their point before the value is
recorded and passed on. `run_with_cache` returns an `ActivationCache` keyed by the flat names.
Without recording and without interventions at attention, LayerNorm or MLP points, every fast path
(`outputs_at`, query-side attention, `softmax_attention`, the q (K^T V) linear path, `layer_norm`)
computes what it computed before hooks existed.

Parameters keep their Flax paths; `param_path` / `params_at` resolve TransformerLens module paths:

  TransformerLens path     params path
  embed                    embed (ids: `embedding` [vocab, D]) or read_in (continuous: `kernel`, `bias`)
  pos_embed                pos_embed [max_len, D] (learned positions; an array, not a subtree)
  blocks.{i}               blocks_{i} (tie_layers: blocks_0 for every i; stacked layout: blocks[i])
  blocks.{i}.ln1, .ln2     blocks_{i}/ln1, ln2 (`scale`, `bias`)
  blocks.{i}.attn          blocks_{i}/attn (`w_qkv` [D, 3, H, Dh], `w_out` [H, Dh, D], `b_qkv`, `b_out`,
                           and `pos_embed` for positional attention)
  blocks.{i}.mlp           blocks_{i}/mlp (`w_in`, `b_in`, `w_out`, `b_out`, and `ln_solu` for solu)
  ln_final                 ln_final
  unembed                  unembed (`kernel`, `bias`; linear readout only)

and any further parts name keys below (`blocks.0.attn.w_qkv`).

`execution` (`AttentionExecution`) chooses how attention computes outputs at a few positions
(`outputs_at`), not what: the training engine passes its execution plan's choices
(`jaxlab.train.plan`); the default suits any backend.

With `scan_layers`, blocks of one structure are compiled once: one block runs under `lax.scan` over
the blocks' parameters (`jaxlab.models.layer_scan`), so the model's part of the program does not
grow with `n_layers`; recorded points keep their per-layer names, and interventions at the residual
points act at the layer they name. The parameters may come in either layout, whatever
`scan_layers` says: per block (`blocks_{i}`, what `init` creates; the loop stacks them at every call)
or stacked (`blocks` with [L, ...] leaves, `layer_scan.stack_blocks`: what a training state holds
with `train.scan_layers`; the loop reads them as they are, blocks outside it read their slice). The
unrolled loop still runs at `init` (it creates the parameters), for a partial last block
(`outputs_at` without hooks: its own shapes, outside the loop), below `MIN_SCAN_BLOCKS` blocks, and
with an intervention inside a block's attention, LayerNorm or MLP (it switches that module of that
one block to its explicit path). The default is the unrolled loop, on every backend: a training
step pays the loop at every step (residuals written to and read from stacked buffers, no fusion
across blocks: the 6-block clustering step ran ~12% slower on the 2-core CPU with stacked
parameters) and saves compile time once (with a stacked training state the clustering sweep
program compiles in the same CPU time at 24 blocks as at 6, 0.63x the unrolled 6-block program's;
benchmarks/results/compile-depth.md), so scanning suits programs compiled more often than they
run: deep models, probes, tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.config import ModelConfig
from jaxlab.models.attention import AttentionExecution, dot, kernel_init, query_index
from jaxlab.models.block import Block
from jaxlab.models.cache import ActivationCache
from jaxlab.models.hooks import COLLECTION, active, block_point, flatten_intermediates, hook_names, record
from jaxlab.models.interventions import Intervention, check_interventions
from jaxlab.models.layer_scan import STACKED, scan_blocks, scannable, unstack_blocks
from jaxlab.models.layernorm import LayerNorm


def sinusoidal_table(max_len: int, d_model: int) -> jax.Array:
    """PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)) (Vaswani et al. 2017)."""
    pos = jnp.arange(max_len)[:, None]
    i = jnp.arange(0, d_model, 2)[None, :]
    angle = pos / (10000.0 ** (i / d_model))
    table = jnp.zeros((max_len, d_model))
    table = table.at[:, 0::2].set(jnp.sin(angle))
    return table.at[:, 1::2].set(jnp.cos(angle[:, : d_model // 2]))


MIN_SCAN_BLOCKS = 2  # one block gains nothing from a loop


class Transformer(nn.Module):
    """The transformer family member of `cfg` (a resolved `ModelConfig`; see the module docstring):
    read-in or embedding, positions, `n_layers` blocks (shared with `tie_layers`), final norm, readout.
    `execution` chooses how outputs at a few positions are computed, not what. `scan_layers` runs the
    blocks as one `lax.scan` where it can (`_scans`; the same numbers, a program that does not grow
    with the depth); the default unrolls them (module docstring: why).
    """

    cfg: ModelConfig
    execution: AttentionExecution = AttentionExecution()
    scan_layers: bool = False

    def setup(self) -> None:
        cfg = self.cfg
        assert cfg.d_model is not None and cfg.max_len is not None, "resolve the config (ExperimentConfig.resolve)"
        if cfg.input == "discrete":
            self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=kernel_init(1, 0))
        elif cfg.read_in == "linear":
            self.read_in = nn.Dense(cfg.d_model, use_bias=cfg.use_bias, kernel_init=kernel_init(0, 1))
        if cfg.pos_encoding == "learned":
            self.pos_embed = self.param("pos_embed", kernel_init(1, 0), (cfg.max_len, cfg.d_model))
        self.blocks = [Block(cfg, self.execution) for _ in range(1 if cfg.tie_layers else cfg.n_layers)]
        if cfg.final_norm:
            self.ln_final = LayerNorm()
        if cfg.readout == "linear":
            n_out = cfg.vocab_size if cfg.input == "discrete" and cfg.d_output is None else cfg.d_output
            self.unembed = nn.Dense(n_out, use_bias=cfg.use_bias, kernel_init=kernel_init(0, 1))

    def __call__(
        self,
        inputs: jax.Array,
        interventions: Sequence[Intervention] = (),
        outputs_at: Sequence[int] | None = None,
    ) -> jax.Array:
        """inputs [B, T, d_input] (continuous) or [B, T] (ids) -> outputs [B, T, d_output].

        `outputs_at` (static positions) returns outputs [B, P, d_output] at those positions only,
        equal to `outputs[:, outputs_at]`: the last block then computes its queries, MLP and
        readout at those positions only (keys and values still come from every token). A loss
        that reads a few positions (the query token of the paired regression layout) needs no more.
        """
        cfg = self.cfg
        check_interventions(cfg, interventions)
        x = self.embed_tokens(inputs, interventions)
        recording = self.is_mutable_collection(COLLECTION)
        # Hooks and interventions see whole sequences: with either, compute them and slice.
        partial = outputs_at is not None and not recording and not interventions
        L = cfg.n_layers
        first = 0  # the first block of the unrolled loop (those before it ran as one lax.scan)
        n_loop = L - 1 if partial else L  # a partial last block has its own shapes: it stays outside
        # the stacked layout (`layer_scan.STACKED`: a training state's with `train.scan_layers`)
        stacked = not self.is_initializing() and STACKED in self.variables["params"]
        if self._scans(n_loop, interventions):
            block = Block(cfg, self.execution, parent=None)  # unbound: the loop body applies it to one layer
            params = self.variables["params"]
            x, recorded = scan_blocks(block, params, x, range(n_loop), interventions, recording, cfg.tie_layers)
            for name, value in recorded.items():
                self.sow(COLLECTION, name, value)
            first = n_loop
        for i in range(first, L):
            queries = tuple(outputs_at) if partial and i == L - 1 else None
            # The y-block read-out of a last block without MLP or norms reads d_output coordinates only.
            out_dims = cfg.d_output if queries is not None and self._reads_y_block_only() else None
            if stacked:
                x = self._stacked_block(i, x, interventions, queries, out_dims)
            else:
                blk = self.blocks[0 if cfg.tie_layers else i]
                x = blk(x, f"blocks.{i}", interventions, queries, out_dims)
        if outputs_at is not None and not partial:
            x = x[:, query_index(tuple(outputs_at), x.shape[1])]
        if cfg.final_norm:
            x = self.ln_final(x, "ln_final", interventions)
        return self.read_out(x)

    def _stacked_block(
        self,
        i: int,
        x_BTD: jax.Array,
        interventions: Sequence[Intervention],
        queries: Sequence[int] | None,
        out_dims: int | None,
    ) -> jax.Array:
        """Block i outside the loop with stacked parameters: an unbound `Block` applied to layer i's slice of
        `blocks` [L, ...] (what `self.blocks[i]` computes on `blocks_{i}`), its recorded points sown here
        under their full names."""
        block = Block(self.cfg, self.execution, parent=None)
        variables = {"params": jax.tree_util.tree_map(lambda w: w[i], self.variables["params"][STACKED])}
        args = (x_BTD, f"blocks.{i}", interventions, queries, out_dims)
        if not self.is_mutable_collection(COLLECTION):
            return block.apply(variables, *args)
        x, state = block.apply(variables, *args, mutable=[COLLECTION])
        for name, value in flatten_intermediates(state[COLLECTION]).items():
            self.sow(COLLECTION, name, value)
        return x

    def _scans(self, n_blocks: int, interventions: Sequence[Intervention]) -> bool:
        """Whether `n_blocks` blocks run as one `lax.scan` (`jaxlab.models.layer_scan`): `scan_layers`, not while
        initializing (the parameters do not exist yet: the unrolled loop creates them), at least
        `MIN_SCAN_BLOCKS` blocks, and interventions inside the blocks' modules only at their residual
        points (`scannable`: the others choose one module's path at one layer)."""
        return (
            self.scan_layers and n_blocks >= MIN_SCAN_BLOCKS and not self.is_initializing() and scannable(interventions)
        )

    def _reads_y_block_only(self) -> bool:
        cfg = self.cfg
        return cfg.readout in ("y_block", "neg_y_block") and not cfg.d_mlp and not cfg.layernorm

    def embed_tokens(self, inputs: jax.Array, interventions: Sequence[Intervention] = ()) -> jax.Array:
        """The residual stream entering block 0: inputs [B, T, d_input] (read in) or ids [B, T] (embedded), plus the
        positional encoding -> [B, T, d_model]; the two terms are the points hook_embed and hook_pos_embed."""
        cfg = self.cfg
        if cfg.input == "discrete":
            chex.assert_rank(inputs, 2)
            x = self.embed(inputs)
        else:
            chex.assert_rank(inputs, 3)
            chex.assert_axis_dimension(inputs, 2, cfg.d_input)
            x = self.read_in(inputs) if cfg.read_in == "linear" else inputs.astype(jnp.float32)
        x = self._hook("hook_embed", x, interventions)
        T = x.shape[1]
        if cfg.pos_encoding == "learned":
            pe_TD = self.pos_embed[:T]
        elif cfg.pos_encoding == "sinusoidal":
            pe_TD = sinusoidal_table(cfg.max_len, cfg.d_model)[:T]
        else:
            return x
        if active(self, "hook_pos_embed", interventions):  # recorded per sequence, as TransformerLens: [B, T, D]
            return x + self._hook("hook_pos_embed", jnp.broadcast_to(pe_TD, x.shape), interventions)
        return x + pe_TD

    def read_out(self, x_BTD: jax.Array) -> jax.Array:
        """Outputs of the final stream x [B, T, d_model]: the linear unembedding, or the last `d_output` coordinates
        of x (negated for `neg_y_block`)."""
        cfg = self.cfg
        if cfg.readout == "linear":
            return self.unembed(x_BTD)
        y = x_BTD[..., -cfg.d_output :]
        return -y if cfg.readout == "neg_y_block" else y

    def unembed_stream(self, x: jax.Array) -> jax.Array:
        """Outputs of any residual stream x [..., T, d_model]: the final LayerNorm (with `layernorm`, its
        statistics per token) then `read_out` (the logit lens; `logit_lens`)."""
        if self.cfg.final_norm:
            x = self.ln_final(x, "ln_final")
        return self.read_out(x)

    def _hook(self, name: str, x: jax.Array, interventions: Sequence[Intervention]) -> jax.Array:
        return record(self, name, x, interventions)


def _is_weight(path: tuple) -> bool:
    leaf = getattr(path[-1], "key", str(path[-1]))
    return leaf in ("kernel", "embedding", "w_qkv", "w_out", "w_in", "pos_embed")


def scale_weights(params: chex.ArrayTree, init_scale: jax.Array | float) -> chex.ArrayTree:
    """Multiply every weight matrix (not biases or norms) by sqrt(init_scale).

    With the unit variance-scaling initializers this gives variance init_scale / fan_in, i.e.
    Haiku's VarianceScaling(init_scale) (von Oswald et al. use 0.002). Being a multiplication,
    `init_scale` can differ across the vmapped runs of one program.
    """
    factor = jnp.sqrt(jnp.asarray(init_scale, jnp.float32))
    return jax.tree_util.tree_map_with_path(lambda p, w: w * factor if _is_weight(p) else w, params)


def init_params(
    model: Transformer, key: jax.Array, example_inputs: jax.Array, init_scale: jax.Array | float = 1.0
) -> chex.ArrayTree:
    """Initial parameters of `model` (the `params` collection), weights scaled by `init_scale`."""
    params = model.init(key, example_inputs)["params"]
    return scale_weights(params, init_scale)


def run_with_cache(
    model: Transformer,
    params: chex.ArrayTree,
    inputs: jax.Array,
    names: Sequence[str] | None = None,
    interventions: Sequence[Intervention] = (),
) -> tuple[jax.Array, ActivationCache]:
    """(outputs, ActivationCache {hook name: activation}) for the requested hooks (all of
    `hook_names(model.cfg)` when `names` is None), in forward order.

    Recording selects the explicit attention path (every point is computed). Under jit,
    intermediates that are not returned are removed by dead-code elimination, so asking for few
    hooks costs no more than that forward pass.
    """
    allowed = hook_names(model.cfg)
    missing = [n for n in names or () if n not in allowed]
    if missing:
        raise ValueError(f"unknown hooks {missing} (allowed: {', '.join(allowed)})")
    out, state = model.apply({"params": params}, inputs, tuple(interventions), mutable=["intermediates"])
    flat = flatten_intermediates(state["intermediates"])
    wanted = allowed if names is None else names
    return out, ActivationCache({n: flat[n] for n in wanted}, model.cfg.n_layers, tuple(allowed))


def logit_lens(
    model: Transformer, params: chex.ArrayTree, cache: ActivationCache, layer: int | None = None, incl_mid: bool = False
) -> jax.Array:
    """The logit lens: outputs [n, B, T, d_output] of every accumulated residual
    (`cache.accumulated_resid(layer, incl_mid)`, [n, B, T, D]) read out as the final stream is: the
    final LayerNorm (with `layernorm`, each stream normalized by its own statistics) and the readout.
    The last entry (layer None) is the model's output."""
    resid_NBTD = cache.accumulated_resid(layer, incl_mid)
    chex.assert_rank(resid_NBTD, 4)
    return model.apply({"params": params}, resid_NBTD, method=Transformer.unembed_stream)


def param_path(name: str, cfg: ModelConfig | None = None) -> tuple[str, ...]:
    """The params-tree keys of the TransformerLens module path `name` (module docstring's table):
    `blocks.{i}` -> `blocks_{i}` (`blocks_0` for every i with `cfg.tie_layers`), `embed` -> `read_in` for
    a continuous `cfg`, every other part as it is. With `cfg` the block index is checked."""
    parts = name.split(".") if name else []
    point = block_point(name)
    if point is not None:
        i, rest = point
        if cfg is not None and not 0 <= i < cfg.n_layers:
            raise ValueError(f"param_path: {name!r}: block {i} of a model with {cfg.n_layers} blocks")
        parts = [f"blocks_{0 if cfg is not None and cfg.tie_layers else i}", *(rest.split(".") if rest else [])]
    elif parts[:1] == ["embed"] and cfg is not None and cfg.input != "discrete":
        parts = ["read_in", *parts[1:]]
    return tuple(parts)


def params_at(params: chex.ArrayTree, name: str, cfg: ModelConfig | None = None) -> chex.ArrayTree:
    """The params subtree (or array) at the TransformerLens module path `name` (`blocks.0.attn`:
    `params["blocks_0"]["attn"]`; `param_path`). Pass `cfg` for models with tied layers (every
    blocks.{i} is the shared `blocks_0`); KeyError naming the keys there when the path is absent. A
    stacked tree (`layer_scan.STACKED`, a training state's with `train.scan_layers`) is read per block
    (`unstack_blocks`; under jit the other blocks' slices are removed)."""
    path, node = param_path(name, cfg), params
    if hasattr(params, "keys") and STACKED in params and path[:1] != (STACKED,):
        n_layers = cfg.n_layers if cfg is not None else jax.tree_util.tree_leaves(params[STACKED])[0].shape[0]
        node = unstack_blocks(params, n_layers)
    for depth, key in enumerate(path):
        if not hasattr(node, "keys") or key not in node:
            where = "/".join(path[:depth]) or "the top level"
            have = ", ".join(node.keys()) if hasattr(node, "keys") else "an array"
            hint = " (tied layers share blocks_0: pass cfg)" if key.startswith("blocks_") else ""
            raise KeyError(f"params_at({name!r}): no {key!r} at {where}{hint} (there: {have})")
        node = node[key]
    return node


def count_params(params: chex.ArrayTree) -> int:
    """The number of scalars in a parameter tree."""
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


__all__ = [
    "Transformer",
    "count_params",
    "dot",
    "init_params",
    "logit_lens",
    "param_path",
    "params_at",
    "run_with_cache",
    "scale_weights",
    "sinusoidal_table",
]

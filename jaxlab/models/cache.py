"""`ActivationCache`: the activations of one forward pass by hook name, with TransformerLens's helpers.

A `Mapping[str, jax.Array]` (so `cache[name]` and `dict(cache)` work as on a dict) and a registered
pytree (its arrays are the leaves; names and the layer count are static), so it can be returned from
`jax.jit` and `jax.vmap` (each array then gains the mapped axis in front). `run_with_cache` returns
one. With L blocks:

  stack("hook_resid_post")          [L, ...]  blocks.{i}.hook_resid_post for i = 0 .. L-1
  accumulated_resid(layer)          [n, B, T, D]  resid_pre of blocks 0 .. layer (with resid_mid after
                                    each but the last when incl_mid), then the final resid_post when
                                    layer = L (default)
  decompose_resid(layer)            [n, B, T, D]  embed, pos_embed, attn_out_0, mlp_out_0, ... up to
                                    block layer - 1: summed, the stream entering block `layer`
                                    (default L: the final resid_post), without interventions

(`jaxlab.models.logit_lens` reads each accumulated residual out through the final norm and readout.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp


@jax.tree_util.register_pytree_node_class
class ActivationCache(Mapping[str, jax.Array]):
    """{hook name: activation} of one forward pass of a model with `n_layers` blocks (module docstring).

    `model_hooks`: every point the model has (`hook_names(cfg)`; default: the cached names), so that
    the helpers know which components exist even when only some were cached.
    """

    def __init__(
        self, activations: Mapping[str, jax.Array], n_layers: int, model_hooks: tuple[str, ...] | None = None
    ) -> None:
        self._acts = dict(activations)
        self.n_layers = n_layers
        self.model_hooks = tuple(self._acts) if model_hooks is None else tuple(model_hooks)

    def __getitem__(self, name: str) -> jax.Array:
        if name not in self._acts:
            hint = "" if name not in self.model_hooks else " (run_with_cache with names=None caches every point)"
            raise KeyError(f"{name!r} is not in the cache{hint} (cached: {', '.join(self._acts)})")
        return self._acts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __repr__(self) -> str:
        return f"ActivationCache(n_layers={self.n_layers}, hooks=[{', '.join(self._acts)}])"

    def tree_flatten(self) -> tuple[tuple[jax.Array, ...], tuple]:
        """(the activations, (their names, n_layers, model_hooks)): the pytree protocol."""
        return tuple(self._acts.values()), (tuple(self._acts), self.n_layers, self.model_hooks)

    @classmethod
    def tree_unflatten(cls, aux: tuple, leaves: tuple[jax.Array, ...]) -> ActivationCache:
        """The cache of `tree_flatten`'s output."""
        names, n_layers, model_hooks = aux
        return cls(dict(zip(names, leaves)), n_layers, model_hooks)

    def stack(self, kind: str) -> jax.Array:
        """blocks.{i}.{kind} of every block stacked on a new leading axis: [L, ...] (`kind` e.g.
        `hook_resid_post`, `attn.hook_pattern`)."""
        return jnp.stack([self[f"blocks.{i}.{kind}"] for i in range(self.n_layers)])

    def _layer(self, layer: int | None) -> int:
        layer = self.n_layers if layer is None or layer == -1 else layer
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in 0 .. {self.n_layers} (or None: all), got {layer}")
        return layer

    def accumulated_resid(
        self, layer: int | None = None, incl_mid: bool = False, return_labels: bool = False
    ) -> jax.Array | tuple[jax.Array, list[str]]:
        """[n, B, T, D]: blocks.{l}.hook_resid_pre for l = 0 .. layer (and blocks.{l}.hook_resid_mid after
        each l < layer with `incl_mid`), where l = L stands for the final blocks.{L-1}.hook_resid_post;
        `layer` None (or -1): L, every point. Labels as TransformerLens's: `0_pre`, `0_mid`, `final_post`."""
        layer = self._layer(layer)
        names, labels = [], []
        for l in range(layer + 1):
            if l == self.n_layers:
                names.append(f"blocks.{l - 1}.hook_resid_post")
                labels.append("final_post")
                continue
            names.append(f"blocks.{l}.hook_resid_pre")
            labels.append(f"{l}_pre")
            if incl_mid and l < layer:
                names.append(f"blocks.{l}.hook_resid_mid")
                labels.append(f"{l}_mid")
        out = jnp.stack([self[n] for n in names])
        return (out, labels) if return_labels else out

    def decompose_resid(
        self, layer: int | None = None, mlp_input: bool = False, return_labels: bool = False
    ) -> jax.Array | tuple[jax.Array, list[str]]:
        """[n, B, T, D]: the additive components of the stream entering block `layer` (None or -1: the
        final resid_post): hook_embed, hook_pos_embed (when the model has one), then
        blocks.{l}.hook_attn_out and blocks.{l}.hook_mlp_out (when it has MLPs) for l < layer, plus
        blocks.{layer}.hook_attn_out with `mlp_input` (the stream entering that block's MLP). Their sum
        is the stream (an intervention at another point breaks the identity). Labels `embed`,
        `pos_embed`, `0_attn_out`, `0_mlp_out`, ..."""
        layer = self._layer(layer)
        names, labels = ["hook_embed"], ["embed"]
        if "hook_pos_embed" in self.model_hooks:
            names.append("hook_pos_embed")
            labels.append("pos_embed")
        for l in range(layer):
            names.append(f"blocks.{l}.hook_attn_out")
            labels.append(f"{l}_attn_out")
            if f"blocks.{l}.hook_mlp_out" in self.model_hooks:
                names.append(f"blocks.{l}.hook_mlp_out")
                labels.append(f"{l}_mlp_out")
        if mlp_input:
            if layer == self.n_layers:
                raise ValueError("decompose_resid: mlp_input needs a block (layer < n_layers)")
            names.append(f"blocks.{layer}.hook_attn_out")
            labels.append(f"{layer}_attn_out")
        out = jnp.stack([self[n] for n in names])
        return (out, labels) if return_labels else out


__all__ = ["ActivationCache"]

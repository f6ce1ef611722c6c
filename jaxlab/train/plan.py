"""The execution plan: how one config's programs run on a target backend, decided once and recorded.

Everything jaxlab tunes to the hardware is decided here, from the config and the target backend
(default `jax.default_backend()`, read here and nowhere else in the model or the engine), into a
frozen `ExecutionPlan` that the engine (`make_train(cfg, plan=...)`) and the model
(`Transformer(cfg, plan.attention())`) receive as data. None of it changes what a run computes,
only how XLA executes it: every plan gives a run the same numbers up to float summation order.
A plan made for another backend (`make_plan(cfg, backend="tpu")`) gives the programs that backend
would run, e.g. for `jax.export` on a CPU-only machine.

Rules (`train.run_layout`, `train.run_block`, `train.micro_batch` and `train.attention_kernel`
force their field; 0 / `auto` leave it to the rule; `make_plan(attention_kernel=...)` also forces
the kernel), with the measured reasons (2-core CPU, benchmarks/results/train.md):

  run_layout      `scan` on CPUs, `vmap` elsewhere (`jaxlab.train.runmap`). XLA:CPU's batched tiny
                  matmuls over (run, sequence) batch dimensions and the transposes around them cost
                  more than sequential per-run GEMMs: the paper LSA step of 64 runs is ~1.3x faster
                  per CPU-second and ~2x in wall time as `scan`. GPUs and TPUs need the large
                  batched kernels of `vmap`.
  micro_batch     on CPUs `auto_micro_batch` (`jaxlab.train.microbatch`): the largest divisor of
                  the batch whose forward activations fit in 2 MB (one core's L2), but at least 512
                  tokens; a step makes dozens of passes over its activations, at cache speed
                  instead of memory speed (softmax-regression: 1.45x). Elsewhere the whole batch.
  run_block       `auto_block`: as many runs (at most 8) as keep a block's activations (micro-batch
                  x sequence bytes) within the same 2 MB; the paper LSA step (2 MB per run) is ~15%
                  faster in blocks of 1 than of 8, tiny models share per-kernel costs. Used by the
                  `scan` layout only.
  vector_floats   16 on CPUs (`VECTOR_FLOATS`, the float32 lanes of one AVX-512 register), else 0:
                  the query-side attention path pads token widths between 8 and 16 to 16, since its
                  batched matrix-vector products run on whole vector registers (the paper's 11-wide
                  tokens: ~10% faster step; 32 for 11 costs 1.5x).
  attention_path  `query_side` when the training loss reads a few positions (the task's
                  `loss_positions`) and moving the key and value weights to those queries costs
                  fewer FLOPs (`jaxlab.models.attention.keys_first_cheaper`), else `keys_first`;
                  positional attention always goes keys first. The same rule on every backend.
  attention_kernel  softmax attention's kernel on the keys-first path: `fused`
                  (`jax.nn.dot_product_attention`, `jaxlab.models.fused_attention`) on GPUs and TPUs,
                  whose compilers fuse it into their attention kernels; `jaxlab` (the custom-vjp
                  `softmax_attention`) on CPUs, where it is measured (benchmarks/results/
                  fused_attention.md) and what CPU runs used before the field existed. Either runs
                  only while no attention hook point is recorded or intervened on.
  scan_layers     off unless `train.scan_layers` asks: the blocks as one `lax.scan` over parameters
                  that the training state holds stacked ([L, ...] per weight, `Train.stacked`)
                  compile once: on the 2-core CPU the clustering sweep program compiles in the
                  same CPU time at 24 blocks as at 6 (6.5-6.8 s, against 10-11 s unrolled at 6),
                  but its step is ~12% slower (benchmarks/results/compile-depth.md).
  dtype           `model.dtype`, recorded: the matmul inputs of attention and MLP, `float32` or
                  `bfloat16`. bfloat16 forward products accumulate in float32 and return float32
                  (`preferred_element_type`, `jaxlab.models.attention.dot`; the fused kernel's
                  q . k by BF16_BF16_F32, its pattern times v returns bfloat16); their gradients
                  multiply the float32 cotangent by a bfloat16 operand (JAX's transpose), which
                  XLA computes in float32. Read-in and unembedding stay float32. An option of the
                  config on every backend, never chosen by a rule (it changes the numbers: tests/
                  test_fast_paths.py and tests/test_fused_attention.py bound the change of the loss).
  n_devices       the devices the runs are spread over (recorded: with `scan`, a run's float sums
                  depend on the runs per device).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax

from jaxlab.config import RUN_LAYOUTS, ExperimentConfig, require_config
from jaxlab.errors import ConfigError
from jaxlab.models.attention import ATTENTION_KERNELS, AttentionExecution, keys_first_cheaper
from jaxlab.tasks import task_module, task_spec
from jaxlab.train.microbatch import WORK_BYTES, auto_micro_batch, sequence_bytes

__all__ = [
    "ATTENTION_KERNELS",
    "ATTENTION_PATHS",
    "BACKENDS",
    "MAX_BLOCK",
    "VECTOR_FLOATS",
    "ExecutionPlan",
    "auto_block",
    "default_backend",
    "make_plan",
    "recorded_plan",
    "resolve_kernel",
    "resolve_layout",
]

VECTOR_FLOATS = 16  # float32 lanes of one AVX-512 register
MAX_BLOCK = 8
ATTENTION_PATHS = ("keys_first", "query_side")
BACKENDS = ("cpu", "gpu", "cuda", "rocm", "tpu")  # what `backend=` may name (jax platform names)


def default_backend() -> str:
    """The backend this process computes on (`jax.default_backend()`): the plan's default target."""
    return jax.default_backend()


def _target(backend: str | None) -> str:
    if backend is None:
        return default_backend()
    name = str(backend).lower()
    if name not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {backend!r}", BACKENDS)
    return name


def resolve_layout(layout: str = "auto", backend: str | None = None) -> str:
    """`vmap` or `scan` for a requested run layout on `backend` (`auto`: scan on CPUs; module docstring)."""
    if layout not in RUN_LAYOUTS:
        raise ConfigError("train.run_layout", f"unknown run layout {layout!r}", RUN_LAYOUTS)
    if layout != "auto":
        return layout
    return "scan" if _target(backend) == "cpu" else "vmap"


def resolve_kernel(kernel: str = "auto", backend: str | None = None, softmax: bool = True) -> str:
    """Softmax attention's kernel on `backend`: `kernel` when it names one of `ATTENTION_KERNELS`,
    else (`auto`) `jaxlab` on CPUs and `fused` elsewhere (module docstring). A model without
    softmax attention (`softmax=False`: linear, positional) reads no kernel: `auto` records
    `jaxlab`, what every plan recorded before the field existed, so its older runs resume anywhere."""
    if kernel not in ("auto", *ATTENTION_KERNELS):
        raise ConfigError("attention_kernel", f"unknown attention kernel {kernel!r}", ("auto", *ATTENTION_KERNELS))
    if kernel != "auto":
        return kernel
    return "fused" if softmax and _target(backend) != "cpu" else "jaxlab"


def auto_block(unit_bytes: int, budget: int = WORK_BYTES) -> int:
    """Runs per scanned block: as many (<= 8) as keep the block's activations within `budget`,
    given `unit_bytes` of activations per run and gradient micro-batch (`jaxlab.train.microbatch`).

    Measured on the 2-core CPU with one device per core (benchmarks/results/train.md): the paper
    LSA step (2 MB per run) is ~15% faster in blocks of 1 than of 8; a run whose micro-batch
    already fills the budget gets 1.
    """
    return int(max(1, min(MAX_BLOCK, budget // max(unit_bytes, 1))))


@dataclass(frozen=True)
class ExecutionPlan:
    """How the programs of one config execute (module docstring); `make_plan` decides it.

    backend: the platform the plan was made for (`cpu`, `gpu`/`cuda`/`rocm`, `tpu`).
    n_devices: devices the runs are spread over. run_layout: `vmap` | `scan`. run_block: runs
    vmapped per step of the `scan` layout. micro_batch: sequences per gradient micro-batch (a
    divisor of batch_size). vector_floats: token padding of the query-side attention (0: none).
    attention_path: `keys_first` | `query_side` (the training loss's last attention layer).
    dtype: the matmul input dtype (bfloat16: float32 accumulation). attention_kernel: `jaxlab` |
    `fused` (softmax attention). scan_layers: the blocks run as one `lax.scan`
    (`jaxlab.models.layer_scan`). forced: the fields a setting fixed. `attention_kernel` and
    `scan_layers` have defaults, what every plan did before the field was recorded (`recorded_plan`).
    """

    backend: str
    n_devices: int
    run_layout: str
    run_block: int
    micro_batch: int
    batch_size: int
    vector_floats: int
    attention_path: str
    dtype: str
    attention_kernel: str = "jaxlab"
    scan_layers: bool = False
    forced: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.run_layout not in ("vmap", "scan"):
            raise ConfigError("plan.run_layout", f"unknown run layout {self.run_layout!r}", ("vmap", "scan"))
        if self.attention_path not in ATTENTION_PATHS:
            raise ConfigError("plan.attention_path", f"unknown path {self.attention_path!r}", ATTENTION_PATHS)
        for name in ("n_devices", "run_block", "micro_batch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"plan.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batch:
            raise ConfigError("plan.micro_batch", f"{self.micro_batch} does not divide batch_size {self.batch_size}")
        if self.vector_floats < 0:
            raise ConfigError("plan.vector_floats", f"must be >= 0, got {self.vector_floats}")
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ConfigError("plan.attention_kernel", f"unknown kernel {self.attention_kernel!r}", ATTENTION_KERNELS)

    def attention(self) -> AttentionExecution:
        """The model's share of the plan (`Transformer(cfg, plan.attention())`)."""
        return AttentionExecution(
            query_path=self.attention_path, vector_floats=self.vector_floats, kernel=self.attention_kernel
        )

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (config.json / summary.json)."""
        out = dataclasses.asdict(self)
        out["forced"] = list(self.forced)
        return out


def recorded_plan(data: dict[str, Any]) -> dict[str, Any]:
    """A plan recorded by any jaxlab version (layout.json, summary.json) as this one records it:
    fields added since take the value the older version used (`attention_kernel`: `jaxlab`,
    `scan_layers`: false), so a comparison with a new plan sees only real changes. ConfigError for a
    field this jaxlab lacks."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(ExecutionPlan)})
    if unknown:
        raise ConfigError("plan", f"unknown recorded plan fields {unknown}")
    return ExecutionPlan(**{**data, "forced": tuple(data.get("forced", ()))}).as_dict()


def _n_devices(target: str) -> int:
    """All devices of this process's backend when it is the target, else 1 (a plan for export)."""
    family = lambda b: "gpu" if b in ("gpu", "cuda", "rocm") else b
    return jax.device_count() if family(target) == family(default_backend()) else 1


def make_plan(
    cfg: ExperimentConfig, backend: str | None = None, n_devices: int | None = None, attention_kernel: str = "auto"
) -> ExecutionPlan:
    """The execution plan of `cfg` on `backend` (default: this process's, `jax.default_backend()`).

    Decided once, by the rules of the module docstring; `train.run_layout`, `train.run_block` and
    `train.micro_batch` force their fields when set, `attention_kernel` (`jaxlab` | `fused`; `auto`:
    `train.attention_kernel`, whose `auto` is the rule) the kernel. `n_devices` (recorded) defaults
    to every device of the target backend when it is this process's, else 1.
    """
    require_config(cfg, "make_plan(cfg)")
    cfg = cfg.resolve()
    target = _target(backend)
    on_cpu = target == "cpu"
    t, m = cfg.train, cfg.model
    spec = task_spec(cfg.task)
    seq = sequence_bytes(spec.seq_len, int(m.d_model), m.d_mlp, m.n_heads, m.n_layers)
    if t.micro_batch:
        micro = t.micro_batch
    elif on_cpu:
        micro = auto_micro_batch(t.batch_size, spec.seq_len, seq)
    else:
        micro = t.batch_size
    positions_fn = getattr(task_module(cfg.task), "loss_positions", None)
    positions = None if positions_fn is None else positions_fn(cfg.task)
    query_side = (
        positions is not None
        and m.attention != "positional"
        and not keys_first_cheaper(len(positions), spec.seq_len, int(m.d_model), m.n_heads, m.head_dim)
    )
    kernel = attention_kernel if attention_kernel != "auto" else t.attention_kernel
    settings = {
        "run_layout": t.run_layout != "auto",
        "run_block": t.run_block,
        "micro_batch": t.micro_batch,
        "scan_layers": t.scan_layers,
    }
    forced = tuple(name for name, value in settings.items() if value)
    forced += ("attention_kernel",) if kernel != "auto" else ()
    if n_devices is not None and n_devices < 1:
        raise ConfigError("n_devices", f"must be >= 1, got {n_devices}")
    return ExecutionPlan(
        backend=target,
        n_devices=_n_devices(target) if n_devices is None else n_devices,
        run_layout=resolve_layout(t.run_layout, target),
        run_block=t.run_block or auto_block(micro * seq),
        micro_batch=micro,
        batch_size=t.batch_size,
        vector_floats=VECTOR_FLOATS if on_cpu else 0,
        attention_path="query_side" if query_side else "keys_first",
        dtype=m.dtype,
        attention_kernel=resolve_kernel(kernel, target, softmax=m.attention == "softmax"),
        scan_layers=bool(t.scan_layers),
        forced=forced,
    )

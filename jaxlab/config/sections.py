"""The sections of an experiment's configuration: `model`, `optim`, `train`, and the bases of the
`task` and `probe` sections (each task and experiment subclasses them), with their allowed values.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jaxlab.config.base import Inert, Section, inert
from jaxlab.config.checks import INT32_MAX, MAX_EVALS, _choice, _int_range, _positive, divisors
from jaxlab.errors import ConfigError

ATTENTIONS = ("linear", "softmax", "positional", "constrained", "constrained_gd")
ATTN_NORMS = ("none", "n_keys")
MASKS = ("causal", "context_keys", "none")
ACTIVATIONS = ("gelu", "relu", "solu")
INPUTS = ("continuous", "discrete")
READ_INS = ("identity", "linear")
READOUTS = ("linear", "y_block", "neg_y_block")
POS_ENCODINGS = ("none", "learned", "sinusoidal")
NORM_POSITIONS = ("pre", "attn_out")  # jaxlab.models.block
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant", "linear_decay")
EVAL_SCHEDULES = ("linear", "log")
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
RUN_LAYOUTS = ("auto", "vmap", "scan")  # jaxlab.train.runmap
ATTENTION_KERNEL_CHOICES = ("auto", "jaxlab", "fused")  # jaxlab.train.plan, jaxlab.models.attention
EXECUTION_ONLY = "sets how the sweep runs, not what a run computes"  # the start of such SWEEP_WIDE reasons
_EXECUTION = EXECUTION_ONLY


@dataclass(frozen=True)
class ModelConfig(Section):
    """One transformer family member (see `jaxlab.models.Transformer`).

    Fields left `None` are filled from the task (`d_input`, `d_output`, `vocab_size`, `max_len`) or
    from the read-in (`d_model` = `d_input` when `read_in="identity"`) by `ExperimentConfig.resolve`.
    """

    section: ClassVar[str] = "model"
    n_layers: int = 1
    n_heads: int = 1
    d_model: int | None = None
    d_head: int | None = None
    attention: str = "softmax"
    attn_norm: str = "none"
    mask: str = "causal"
    tie_layers: bool = False
    d_mlp: int = 0
    activation: str = "gelu"
    layernorm: bool = True
    norm_position: str = "pre"
    use_bias: bool = True
    input: str = "continuous"
    d_input: int | None = None
    vocab_size: int | None = None
    read_in: str = "linear"
    readout: str = "linear"
    d_output: int | None = None
    pos_encoding: str = "none"
    max_len: int | None = None
    init_scale: float = 1.0
    dtype: str = "float32"

    # read by jaxlab.models: the MLP's activation, linear/positional attention's normalization,
    # the shared block, the embedding or read-in, the learned positions (sinusoidal ones do not
    # depend on the table's length)
    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "n_layers": "transformer blocks (attention, then an MLP when d_mlp > 0)",
        "n_heads": "attention heads per block",
        "d_model": "width of the residual stream (None: d_input, with read_in='identity' only)",
        "d_head": "width of each attention head (None: d_model // n_heads)",
        "attention": "linear (no softmax), softmax, positional (scores gated by a softmax over positions), "
        "constrained (Sander et al. 2024 Sec. 4: diagonal heads, C = B^T A, a free signed P), or constrained_gd "
        "(Sec. 3: sum (s_t^T B s_{t'-1}) A^T s_t')",
        "attn_norm": "linear / positional attention: n_keys divides the scores by the number of keys the query sees",
        "mask": "keys a query sees: causal (t' <= t), context_keys (t' < T - 1, the context only), none (all)",
        "tie_layers": "every block uses the same parameters (a recurrent model)",
        "d_mlp": "hidden width of each block's MLP (0: no MLP, attention only)",
        "activation": "the MLP's activation (solu: x * softmax(x), then a LayerNorm)",
        "layernorm": "LayerNorm in every block (placed by norm_position) and, pre-norm only, a final one before "
        "the readout",
        "norm_position": "pre: x + Attn(LN(x)) and a final LN before the readout; attn_out: x + LN(Attn(x)) (and "
        "x + LN(MLP(x))), no final LN (Sander et al. 2024's augmented.py)",
        "use_bias": "biases in attention, MLP, read-in and readout",
        "input": "tokens are continuous vectors or discrete ids (read by an embedding)",
        "d_input": "width of continuous input tokens (None: from the task)",
        "vocab_size": "number of token ids of discrete inputs (None: from the task)",
        "read_in": "continuous tokens enter through a linear map to d_model, or as they are (identity)",
        "readout": "outputs: a linear map, the last d_output coordinates of the stream (y_block), or minus them",
        "d_output": "width of the outputs (None: from the task)",
        "pos_encoding": "position encoding added to the embedded tokens (learned: a trained table)",
        "max_len": "longest sequence, the length of the position tables (None: the task's sequence length)",
        "init_scale": "weight matrices (not biases or norms) start with variance init_scale / fan_in",
        "dtype": "dtype of the matmul inputs (products accumulate in float32)",
    }
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "attention": ATTENTIONS,
        "attn_norm": ATTN_NORMS,
        "mask": MASKS,
        "activation": ACTIVATIONS,
        "input": INPUTS,
        "read_in": READ_INS,
        "readout": READOUTS,
        "pos_encoding": POS_ENCODINGS,
        "norm_position": NORM_POSITIONS,
        "dtype": DTYPES,
    }

    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("activation", d_mlp=(0,)),
        inert("attn_norm", attention=("softmax",)),
        inert("tie_layers", n_layers=(1,)),
        inert("norm_position", layernorm=(False,)),
        inert("vocab_size", input=("continuous",)),
        inert("d_input", input=("discrete",)),
        inert("max_len", pos_encoding=("none", "sinusoidal"), attention=("linear", "softmax")),
    )

    def validate(self) -> None:
        n = self._name
        _positive(n("n_layers"), self.n_layers)
        _positive(n("n_heads"), self.n_heads)
        _choice(n("attention"), self.attention, ATTENTIONS)
        _choice(n("attn_norm"), self.attn_norm, ATTN_NORMS)
        _choice(n("mask"), self.mask, MASKS)
        _positive(n("d_mlp"), self.d_mlp, allow_zero=True)
        _choice(n("activation"), self.activation, ACTIVATIONS)
        _choice(n("input"), self.input, INPUTS)
        _choice(n("read_in"), self.read_in, READ_INS)
        _choice(n("readout"), self.readout, READOUTS)
        _choice(n("pos_encoding"), self.pos_encoding, POS_ENCODINGS)
        _choice(n("norm_position"), self.norm_position, NORM_POSITIONS)
        _choice(n("dtype"), self.dtype, DTYPES)
        _positive(n("init_scale"), self.init_scale)
        for name in ("d_model", "d_head", "d_input", "vocab_size", "d_output", "max_len"):
            value = getattr(self, name)
            if value is not None:
                _positive(n(name), value)
        if self.d_model is not None and self.d_head is None and self.d_model % self.n_heads:
            raise ConfigError(
                n("n_heads"),
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set model.d_head to choose the head width explicitly",
                divisors(self.d_model),
            )
        if self.input == "discrete" and self.read_in == "identity":
            raise ConfigError(n("read_in"), "discrete inputs need an embedding", ["linear"])
        if self.read_in == "identity" and None not in (self.d_model, self.d_input):
            if self.d_model != self.d_input:
                raise ConfigError(
                    n("d_model"),
                    f"read_in='identity' needs d_model == d_input ({self.d_input}), got {self.d_model}",
                )

    @property
    def final_norm(self) -> bool:
        """Whether a final LayerNorm precedes the readout: `layernorm` with `norm_position="pre"` (augmented.py's
        output-norm model has none)."""
        return self.layernorm and self.norm_position == "pre"

    @property
    def head_dim(self) -> int:
        """Width of each head: `d_head`, or d_model // n_heads when it is None (a resolved config only)."""
        assert self.d_model is not None, "resolve the config first"
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads


@dataclass(frozen=True)
class OptimConfig(Section):
    """optax optimizer. `lr`, `weight_decay`, `b1`, `b2` can vary across the runs of one program."""

    section: ClassVar[str] = "optim"
    name: str = "adamw"
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip_norm: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "name": "optimizer: adamw (decoupled weight decay), or adam / sgd (weight decay added to the gradient)",
        "lr": "peak learning rate (the schedule multiplies it)",
        "b1": "Adam's first-moment decay rate",
        "b2": "Adam's second-moment decay rate",
        "eps": "Adam's epsilon in the update's denominator",
        "weight_decay": "weight-decay coefficient (0: none)",
        "momentum": "SGD momentum (0: plain SGD)",
        "clip_norm": "clip the gradients to this global norm first (0: no clipping)",
        "schedule": "learning-rate shape over train.steps (warmup_*: a linear warmup of warmup_steps first)",
        "warmup_steps": "steps of the linear warmup of the warmup_* schedules",
    }
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {"name": OPTIMIZERS, "schedule": SCHEDULES}

    # read by jaxlab.train.optim: sgd has no Adam moments, Adam no momentum, and only the warmup
    # schedules warm up
    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("momentum", name=("adamw", "adam")),
        inert("b1", name=("sgd",)),
        inert("b2", name=("sgd",)),
        inert("eps", name=("sgd",)),
        inert("warmup_steps", schedule=("constant", "cosine", "linear_decay")),
    )

    def validate(self) -> None:
        n = self._name
        _choice(n("name"), self.name, OPTIMIZERS)
        _choice(n("schedule"), self.schedule, SCHEDULES)
        _positive(n("lr"), self.lr)
        _positive(n("eps"), self.eps)
        _positive(n("weight_decay"), self.weight_decay, allow_zero=True)
        _positive(n("clip_norm"), self.clip_norm, allow_zero=True)
        _positive(n("warmup_steps"), self.warmup_steps, allow_zero=True)
        for name in ("b1", "b2", "momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(n(name), f"must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """The step loop. Evaluation points are chunk boundaries: the host sees nothing in between."""

    section: ClassVar[str] = "train"
    steps: int = 1000
    batch_size: int = 256
    eval_every: int = 100
    eval_schedule: str = "linear"
    n_evals: int = 20
    eval_batch_size: int = 1024
    eval_seed: int = 1_000_003
    # checkpoints (jaxlab.train.checkpoint.SaveSchedule): after every `checkpoint_every` evaluation
    # intervals (0: none by count), after the first interval that ends `checkpoint_minutes` or more
    # after the run chunk started or last saved (0: none by time; a killed run loses at most about
    # that much work), and always at the end of a chunk and on SIGINT / SIGTERM
    checkpoint_every: int = 0
    checkpoint_minutes: float = 1.0
    keep_checkpoints: int = 2  # 0: keep every checkpoint (e.g. a log-spaced series)
    prng_impl: str = "threefry2x32"
    max_runs_per_chunk: int = 0
    run_layout: str = "auto"  # how a program holds its runs: vmap | scan | auto (jaxlab.train.runmap)
    run_block: int = 0  # runs vmapped together in each step of the scan layout; 0: automatic
    micro_batch: int = 0  # sequences per gradient micro-batch (a divisor of batch_size); 0: automatic
    attention_kernel: str = "auto"  # softmax attention's kernel: jaxlab | fused | auto (jaxlab.train.plan)
    scan_layers: bool = False  # blocks of one structure as one lax.scan (jaxlab.models.layer_scan)
    # diverged: a step's loss is not finite or above diverge_above x max(the loss of step 0, 1e-3)
    # (jaxlab.train.engine); 0: non-finite only. 0 or a factor > 1.
    diverge_above: float = 1e6
    stall_timeout: float = 15.0  # minutes of silence (beyond the slowest interval) with no CPU use: the watchdog stops

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "steps": "training steps of every run",
        "batch_size": "training sequences per step, fresh from the task every step",
        "eval_every": "steps between evaluations (eval_schedule='linear')",
        "eval_schedule": "evaluate every eval_every steps (linear) or at n_evals log-spaced steps (log)",
        "n_evals": "log-spaced evaluation points in [1, steps] (eval_schedule='log')",
        "eval_batch_size": "sequences of the fixed evaluation set, the same for every run",
        "eval_seed": "seed of the evaluation set's PRNG key",
        "checkpoint_every": "save a checkpoint after every this many evaluation intervals (0: not by count)",
        "checkpoint_minutes": "also save after an interval ending this long (minutes) after the last save (0: off)",
        "keep_checkpoints": "how many of the newest checkpoints are kept (0: every one)",
        "prng_impl": "JAX PRNG implementation of the runs' keys",
        "max_runs_per_chunk": "runs trained at once, rounded down to a multiple of the devices (0: all that fit)",
        "run_layout": "how a program holds its runs: vmap, scan (blocks one after another), auto (scan on CPUs)",
        "run_block": "runs vmapped together in each step of the scan layout (0: automatic)",
        "micro_batch": "sequences per gradient micro-batch, a divisor of batch_size (0: automatic)",
        "attention_kernel": "softmax attention's kernel: jaxlab (custom-vjp), fused (jax.nn.dot_product_attention), "
        "auto (jaxlab on CPUs, fused on GPUs/TPUs)",
        "scan_layers": "run the blocks as one lax.scan, compiled once (faster compilation of deep models, "
        "slower steps on CPUs: benchmarks/results/compile-depth.md)",
        "diverge_above": "a run diverges at a loss above this factor x max(step-0 loss, 1e-3) (0: non-finite only)",
        "stall_timeout": "minutes without progress (beyond the slowest interval) before the watchdog stops a process "
        "that computes nothing (0: off)",
    }
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "eval_schedule": EVAL_SCHEDULES,
        "prng_impl": PRNG_IMPLS,
        "run_layout": RUN_LAYOUTS,
        "attention_kernel": ATTENTION_KERNEL_CHOICES,
    }

    # evaluation points come from one schedule's fields only (`eval_steps`)
    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("eval_every", eval_schedule=("log",)),
        inert("n_evals", eval_schedule=("linear",)),
    )
    SWEEP_WIDE: ClassVar[dict[str, str]] = {
        "checkpoint_every": _EXECUTION,
        "checkpoint_minutes": _EXECUTION,
        "keep_checkpoints": _EXECUTION,
        "max_runs_per_chunk": _EXECUTION,
        "run_layout": _EXECUTION + " (the same numbers up to float summation order)",
        "run_block": _EXECUTION + " (the same numbers up to float summation order)",
        "micro_batch": _EXECUTION + " (the same numbers up to float summation order)",
        "attention_kernel": _EXECUTION + " (the same numbers up to float rounding)",
        "scan_layers": _EXECUTION + " (the same numbers up to float summation order)",
        "stall_timeout": _EXECUTION,
    }

    def validate(self) -> None:
        n = self._name
        _positive(n("steps"), self.steps)
        _positive(n("batch_size"), self.batch_size)
        _positive(n("eval_every"), self.eval_every)
        _choice(n("eval_schedule"), self.eval_schedule, EVAL_SCHEDULES)
        _positive(n("n_evals"), self.n_evals)
        if self.eval_schedule == "log":  # its grid is listed point by point (`eval_steps`): bounded whatever the steps
            _int_range(n("n_evals"), self.n_evals, 1, MAX_EVALS, f"at most {MAX_EVALS} evaluations")
        _positive(n("eval_batch_size"), self.eval_batch_size)
        _positive(n("checkpoint_every"), self.checkpoint_every, allow_zero=True)
        _positive(n("checkpoint_minutes"), self.checkpoint_minutes, allow_zero=True)
        _positive(n("keep_checkpoints"), self.keep_checkpoints, allow_zero=True)
        _choice(n("prng_impl"), self.prng_impl, PRNG_IMPLS)
        _positive(n("max_runs_per_chunk"), self.max_runs_per_chunk, allow_zero=True)
        _choice(n("run_layout"), self.run_layout, RUN_LAYOUTS)
        _positive(n("run_block"), self.run_block, allow_zero=True)
        _positive(n("micro_batch"), self.micro_batch, allow_zero=True)
        _choice(n("attention_kernel"), self.attention_kernel, ATTENTION_KERNEL_CHOICES)
        _positive(n("diverge_above"), self.diverge_above, allow_zero=True)
        if 0 < self.diverge_above <= 1:
            raise ConfigError(
                n("diverge_above"),
                f"{self.diverge_above!r} would count step 0 itself as diverged",
                "0 (non-finite losses only) or a factor > 1",
            )
        _int_range(n("eval_seed"), self.eval_seed, 0, INT32_MAX, "it seeds the evaluation PRNG key")
        _int_range(n("steps"), self.steps, 1, INT32_MAX, "the step counter is an int32 on the device")
        _positive(n("stall_timeout"), self.stall_timeout, allow_zero=True)
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ConfigError(
                n("micro_batch"),
                f"{self.micro_batch} does not divide batch_size {self.batch_size}",
                [0, *divisors(self.batch_size)],
            )
        if self.n_eval_points() > MAX_EVALS:
            fields = (n("steps"), n("eval_every")) if self.eval_schedule == "linear" else (n("n_evals"),)
            raise ConfigError(
                " and ".join(fields),
                f"{self.n_eval_points()} evaluations (steps={self.steps}, "
                + (f"eval_every={self.eval_every}" if self.eval_schedule == "linear" else f"n_evals={self.n_evals}")
                + f"); at most {MAX_EVALS}: each is a host round trip and a row of every run's "
                "on-device metric history; evaluate less often (a larger train.eval_every, or "
                "train.eval_schedule=log with train.n_evals)",
            )

    def n_eval_points(self) -> int:
        """How many evaluation points `eval_steps` has (an upper bound for `log`), without listing them.

        `linear`: ceil(steps / eval_every) + 1 (steps 0, e, 2e, ... below `steps`, and `steps`).
        `log`: at most min(n_evals, steps) + 1 (distinct integer steps in [0, steps]).
        """
        if self.eval_schedule == "linear":
            return len(range(0, self.steps, self.eval_every)) + 1
        return min(self.n_evals, self.steps) + 1

    def eval_steps(self) -> tuple[int, ...]:
        """Steps at which runs are evaluated (always including 0 and `steps`).

        `linear`: every `eval_every` steps. `log`: `n_evals` points log-spaced in [1, steps].
        At most `MAX_EVALS` points (`validate`).
        """
        if self.eval_schedule == "linear":
            return (*range(0, self.steps, self.eval_every), self.steps)
        grid = [round(10**e) for e in _linspace(0.0, math.log10(self.steps), self.n_evals)]
        points = {0, self.steps, *grid}
        return tuple(sorted(p for p in points if 0 <= p <= self.steps))


def _linspace(a: float, b: float, n: int) -> list[float]:
    if n == 1:
        return [b]
    return [a + (b - a) * i / (n - 1) for i in range(n)]


# the fields every task has (`TaskSection`): merged into each task's own tables (`__init_subclass__`)
_TASK_FIELD_DOCS: dict[str, str] = {
    "shared_stream": "generate each step's training batches once per data seed (the run's seed) and feed them "
    "to every run of that seed in the program (jaxlab.train.streams); the same batches either way",
}
_TASK_SWEEP_WIDE: dict[str, str] = {
    "shared_stream": _EXECUTION + " (runs of one seed see the same batches either way; only where they are generated "
    "changes)",
}


@dataclass(frozen=True)
class TaskSection(Section):
    """The base of every task's `Config` (the task protocol, `jaxlab.tasks`): a class attribute `kind`
    naming the task, and the module that defines the subclass defines `spec(cfg) -> TaskSpec` and
    `sample(key, cfg, batch_size) -> Batch`. A task is found from its config alone, so a task
    defined in a user's file works like jaxlab's own.

    Every task has the keyword-only field `shared_stream` (default False). The *data seed* of a run
    is its seed (`sweep.seeds`): the run's key is `key(seed)`, `Train.init` splits it into an init
    key and a data key, and the batch of step t is `sample(fold_in(data_key, t))`. So every run of
    one seed (any learning rate, weight decay, betas or init scale) sees the same training batches
    whatever this field says (common random numbers: comparisons between those hyperparameters are
    paired). With `shared_stream` true each step's batches are generated once per distinct data
    seed among a device's runs, outside the per-run step, and fed to every run of that seed
    (`jaxlab.train.streams`) instead of once per run. A task subclass's `FIELD_DOCS` and
    `SWEEP_WIDE` get this field's entries added (`__init_subclass__`).
    """

    section: ClassVar[str] = "task"
    kind: ClassVar[str] = ""
    FIELD_DOCS: ClassVar[dict[str, str]] = dict(_TASK_FIELD_DOCS)
    SWEEP_WIDE: ClassVar[dict[str, str]] = dict(_TASK_SWEEP_WIDE)
    shared_stream: bool = field(default=False, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Add the base's field entries to a subclass's own `FIELD_DOCS` and `SWEEP_WIDE` tables."""
        super().__init_subclass__(**kwargs)
        cls.FIELD_DOCS = {**cls.FIELD_DOCS, **_TASK_FIELD_DOCS}
        cls.SWEEP_WIDE = {**cls.SWEEP_WIDE, **_TASK_SWEEP_WIDE}

    def module(self) -> types.ModuleType:
        """The module that defines this task (its `spec` and `sample`)."""
        return sys.modules[type(self).__module__]

    def spec(self) -> Any:
        """The task's `TaskSpec`: sequence length, token width or vocabulary, output width, loss."""
        return self.module().spec(self)


@dataclass(frozen=True)
class ProbeConfig(Section):
    """Experiment-specific evaluation settings. Experiments subclass it with their own fields.

    Besides `INERT` and `SWEEP_WIDE` for its own fields, a subclass declares in `UNREAD_KEYS` the
    keys of other sections its experiment never reads (`section.field` -> why).
    """

    section: ClassVar[str] = "probe"
    UNREAD_KEYS: ClassVar[dict[str, str]] = {}

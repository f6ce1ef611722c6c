"""The timed parts of `jaxlab bench train` (`jaxlab.bench.train` describes what each measures): the
sweep, datagen and baseline programs of one workload (`TrainBench`), the matmul peak
(`matmul_peaks`), and the wall and CPU time of a block (`Stopwatch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.bench._reference import ReferenceLoop
from jaxlab.errors import ConfigError
from jaxlab.train.engine import Train, seed_keys
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.programs import Programs, key_data
from jaxlab.train.runmap import over_runs
from jaxlab.train.sharding import Placement


class Stopwatch:
    """Wall time and this process's CPU time (all threads) of a block: `with Stopwatch() as t:`."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    @property
    def both(self) -> tuple[float, float]:
        return self.wall, self.cpu


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    with Stopwatch() as t:
        jax.block_until_ready(fn())
    return t.both


def matmul_peaks(n: int, repeats: int = 3) -> dict[str, float]:
    """FLOP/s of jitted n x n matmuls, best of `repeats`: float32 (HIGHEST precision), and on a
    GPU also the default precision (TF32 on NVIDIA Ampere and later), and bfloat16 inputs; the
    `*_cpu` entries are FLOP per second of this process's CPU time. With several devices, the
    machine's peak is the better of one matmul on the first device and one matmul on every device
    at once (`*_one_device`, `*_all_devices`): CPU devices share the host's cores."""
    p = Placement.default()
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    layouts = {"one_device": (a, b, 1)}
    if p.n_devices > 1:
        stack = lambda x: jax.device_put(jnp.broadcast_to(x, (p.n_devices, n, n)), p.runs)
        layouts["all_devices"] = (stack(a), stack(b), p.n_devices)
    kinds = {"float32": (jnp.float32, jax.lax.Precision.HIGHEST)}
    if jax.default_backend() == "gpu":
        kinds["tf32"] = (jnp.float32, jax.lax.Precision.DEFAULT)
    kinds["bfloat16"] = (jnp.bfloat16, jax.lax.Precision.DEFAULT)
    peaks: dict[str, float] = {}
    for name, (dtype, precision) in kinds.items():
        for layout, (x, y, copies) in layouts.items():
            fn = jax.jit(
                lambda x, y, d=dtype, p=precision: jnp.matmul(
                    x.astype(d), y.astype(d), precision=p, preferred_element_type=jnp.float32
                )
            )
            jax.block_until_ready(fn(x, y))
            times = [_timed(lambda: fn(x, y)) for _ in range(repeats)]
            peaks[f"{name}_{layout}"] = copies * 2.0 * n**3 / min(w for w, _ in times)
            peaks[f"{name}_{layout}_cpu"] = copies * 2.0 * n**3 / min(c for _, c in times)
        for suffix in ("", "_cpu"):
            peaks[f"{name}{suffix}"] = max(peaks[f"{name}_{layout}{suffix}"] for layout in layouts)
    return peaks


class TrainBench:
    """The timed programs of one workload: the sweep (`jaxlab run`'s own programs), datagen, and
    the baselines.

    The sweep is `jaxlab.train.programs.Programs` built on `make_train(cfg)`, the programs
    `jaxlab run` compiles: `start` once per chunk, then `interval` timed, `steps` optimizer steps
    and one evaluation per call. The config's evaluation batch is one sequence
    (`train.eval_batch_size=1`), so an interval is its training steps (the benchmark measures
    training); the evaluation is the engine's own (`eval_loss`), not an experiment's metrics.
    R runs train in chunks of C runs (C = R unless `runs_per_chunk` is smaller, as `jaxlab run`
    does when all runs do not fit in memory, `train.max_runs_per_chunk`): one program compiled
    for C runs, called on each chunk in turn. The execution plan (run layout, run block,
    micro-batch) is `train.plan`, decided once by `make_train`. `seeds` [R]: the runs' seeds
    (default 0..R-1); with `task.shared_stream` the runs of one seed share its data stream.
    """

    def __init__(
        self,
        train: Train,
        runs: int,
        steps: int,
        runs_per_chunk: int | None = None,
        seeds: np.ndarray | None = None,
    ):
        self.train = train
        self.runs, self.steps = runs, steps
        self.chunk = min(runs_per_chunk or runs, runs)
        if runs % self.chunk:
            raise ConfigError("--runs-per-chunk", f"must divide --runs={runs}, got {self.chunk}")
        # the runs of a chunk are split over every device, as `jaxlab run` splits them
        p = self.placement = Placement.default()
        self.n_devices = p.n_devices
        if self.chunk % p.n_devices:
            field = "--runs-per-chunk" if self.chunk < runs else "--runs"
            raise ConfigError(field, f"must be a multiple of the {p.n_devices} devices, got {self.chunk}")
        cfg, C = train.cfg, self.chunk
        # the runs' seeds (default 0..R-1): runs of one seed share a data stream (`task.shared_stream`)
        seeds = np.arange(runs) if seeds is None else np.asarray(seeds)
        if seeds.shape != (runs,):
            raise ValueError(f"TrainBench: expected {runs} seeds, got shape {seeds.shape}")
        kd = key_data(seeds, cfg.train.prng_impl)
        hp = stack_hparams(cfg, [{}] * runs)
        hp_keys = list(hp)
        chunks = [slice(c * C, (c + 1) * C) for c in range(runs // C)]
        self.programs = Programs(train, p, kd.shape[1])
        self.hp = [p.put_tree({k: v[sl] for k, v in hp.items()}, p.runs) for sl in chunks]

        with Stopwatch() as t:
            start = self.programs.compile_start(C, hp_keys)
            started = [start(p.put(kd[sl], p.runs), h) for sl, h in zip(chunks, self.hp)]
            jax.block_until_ready(started)
        self.compile_init = t.both
        self.states = [state for state, _, _ in started]
        self.histories = [history for _, _, history in started]
        self.eval_data = started[0][1]  # the same for every chunk
        with Stopwatch() as t:
            self.interval = self.programs.compile_interval(C, hp_keys)
        self.compile = t.both
        self.n = p.put(np.int32(steps), p.replicated)
        self.row = p.put(np.int32(min(1, self.programs.n_evals - 1)), p.replicated)
        self.valid = p.put(np.ones(C, bool), p.runs)
        plan = train.plan
        with Stopwatch() as t:
            datagen = over_runs(_datagen(train), (0, None), plan.run_layout, p.mesh, plan.run_block)
            self.datagen_fn = jax.jit(datagen).lower(self.states[0], self.n).compile()
        self.compile_datagen = t.both

        self.hp1 = {k: jnp.asarray(v[0]) for k, v in hp.items()}
        self.reference = ReferenceLoop(train)
        self.init1 = jax.jit(train.init)
        self.step1 = jax.jit(train.step, donate_argnums=0)
        self.advance1 = jax.jit(train.advance, donate_argnums=0)
        keys = seed_keys(range(runs), cfg.train.prng_impl)
        self.key1 = lambda i: keys[i]

    def sweep(self) -> tuple[float, float]:
        """One `interval` call per chunk (`steps` steps of every run); (wall, CPU) seconds."""

        def call():
            out = []
            for c, hp in enumerate(self.hp):
                self.states[c], self.histories[c], scalars = self.interval(
                    self.states[c], self.histories[c], hp, self.eval_data, self.n, self.row, self.valid
                )
                out.append(scalars)
            return out

        return _timed(call)

    def datagen(self) -> tuple[float, float]:
        return _timed(lambda: [self.datagen_fn(st, self.n) for st in self.states])

    def loop(self, n_runs: int) -> tuple[float, float]:
        """Baseline (a): the published codes' style (`jaxlab.bench._reference`)."""
        return self.reference.run(list(range(n_runs)), self.steps, self.hp1)

    def jaxlab_loop(self, n_runs: int) -> tuple[float, float]:
        """Python loops over runs and steps around jaxlab's own jitted step."""
        states = [self.init1(self.key1(i), self.hp1) for i in range(n_runs)]
        jax.block_until_ready(states)
        with Stopwatch() as t:
            for st in states:
                for _ in range(self.steps):
                    st, loss = self.step1(st, self.hp1)
                jax.block_until_ready(st)
        return t.both

    def single_scan(self, n_runs: int) -> tuple[float, float]:
        """Baseline (b): the scanned `advance` of one run, called once per run."""
        states = [self.init1(self.key1(i), self.hp1) for i in range(n_runs)]
        jax.block_until_ready(states)
        with Stopwatch() as t:
            for st in states:
                st, loss = self.advance1(st, self.hp1, self.n)
                jax.block_until_ready(st)
        return t.both


def _datagen(train) -> Callable:
    """(state of one run, n) -> the sum of the batches of n steps: the sampler alone, same keys."""

    def run(state, n):
        def body(i, acc):
            batch = train.train_batch(state.replace(step=state.step + i))
            return acc + sum(jnp.sum(x) for x in jax.tree_util.tree_leaves((batch.inputs, batch.targets)))

        return jax.lax.fori_loop(0, n, body, jnp.float32(0.0))

    return run

"""Memory-bounded run chunks: split a group's runs into the largest equal chunks that fit.

A group of R runs is trained as K run chunks of C runs each (C a multiple of the device count;
the last chunk padded with copies of a real run), one after the other, all through the SAME
compiled programs. C is `train.max_runs_per_chunk` when set (rounded down to a multiple of the
device count), else chosen automatically:

1. compile the chunk's programs (evaluation interval and start-up) for all runs (padded to the
   device count) and read their per-device footprints, arguments + outputs - donated aliases +
   temporaries, from `compiled.memory_analysis()` (nothing is allocated to find out); the
   chunk's footprint M(C0) is the larger one (the two never run at the same time);
2. if M(C0) fits the per-device budget, that program is the one used: one chunk;
3. otherwise assume M(C) = fixed + C/D * per_run (fixed: the evaluation data, shared by all
   runs), take the largest C that fits, and balance the chunks (K = ceil(R / C), C = ceil(R / K)
   rounded up to the device count) so that the padding is as small as possible; the programs are
   compiled at that C (re-checked, shrunk while they still do not fit, down to one run per
   device) and used for every chunk;
4. if even one run per device does not fit (or a fixed `train.max_runs_per_chunk` chunk does
   not), the sweep is refused with the estimate and the budget (a `UserError`, exit status 2)
   instead of failing later on an allocation. Sizes that are absurd from the config's shapes
   alone are refused before anything is compiled (`jaxlab.train.bounds`).

The budget per device is 90% of the accelerator's free memory (`Device.memory_stats()`), or on
the CPU half of the host's available memory split over the local CPU devices. The environment
variable `JAXLAB_MEMORY_BUDGET` (bytes, or with a K/M/G suffix) overrides it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxlab.errors import UserError

BUDGET_ENV = "JAXLAB_MEMORY_BUDGET"


@dataclass(frozen=True)
class RunChunks:
    """n_runs runs split into n_chunks chunks of `size` runs (the last one padded)."""

    n_runs: int
    size: int

    @property
    def n_chunks(self) -> int:
        """K = ceil(n_runs / size) chunks (at least one)."""
        return max(1, math.ceil(self.n_runs / self.size))

    def positions(self, k: int) -> np.ndarray:
        """Indices (into the group's runs) of the `size` slots of chunk k; padding repeats the last run."""
        slots = k * self.size + np.arange(self.size)
        return np.minimum(slots, self.n_runs - 1)

    def n_real(self, k: int) -> int:
        """The real (not padding) runs of chunk k."""
        return int(min(self.size, self.n_runs - k * self.size))

    def real(self, k: int) -> np.ndarray:
        """[size] bool: which slots of chunk k hold a real run (not padding)."""
        return np.arange(self.size) < self.n_real(k)

    def to_dict(self) -> dict[str, int]:
        """The JSON form: n_runs, size and n_chunks."""
        return {"n_runs": self.n_runs, "size": self.size, "n_chunks": self.n_chunks}


MAX_BUDGET = 2**50  # 1024T per device: anything larger is a typo, not a machine


def parse_bytes(text: str) -> int:
    """Bytes from `JAXLAB_MEMORY_BUDGET`: a number, optionally with a K/M/G/T suffix (powers of
    1024; `B`/`iB` accepted), from 1 byte to 1024T. NaN, infinities and absurd sizes are refused."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    forms = "bytes such as 2000000000, 512M or 4G (a number with an optional K/M/G/T suffix, from 1 to 1024T)"
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1] if s and s[-1] in units else ""
    try:
        value = float(s[: len(s) - len(unit)]) * units[unit]
    except ValueError:
        raise UserError(f"{BUDGET_ENV}={text!r}: expected {forms}") from None
    if not (math.isfinite(value) and 1 <= value <= MAX_BUDGET):
        raise UserError(f"{BUDGET_ENV}={text!r}: out of range; expected {forms}")
    return int(value)


def _host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_budget() -> int:
    """Bytes one device may use for a program (see the module docstring)."""
    if os.environ.get(BUDGET_ENV):
        return parse_bytes(os.environ[BUDGET_ENV])
    devices = jax.local_devices()
    free = []
    for d in devices:
        stats = d.memory_stats() if d.platform != "cpu" else None
        if stats and "bytes_limit" in stats:
            free.append(int(0.9 * stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    if free:
        return max(1, min(free))
    return max(1, _host_available_bytes() // 2 // max(1, len(devices)))


def compiled_bytes(compiled: Any) -> int | None:
    """Per-device peak estimate of a compiled program, or None when the backend gives none."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if ma is None:
        return None
    total = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    return int(total) if total > 0 else None


def balanced(n_runs: int, max_size: int, n_devices: int) -> int:
    """The chunk size giving the fewest chunks of at most max_size runs, with the least padding."""
    max_size = max(n_devices, max_size // n_devices * n_devices)
    k = math.ceil(n_runs / max_size)
    return math.ceil(n_runs / (k * n_devices)) * n_devices


def choose(
    n_runs: int,
    n_devices: int,
    max_runs: int,
    compile_at: Callable[[int], Any],
    fixed_bytes: int = 0,
    budget: int | None = None,
    agree: Callable[[int], int] = lambda size: size,
    others: Callable[[int], Sequence[Any]] | None = None,
    drivers: str = "",
) -> tuple[RunChunks, Any, dict[str, Any]]:
    """The chunk layout and the compiled program for it (see the module docstring).

    `compile_at(size)` returns the compiled evaluation-interval program for `size` runs; the
    last one returned is the program to run. `others(size)` returns the other programs a chunk
    of `size` runs executes (the start-up program); a chunk's footprint is the largest of them
    all. `agree(size)` makes every process use the same size (the smallest; budgets may differ
    between hosts). Returns (chunks, compiled, info) where info records the estimate (for the
    summary and the benchmark).

    When even one run per device does not fit the budget, or a fixed `train.max_runs_per_chunk`
    does not, raises a `UserError` with the estimate and `drivers` (the config fields that make
    a run large, `jaxlab.train.bounds.drivers`).
    """
    measure = lambda size, compiled: _chunk_bytes(compiled, others(size) if others is not None else ())
    chunks, compiled, info = _choose(n_runs, n_devices, max_runs, compile_at, measure, fixed_bytes, budget, drivers)
    size = agree(chunks.size)
    if size != chunks.size:
        chunks, compiled = RunChunks(n_runs, size), compile_at(size)
    return chunks, compiled, info


def _chunk_bytes(compiled: Any, others: Sequence[Any]) -> int | None:
    """The largest per-device estimate among a chunk's programs (None when none gives one)."""
    sizes = [b for b in (compiled_bytes(c) for c in (compiled, *others)) if b is not None]
    return max(sizes) if sizes else None


def budget_source() -> str:
    """Where `memory_budget` comes from, for messages."""
    if os.environ.get(BUDGET_ENV):
        return f"{BUDGET_ENV}={os.environ[BUDGET_ENV]}"
    if any(d.platform != "cpu" for d in jax.local_devices()):
        return f"90% of the accelerator's free memory; set {BUDGET_ENV} to change it"
    n = len(jax.local_devices())
    return f"half the host's available memory over {n} CPU device(s); set {BUDGET_ENV} to change it"


def gigabytes(n: float) -> str:
    """Bytes for messages, in the largest decimal unit that keeps the number >= 1: `25.6 GB`."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def does_not_fit(need: int, budget: int, runs_per_device: int, drivers: str, remedy: str) -> UserError:
    """The refusal when a chunk's programs need more than the per-device budget."""
    runs = "one run per device needs" if runs_per_device == 1 else f"{runs_per_device} runs per device need"
    return UserError(
        f"out of memory before starting: {runs} {gigabytes(need)} (XLA's memory analysis of "
        f"the compiled start and interval programs) but the budget is {gigabytes(budget)} per device "
        f"({budget_source()}). {drivers + '. ' if drivers else ''}{remedy}"
    )


def _choose(n_runs, n_devices, max_runs, compile_at, measure, fixed_bytes, budget, drivers):
    full = max(n_devices, math.ceil(n_runs / n_devices) * n_devices)
    budget = memory_budget() if budget is None else budget
    if max_runs:
        size = balanced(n_runs, min(max_runs, full), n_devices)
        compiled = compile_at(size)
        need = measure(size, compiled)
        if need is not None and need > budget:
            remedy = "Lower train.max_runs_per_chunk (0: chosen automatically)" if size > n_devices else ""
            raise does_not_fit(need, budget, size // n_devices, drivers, remedy or _SMALLER)
        info = {"mode": "fixed", "max_runs_per_chunk": max_runs, "budget_bytes": budget, "bytes_per_chunk": need}
        return RunChunks(n_runs, size), compiled, info
    compiled = compile_at(full)
    need = measure(full, compiled)
    info: dict[str, Any] = {"mode": "auto", "budget_bytes": budget, "bytes_all_runs": need}
    if need is None or need <= budget:
        return RunChunks(n_runs, full), compiled, info
    size = full
    for _ in range(4):
        per_run = max(1.0, (need - fixed_bytes) / (size / n_devices))
        fit = int((budget - fixed_bytes) // per_run) * n_devices
        new = balanced(n_runs, max(n_devices, min(fit, size - n_devices)), n_devices)
        if new >= size:
            break
        size = new
        compiled = compile_at(size)
        need = measure(size, compiled) or 0
        if need <= budget:
            break
    if need > budget and size > n_devices:  # the linear estimate was off: one run per device
        size = n_devices
        compiled = compile_at(size)
        need = measure(size, compiled) or 0
    if need > budget:
        raise does_not_fit(need, budget, 1, drivers, _SMALLER)
    info["bytes_per_chunk"] = need
    return RunChunks(n_runs, size), compiled, info


_SMALLER = "Make the run smaller (the fields above) or use a device with more memory"

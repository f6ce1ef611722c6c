"""Test settings: CPU, fast compilation, a persistent compilation cache shared by the tests (and by every clone
on this machine: `_jaxenv.CACHE_DIR`).

Tests use small shapes and `smoke` presets, so compiling, not running, dominates them: the XLA
flags in `_jaxenv.FAST_COMPILE_FLAGS` turn the backend's optimization down and select the classic CPU
fusion emitters (they change code generation, not what a program computes). Timing comparisons run
in their own subprocesses with default flags.
"""

import os
import signal

from _jaxenv import CACHE_DIR, FAST_COMPILE_FLAGS, prune_cache

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE_FLAGS]).strip()
# One host device unless a test asks for more (in a subprocess): `jaxlab.cli.main`, called in
# process by the CLI tests, would otherwise give the test process one device per core.
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=1"

import jax
import pytest

# the run-directory tests' fixtures (`finished`, `old_run`): one definition, every test module may use them
pytest_plugins = ("_rundirs",)

# A suite started in the background (`nohup`, `cmd &` in a script) inherits SIGINT ignored, and so
# would every process it starts; the signal tests need the default disposition (a Python handler,
# which a child process gets back as the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# shared by every clone on this machine (`_jaxenv.CACHE_DIR`): a fresh clone compiles only what changed
jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR))
# every program, however fast it compiles: the second worker and the ~50 jaxlab subprocesses the
# suite starts compile the same small programs again otherwise (5735 entries, 62 MB per run)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture
def smoke_cfg():
    from jaxlab.registry import get_experiment

    return get_experiment("icl-regression").preset("smoke")


# The files that take the longest, longest first (worker seconds in CI's `--durations` on the 2-core
# CPU). `make test` runs with `--dist loadfile --no-loadscope-reorder`, so xdist hands out files in
# this order: the long ones start first and the short ones fill the end, instead of one worker
# finishing a long file alone while the other waits (longest-processing-time-first scheduling).
SLOWEST_FIRST = (
    "test_representation_dissimilarity.py",
    "test_checkpoint_safety.py",
    "test_steerability.py",
    "test_watchdog.py",
    "test_extending.py",
    "test_instruction_clustering.py",
    "test_function_classes.py",
    "test_multihost.py",
    "test_icl_regression.py",
    "test_bench_train.py",
    "test_linalg.py",
    "test_loading.py",
    "test_resume.py",
    "test_cli.py",
)


def pytest_configure(config):
    """Bound the shared compilation cache once per suite, in the process that starts the workers."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        prune_cache()


def pytest_collection_modifyitems(config, items):
    """Put the files of `SLOWEST_FIRST` first, in its order; the others keep theirs."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

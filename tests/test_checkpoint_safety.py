"""Checkpoints that lose nothing: by wall-clock time, on SIGTERM / SIGINT, verified on `--resume`
(a damaged one is set aside and an older one used), and a resume on another device count refused.

Every resume here must end bit-identical to the uninterrupted sweep."""

import json
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _jaxenv import free_port, jax_env
from _runs import run_cfg

from jaxlab import interrupt, results
from jaxlab.cli import main
from jaxlab.errors import UserError
from jaxlab.hostdevices import cpu_cores
from jaxlab.registry import get_experiment, load_run_group, run_checkpoint_indices
from jaxlab.train import checkpoint, restore, with_seeds
from jaxlab.train import group_run as group_run_module
from jaxlab.train.checkpoint import GroupCheckpointer, SaveSchedule, fingerprint
from jaxlab.train.group_run import check_resume_devices
from jaxlab.train.progress import Progress
from jaxlab.train.sharding import Placement

# 10 evaluation intervals of 20 steps, a checkpoint after every second one, all kept
SETTINGS = {
    "train.steps": 200,
    "train.eval_every": 20,
    "train.checkpoint_every": 2,
    "train.checkpoint_minutes": 0,
    "train.keep_checkpoints": 0,
}
ARGS = ["--preset", "smoke", "--seeds", "0:3"] + [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
STOP_AT_STEP = 140  # the interrupted sweep stops after evaluation 7: checkpoints 2, 4, 6 and 7


def chunk_dir(out: Path) -> Path:
    return out / "checkpoints" / "group-0000" / "chunk-0000"


def step_dir(out: Path, index: int, every: int = 20) -> Path:
    """The directory of the checkpoint after evaluation `index`: it is named by its step."""
    return chunk_dir(out) / str(every * index)


def kept(out: Path, every: int = 20) -> list[int]:
    """Evaluation indices of the kept checkpoints (their directories are named by step)."""
    names = sorted(int(p.name) for p in chunk_dir(out).iterdir() if p.name.isdigit())
    assert all(n % every == 0 for n in names), names
    return [n // every for n in names]


def fingerprint_file(out: Path, index: int, every: int = 20) -> Path:
    return chunk_dir(out) / "fingerprints" / f"{every * index}.json"


STEPS = range(0, 201, 20)  # SETTINGS' evaluation steps: checkpoint names on disk


def smoke(settings=SETTINGS):
    return with_seeds(get_experiment("icl-regression").preset("smoke"), (0, 1, 2)).with_overrides(settings)


def assert_same_as_whole(out: Path, whole) -> None:
    """The run directory's final states, history, table and summary equal the uninterrupted sweep's, bit for bit."""
    again = load_run_group(out, 0)
    ref = whole.groups[0]
    for a, b in zip(jax.tree_util.tree_leaves(again.state), jax.tree_util.tree_leaves(ref.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in ("eval_loss", "train_loss"):
        np.testing.assert_array_equal(again.history[name], ref.history[name])
        table = results.load(out)
        wide = table[table.metric == name].pivot(index="run", columns="step", values="value")
        np.testing.assert_array_equal(wide.to_numpy(), ref.history[name])
    assert [r["final"] for r in results.load_summary(out)["runs"]] == [r["final"] for r in whole.summary["runs"]]


@pytest.fixture(scope="module")
def whole():
    """The uninterrupted sweep."""
    return run_cfg(smoke(), progress=False)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A sweep stopped after evaluation 7 as SIGTERM would stop it (in process: the stop flag)."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    original = Progress.update

    def update(self, **kw):
        original(self, **kw)
        if kw["step"] >= STOP_AT_STEP:
            interrupt.request(signal.SIGTERM)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Progress, "update", update)
        assert main(["run", "icl-regression", "--out", str(out), "--quiet", *ARGS]) == 128 + signal.SIGTERM
    assert interrupt.requested() == 0  # cleared when the sweep's signal handling ended
    assert kept(out) == [2, 4, 6, 7]
    assert not (out / "summary.json").exists()
    return out


def copy_of(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(src, out)
    return out


def resume(out: Path, capsys) -> list[str]:
    """`--resume` in this process; returns the jaxlab notices it printed on stderr."""
    capsys.readouterr()
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("jaxlab: ")]


# -- fingerprints ------------------------------------------------------------------------------------
def reference_sums(x: np.ndarray) -> list[int]:
    """(sum u_i, sum (2i + 1) u_i) mod 2^32 over x's bits as uint32 words, in Python integers."""
    raw = np.ascontiguousarray(x).view(np.uint8)
    if x.dtype.itemsize == 4:
        words = raw.view(np.uint32)
    elif x.dtype.itemsize == 2:
        words = raw.view(np.uint16)
    else:
        words = raw
    words = [int(w) for w in words.reshape(-1)]
    return [sum(words) % 2**32, sum((2 * i + 1) * w for i, w in enumerate(words)) % 2**32]


def test_fingerprint_matches_an_independent_sum_and_sees_every_flipped_byte():
    rng = np.random.default_rng(0)
    tree = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "nan": np.array([np.nan, -0.0, 0.0, np.inf], np.float32),  # bit patterns, not values
        "i32": rng.integers(-(2**31), 2**31 - 1, size=7, dtype=np.int32),
        "u32": rng.integers(0, 2**32 - 1, size=(2, 2), dtype=np.uint32),  # PRNG key data
        "bf16": rng.normal(size=6).astype(jax.numpy.bfloat16),
        "bool": np.array([True, False, True]),
        "scalar": np.int32(7),
        "big": np.full(70_000, 2**31 + 12345, np.uint32),  # the weighted sum wraps around 2^32 many times
    }
    got = fingerprint(tree)
    for name, x in tree.items():
        assert got[f"['{name}']"] == reference_sums(np.asarray(x)), name

    # a device array gives the same sums as the host copy
    assert fingerprint({"f32": jax.numpy.asarray(tree["f32"])}) == {"['f32']": got["['f32']"]}

    # every single-bit and whole-byte change anywhere changes the fingerprint
    x = tree["f32"][:2]
    base = fingerprint(x)
    for byte in range(x.nbytes):
        for mask in (0x01, 0x80, 0xFF):
            y = x.copy()
            y.view(np.uint8).reshape(-1)[byte] ^= mask
            assert fingerprint(y) != base, (byte, mask)
    # a permutation of the same words keeps the plain sum but not the weighted one
    swapped = fingerprint(x[::-1].copy())
    assert swapped[""][0] == base[""][0] and swapped[""][1] != base[""][1]


# -- time-based checkpoints --------------------------------------------------------------------------
def test_save_schedule_counts_from_the_chunk_start_and_the_last_save(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(checkpoint, "clock", lambda: now[0])
    s = SaveSchedule(every=0, minutes=2.0)
    due = []
    for t in (60, 119, 120, 150, 200, 241):
        now[0] = float(t)
        d = s.time_due()
        due.append(d)
        if d:
            s.saved()
    # due at 120 s (2 minutes after the start), then 120 s after that save: 241
    assert due == [False, False, True, False, False, True]
    assert [SaveSchedule(every=3, minutes=0).every_due(i) for i in range(1, 8)] == [0, 0, 1, 0, 0, 1, 0]
    off = SaveSchedule(every=0, minutes=0)
    now[0] = 1e9
    assert not off.time_due() and not off.every_due(4)


def test_checkpoints_by_time_and_by_count_in_a_sweep(tmp_path, monkeypatch, whole):
    # the clock advances one minute per reading (one when the chunk starts, one per interval)
    ticks = iter(range(0, 10_000, 60))
    monkeypatch.setattr(checkpoint, "clock", lambda: float(next(ticks)))
    settings = {**SETTINGS, "train.checkpoint_every": 4, "train.checkpoint_minutes": 2.5}
    out = tmp_path / "run"
    run_cfg(smoke(settings), out, progress=False)
    # time: 60, 120, 180 s -> save after 3 (>= 150 s since the start); 4 by count (resets the
    # time); 7 (180 s after the save at 4); 8 by count; 10 is the final state
    assert run_checkpoint_indices(out) == [3, 4, 7, 8, 10]
    # each has a fingerprint, written once orbax had finished it
    fingerprints = sorted(int(p.stem) for p in (chunk_dir(out) / "fingerprints").glob("*.json"))
    assert fingerprints == [60, 80, 140, 160, 200]  # named by step, like the checkpoints
    # checkpoints change nothing about the runs
    np.testing.assert_array_equal(load_run_group(out).history["eval_loss"], whole.groups[0].history["eval_loss"])


def test_default_minutes_off_and_count_off_keep_only_the_final_state(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "clock", lambda: 0.0)  # time never passes: no time-based save
    settings = {**SETTINGS, "train.checkpoint_every": 0, "train.checkpoint_minutes": 10.0}
    out = tmp_path / "run"
    run_cfg(smoke(settings), out, progress=False)
    assert run_checkpoint_indices(out) == [10]


# -- resume: where from, and damaged checkpoints -----------------------------------------------------
def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def data_file(out: Path, index: int) -> Path:
    """The array data orbax reads back (OCDBT's data file of the checkpoint's item)."""
    (path,) = (step_dir(out, index) / "item" / "d").iterdir()
    return path


def damage_flip(out: Path) -> None:
    flip_byte(data_file(out, 7))


def damage_flip_without_fingerprint(out: Path) -> None:
    """A flipped byte in a checkpoint with no fingerprint: orbax's own checks must refuse it."""
    fingerprint_file(out, 7).unlink()
    flip_byte(data_file(out, 7))


def damage_truncate(out: Path) -> None:
    path = data_file(out, 7)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_metadata(out: Path) -> None:
    (step_dir(out, 7) / "item" / "_METADATA").write_text("}{ not json")


def damage_silently(out: Path) -> None:
    """Arrays that restore without error but differ from those saved (as a flipped byte of an
    uncompressed array would): orbax reads the files, only the array fingerprint can tell."""
    path = fingerprint_file(out, 7)
    record = json.loads(path.read_text())
    del record["files"]
    key = next(k for k in record["arrays"] if "params" in k)
    record["arrays"][key][1] ^= 1
    path.write_text(json.dumps(record))


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no tracebacks from reader threads
@pytest.mark.parametrize(
    "damage", [damage_flip, damage_flip_without_fingerprint, damage_truncate, damage_metadata, damage_silently]
)
def test_resume_skips_a_damaged_latest_checkpoint(damage, interrupted, whole, tmp_path, capsys):
    out = copy_of(interrupted, tmp_path)
    damage(out)
    notices = resume(out, capsys)
    assert len(notices) == 2, notices  # the damaged one, then where it continues
    assert notices[0].startswith("jaxlab: warning: group 1/1 chunk 1/1: the checkpoint at step 140 is damaged")
    assert notices[1] == (
        "jaxlab: group 1/1 chunk 1/1: resuming from step 120 of 200 (checkpoint after evaluation 6 of 10)"
    )
    # kept for inspection, out of orbax's step directories, with its fingerprint and the reason
    (aside,) = (chunk_dir(out) / "damaged").iterdir()
    assert aside.name.startswith("140-") and str(aside) in notices[0]  # named by step
    assert (aside / "checkpoint" / "item").is_dir()
    assert (aside / "fingerprint.json").exists() == (damage is not damage_flip_without_fingerprint)
    assert (aside / "reason.txt").read_text().strip() in notices[0]
    assert_same_as_whole(out, whole)
    assert kept(out) == [2, 4, 6, 8, 10]  # the damaged 7 is gone from orbax's view; 8 and 10 saved anew


def test_a_resume_of_checkpoints_with_other_metrics_stops_and_changes_nothing(interrupted, tmp_path, capsys):
    """Checkpoints written by a jaxlab that did not record `eval_loss` are intact, not damaged: the
    resume stops (exit 2) naming the difference, moves nothing and writes nothing; reading the run
    gives the metric as NaN."""
    out = copy_of(interrupted, tmp_path)
    exp = get_experiment("icl-regression")
    saved = {index: restore.load_group(exp, out, 0, index) for index in kept(out)}  # one chunk: every run
    for index in saved:
        shutil.rmtree(step_dir(out, index))
        fingerprint_file(out, index).unlink()
    ckpt = GroupCheckpointer(chunk_dir(out), keep=0, async_save=False, steps=list(STEPS))
    for index, got in saved.items():
        ckpt.save(index, got.state, {k: v.T for k, v in got.history.items() if k != "eval_loss"})  # [n_evals, R]
    ckpt.close()
    assert kept(out) == [2, 4, 6, 7]
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the checkpoint at step 140 was written by a jaxlab" in err, err
    assert "only in the checkpoint" not in err and "only in this version: history/eval_loss" in err
    assert "Traceback" not in err and "damaged" not in err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    # read for analysis: the state as saved, the metric its writer did not record as NaN
    got = restore.load_group(exp, out, 0, 7)
    assert np.isnan(got.history["eval_loss"]).all()
    np.testing.assert_array_equal(got.history["train_loss"], saved[7].history["train_loss"])


def test_resume_with_no_usable_checkpoint_starts_from_step_0(interrupted, whole, tmp_path, capsys):
    out = copy_of(interrupted, tmp_path)
    for index in kept(out):
        (step_dir(out, index) / "item" / "_METADATA").write_text("garbage")
    notices = resume(out, capsys)
    assert sum("is damaged" in n for n in notices) == 4, notices
    assert "jaxlab: warning: group 1/1 chunk 1/1: no usable checkpoint, starting from step 0" in notices
    assert len(list((chunk_dir(out) / "damaged").iterdir())) == 4
    assert_same_as_whole(out, whole)


def test_resume_without_checkpoints_says_it_starts_from_step_0(interrupted, whole, tmp_path, capsys):
    out = copy_of(interrupted, tmp_path)
    for index in kept(out):
        shutil.rmtree(step_dir(out, index))
    notices = resume(out, capsys)
    assert notices[0] == "jaxlab: group 1/1 chunk 1/1: no checkpoint yet, starting from step 0", notices
    assert_same_as_whole(out, whole)


def test_a_checkpoint_without_fingerprint_is_used_unverified(interrupted, whole, tmp_path, capsys):
    # a sweep killed just after orbax finished a save, before the fingerprint was written
    out = copy_of(interrupted, tmp_path)
    fingerprint_file(out, 7).unlink()
    notices = resume(out, capsys)
    assert notices[0] == (
        "jaxlab: group 1/1 chunk 1/1: resuming from step 140 of 200 (checkpoint after evaluation 7 of 10; "
        "it has no fingerprint to verify it against)"
    )
    assert_same_as_whole(out, whole)

    # the final checkpoint of a finished run is verified when it is loaded: damage is an error
    flip_byte(data_file(out, 10))
    with pytest.raises(
        Exception, match=r"the checkpoint at step 200 is damaged \(its file 200/item/d/\w+ differs from the one saved"
    ):
        load_run_group(out)


def test_restore_verifies_and_move_aside_hides_it_from_orbax(interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)
    damage_silently(out)
    ckpt = GroupCheckpointer(chunk_dir(out), keep=0, async_save=False, steps=STEPS)
    try:
        like = load_run_group(interrupted, checkpoint=7)  # host arrays [R, ...]: shapes for the restore
        state = jax.tree_util.tree_map(np.zeros_like, like.state)
        hist = {k: np.zeros(v.T.shape, v.dtype) for k, v in like.history.items()}  # [n_evals, R]
        with pytest.raises(checkpoint.DamagedCheckpoint, match="restored arrays differ from the ones saved"):
            ckpt.restore(7, state, hist)
        _, _, verified = ckpt.restore_verified(6, state, hist)
        assert verified
        moved = ckpt.move_aside(7, "test")
        assert ckpt.all() == [2, 4, 6] and ckpt.latest() == 6
        assert (moved / "checkpoint").is_dir() and not step_dir(out, 7).exists()
    finally:
        ckpt.close()
    # a new manager on the directory ignores `damaged/` and `fingerprints/`
    again = GroupCheckpointer(chunk_dir(out), keep=0, async_save=False, steps=STEPS)
    try:
        assert again.all() == [2, 4, 6]
    finally:
        again.close()


# -- signals -----------------------------------------------------------------------------------------
def progress_step(line: str) -> int | None:
    if line.startswith("[jaxlab]") and " step " in line:
        return int(line.split(" step ")[1].split("/")[0])
    return None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_finishes_bitwise(signum, tmp_path, capsys):
    settings = {**SETTINGS, "train.steps": 400, "train.checkpoint_every": 0, "train.checkpoint_minutes": 0}
    args = ["--preset", "smoke", "--seeds", "0:3"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jaxlab", "run", "icl-regression", "--out", str(out), "--quiet", *args]
    proc = subprocess.Popen(cmd, env=jax_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            step = progress_step(line)
            if step is not None and step >= 100:
                proc.send_signal(signum)
                break
        rest_out, rest_err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    err = "".join(seen) + rest_err
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
    last = [line for line in err.splitlines() if line.startswith("jaxlab: stopped by")]
    assert len(last) == 1, err[-3000:]
    name = signal.Signals(signum).name
    assert last[0].startswith(f"jaxlab: stopped by {name}: checkpoint saved at step ")
    assert last[0].endswith(f"continue with: jaxlab run icl-regression --out {shlex.quote(str(out))} --resume --quiet")
    (index,) = kept(out)  # the signal's checkpoint only (no periodic ones): a step > 0, before the end
    assert 5 <= index < 20 and f"saved at step {20 * index} of 400" in last[0]
    assert fingerprint_file(out, index).exists()
    assert not (out / "summary.json").exists() and not (out / ".jaxlab.lock").exists()

    notices = resume(out, capsys)
    assert f"resuming from step {20 * index} of 400" in notices[0]
    assert_same_as_whole(out, run_cfg(smoke(settings), progress=False))


def stop_while_compiling(monkeypatch):
    """A stop signal that arrives while the programs compile, before any interval ran."""
    original = group_run_module._GroupRun.compile

    def compile_then_signal(self):
        seconds = original(self)
        interrupt.request(signal.SIGTERM)
        return seconds

    monkeypatch.setattr(group_run_module._GroupRun, "compile", compile_then_signal)


def test_a_stop_before_a_fresh_run_trained_keeps_nothing(tmp_path, monkeypatch, capsys):
    stop_while_compiling(monkeypatch)
    out = tmp_path / "fresh"
    assert main(["run", "icl-regression", "--out", str(out), "--quiet", *ARGS]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "jaxlab: stopped by SIGTERM: before training group 1/1 chunk 1/1; nothing of this run was kept" in err
    assert "[jaxlab]" not in err  # no interval ran
    assert not (out / "config.json").exists() and not (out / "checkpoints").exists()


def test_a_stop_before_a_resumed_chunk_trained_keeps_its_checkpoint(interrupted, tmp_path, monkeypatch, capsys):
    out = copy_of(interrupted, tmp_path)
    stop_while_compiling(monkeypatch)
    capsys.readouterr()
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "jaxlab: group 1/1 chunk 1/1: resuming from step 140 of 200" in err
    assert (
        "jaxlab: stopped by SIGTERM: checkpoint saved at step 140 of 200 (group 1/1 chunk 1/1); "
        f"continue with: jaxlab run icl-regression --out {shlex.quote(str(out))} --resume --quiet"
    ) in err
    assert "[jaxlab]" not in err and kept(out) == [2, 4, 6, 7]


def test_stop_on_signals_restores_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in interrupt.STOP_SIGNALS}
    with interrupt.stop_on_signals():
        assert all(signal.getsignal(s) is not before[s] for s in interrupt.STOP_SIGNALS)
        signal.raise_signal(signal.SIGTERM)  # recorded, not fatal
        assert interrupt.requested() == signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)  # a repeated SIGTERM still waits for the checkpoint
        assert interrupt.requested() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C while stopping aborts at once
            signal.raise_signal(signal.SIGINT)
    assert interrupt.requested() == 0
    with interrupt.stop_on_signals():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert interrupt.requested() == signal.SIGINT  # the first stop signal is the one reported
    assert {s: signal.getsignal(s) for s in interrupt.STOP_SIGNALS} == before
    err = interrupt.Interrupted(signal.SIGINT, "checkpoint saved at step 5 of 10")
    assert err.exit_status == 130 and str(err) == "stopped by SIGINT: checkpoint saved at step 5 of 10"


# -- device count --------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_resume_on_another_device_count_is_refused(interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)  # started on 1 CPU device
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".jaxlab" not in p.name)
    cmd = [sys.executable, "-m", "jaxlab", "run", "icl-regression", "--out", str(out), "--resume", "--quiet"]
    proc = subprocess.run(cmd, env=jax_env(2), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("jaxlab: error: --resume: group 0 was started on 1 cpu device(s) and this run has 2")
    assert "JAXLAB_CPU_DEVICES=1 jaxlab run ... --resume" in lines[0]
    # nothing changed: the checkpoints are there to resume from on one device
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".jaxlab" not in p.name) == before


def test_resume_on_another_platform_is_refused(interrupted, tmp_path, capsys):
    out = copy_of(interrupted, tmp_path)
    layout_path = out / "checkpoints" / "group-0000" / "layout.json"
    layout = json.loads(layout_path.read_text())
    assert layout["n_devices"] == 1 and layout["platform"] == "cpu"
    layout["platform"] = "tpu"  # as a sweep started on one TPU core would record it
    layout_path.write_text(json.dumps(layout))
    capsys.readouterr()
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was started on 1 tpu device(s) and this run has 1 cpu device(s)" in err
    assert "Resume with 1 tpu devices" in err
    assert kept(out) == [2, 4, 6, 7]


def test_the_refusal_says_how_to_get_the_devices_back():
    here = Placement.default()  # one CPU device in the tests
    check_resume_devices({"n_devices": 1, "platform": "cpu"}, 0, here)  # same: nothing to say
    check_resume_devices({"n_devices": 1}, 0, here)  # a layout from before platforms were recorded
    more = cpu_cores() + 1  # more devices than this machine has cores: JAXLAB_CPU_DEVICES cannot ask for them
    with pytest.raises(UserError, match=f"Resume with XLA_FLAGS=--xla_force_host_platform_device_count={more} jaxlab"):
        check_resume_devices({"n_devices": more, "platform": "cpu"}, 3, here)
    with pytest.raises(UserError, match=r"group 3 was started on 8 gpu device\(s\) .* Resume with 8 gpu devices"):
        check_resume_devices({"n_devices": 8, "platform": "gpu"}, 3, here)


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_sigterm_to_one_process_stops_all_at_the_same_checkpoint(tmp_path):
    """Saves are collective: the process that got the signal and the one that did not save the
    same interval and both stop; a two-process resume continues from it on process 0's word."""
    settings = {**SETTINGS, "train.steps": 1500, "train.checkpoint_every": 0}
    args = ["--preset", "smoke", "--seeds", "0:4"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"

    def start(*extra):
        port = free_port()
        cmd = [sys.executable, "-m", "jaxlab", "run", "icl-regression", "--out", str(out), "--quiet", *extra]
        distributed = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        return [
            subprocess.Popen(
                [*cmd, *distributed, "--process-id", str(i)],
                env=jax_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]

    procs = start(*args)
    try:
        for line in procs[0].stderr:  # process 0 reports progress
            step = progress_step(line)
            if step is not None and step >= 200:
                procs[1].send_signal(signal.SIGTERM)
                break
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [143, 143], errs
    (index,) = kept(out)
    assert 10 <= index < 75 and f"checkpoint saved at step {20 * index} of 1500" in errs[0]
    assert "Traceback" not in errs[0] + errs[1]

    procs = start("--resume")
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs
    assert f"jaxlab: group 1/1 chunk 1/1: resuming from step {20 * index} of 1500" in errs[0]
    assert "resuming" not in errs[1]  # one line, from process 0
    assert len(results.load_summary(out)["runs"]) == 4

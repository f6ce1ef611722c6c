"""Bounded resources checked before any work, and sweeps that cannot silently repeat one run.

Sizes: evaluation counts, seeds, runs per sweep and one run's memory are refused (exit 2, the
fields named) before anything is compiled or written. Sweeps: a key swept twice, set and swept,
given a value twice, holding one value for the whole sweep, or with no effect in the resolved
config is refused; a `--set` of a key with no effect is warned about. Every declared no-effect
rule is checked against the code that reads the field: both values give the same program (or
the same numbers), and with the rule's condition off they do not.
"""

import dataclasses
import json
import re
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxlab.cli import main
from jaxlab.config import (
    MAX_EVALS,
    MAX_RUNS,
    SEED_LIMIT,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    SweepConfig,
    TrainConfig,
    apply_sweep_args,
    parse_seeds,
)
from jaxlab.errors import ConfigError, UserError
from jaxlab.models import count_params
from jaxlab.registry import experiments as registry
from jaxlab.registry import get_experiment
from jaxlab.train import bounds, chunking, default_hparams, make_train, plan_groups, with_seeds
from jaxlab.train.group_run import _GroupRun
from jaxlab.train.programs import Programs
from jaxlab.train.sharding import Placement

SMOKE = ["run", "icl-regression", "--preset", "smoke", "--quiet"]


def refused(capsys, args, out) -> str:
    """Run the CLI; assert exit 2, nothing written at `out`, and one message line; return it."""
    assert main([*args, "--out", str(out)]) == 2
    assert not out.exists(), f"{out} was written"
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxlab: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def no_compiling(monkeypatch):
    """Fail the test if a program of the sweep is compiled (the refusal must come first)."""

    def fail(*args, **kwargs):
        raise AssertionError("compiled before the size check")

    monkeypatch.setattr(Programs, "compile_interval", fail)
    monkeypatch.setattr(Programs, "compile_start", fail)


# -- §3 bounded resources --------------------------------------------------------------------------
def test_eval_points_are_counted_without_listing_them():
    """n_eval_points = len(eval_steps) (set arithmetic reference); counts beyond MAX_EVALS are refused."""
    for steps, every in [(80, 20), (81, 20), (1, 5), (100, 30), (7, 1), (MAX_EVALS - 1, 1)]:
        cfg = TrainConfig(steps=steps, eval_every=every)
        want = sorted(set(range(0, steps, every)) | {steps})
        assert list(cfg.eval_steps()) == want and cfg.n_eval_points() == len(want)
    for steps, n in [(1000, 4), (20000, 12), (10, 30)]:
        cfg = TrainConfig(steps=steps, eval_schedule="log", n_evals=n)
        grid = np.round(10 ** np.linspace(0.0, np.log10(steps), n)).astype(int)
        want = sorted({0, steps, *grid.tolist()})
        assert list(cfg.eval_steps()) == want and len(want) <= cfg.n_eval_points()


@pytest.mark.timeout(20)
def test_absurd_evaluation_counts_are_refused_fast(tmp_path, capsys):
    """Two billion steps evaluated every 20: the count, not a 10^8-element set; both fields named."""
    with pytest.raises(ConfigError) as err:
        TrainConfig(steps=2_000_000_000, eval_every=20)
    assert err.value.field == "train.steps and train.eval_every" and str(MAX_EVALS) in str(err.value)
    with pytest.raises(ConfigError, match="train.n_evals"):
        TrainConfig(steps=1000, eval_schedule="log", n_evals=10**9)
    TrainConfig(steps=MAX_EVALS - 1, eval_every=1)  # the limit itself is allowed
    msg = refused(capsys, [*SMOKE, "--set", "train.steps=2e9"], tmp_path / "o")
    assert "train.steps and train.eval_every" in msg and "100000001 evaluations" in msg
    msg = refused(capsys, [*SMOKE, "--set", "train.steps=1e12"], tmp_path / "o")
    assert "train.steps" in msg


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("override", "named", "share"),
    [
        ("task.n_dims=20000", "model.d_model=20001", "parameters, gradients and optimizer state"),
        ("train.eval_batch_size=1e8", "train.eval_batch_size=100000000", "the evaluation batch"),
    ],
)
def test_a_run_too_large_for_the_budget_is_refused_before_compiling(
    tmp_path, capsys, monkeypatch, no_compiling, override, named, share
):
    """The two allocations of 67-821 GB from the issue: refused from the config's shapes, nothing
    compiled or written, with the bound, the budget and the fields that drive it."""
    monkeypatch.setenv(chunking.BUDGET_ENV, "4G")
    msg = refused(capsys, [*SMOKE, "--set", override], tmp_path / "o")
    assert "out of memory before starting" in msg and "JAXLAB_MEMORY_BUDGET=4G" in msg
    assert named in msg and share in msg
    # the bound is at least what the allocation needed (one run's parameters x 4 for
    # n_dims: 1.6e9 weights; 1e8 x 7 tokens x 4 floats for the evaluation batch)
    cfg = get_experiment("icl-regression").preset("smoke").set(*override.split("=")).resolve()
    assert bounds.lower_bound(cfg) > 10 * 2**30


@pytest.mark.timeout(60)
def test_a_million_point_grid_is_refused_before_listing_points(tmp_path, capsys, no_compiling):
    values = ",".join(str(1e-4 * (i + 1)) for i in range(1000))
    decay = ",".join(str(1e-5 * i) for i in range(1000))
    args = [*SMOKE, "--sweep", f"optim.lr={values}", "--sweep", f"optim.weight_decay={decay}"]
    msg = refused(capsys, args, tmp_path / "o")
    assert "2000000 runs" in msg and "optim.lr" in msg and "optim.weight_decay" in msg and str(MAX_RUNS) in msg
    lrs = tuple(1e-4 * (i + 1) for i in range(1000))
    with pytest.raises(ConfigError, match="runs per sweep"):
        SweepConfig(seeds=(0,), grid=(("optim.lr", lrs), ("optim.weight_decay", lrs), ("optim.b1", (0.5, 0.9))))


@pytest.mark.timeout(120)
def test_refusal_from_xla_memory_analysis_when_one_run_does_not_fit(tmp_path, capsys, monkeypatch):
    """The shape bound passes (a smoke run holds ~57 kB of it) but the compiled programs need more
    than an 80 kB budget: refused with XLA's estimate and the fields, before training starts."""
    cfg = get_experiment("icl-regression").preset("smoke").resolve()
    assert bounds.lower_bound(cfg) < 80_000
    monkeypatch.setenv(chunking.BUDGET_ENV, "80K")
    out = tmp_path / "o"
    assert main([*SMOKE, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "one run per device needs" in err and "XLA's memory analysis" in err and "train.eval_batch_size" in err
    assert "Traceback" not in err
    assert not (out / "summary.json").exists() and not (out / "checkpoints").exists()


def _fake_compiler(per_run_interval: int, per_run_start: int, fixed: int = 0):
    """compile_at / others for `chunking.choose`: per-device bytes grow with the runs on a device."""
    compiled = []

    def program(per_run, size, n_devices):
        on_device = fixed + per_run * (size // n_devices)
        stats = SimpleNamespace(
            argument_size_in_bytes=on_device,
            output_size_in_bytes=0,
            alias_size_in_bytes=0,
            temp_size_in_bytes=0,
        )
        return SimpleNamespace(memory_analysis=lambda: stats, size=size)

    def make(n_devices):
        def interval(size):
            compiled.append(("interval", size))
            return program(per_run_interval, size, n_devices)

        def start(size):
            compiled.append(("start", size))
            return [program(per_run_start, size, n_devices)]

        return interval, start

    return make, compiled


def test_chunker_counts_the_start_program_and_refuses_what_cannot_fit():
    make, compiled = _fake_compiler(per_run_interval=100, per_run_start=1000)
    interval, start = make(2)
    # 10 runs on 2 devices: the interval program alone (500 B/device) fits 2000 B; start (5000 B) does not
    chunks, prog, info = chunking.choose(10, 2, 0, interval, budget=2000, others=start)
    assert info["bytes_all_runs"] == 5000 and chunks.size * 1000 // 2 <= 2000 and chunks.size < 10
    assert info["bytes_per_chunk"] == 1000 * chunks.size // 2 and prog.size == chunks.size
    # one run per device needs 1000 B: a 900 B budget cannot hold it
    with pytest.raises(UserError) as err:
        chunking.choose(10, 2, 0, interval, budget=900, others=start, drivers="model.d_model=5")
    msg = str(err.value)
    assert "one run per device needs 1 kB" in msg and "900 bytes" in msg and "model.d_model=5" in msg
    assert compiled[-2:] == [("interval", 2), ("start", 2)]  # it tried one run per device first
    # a fixed chunk size that does not fit: refused, naming the field to lower
    with pytest.raises(UserError, match="train.max_runs_per_chunk"):
        chunking.choose(10, 2, 4, interval, budget=1500, others=start)
    chunks, _, info = chunking.choose(10, 2, 4, interval, budget=2000, others=start)
    assert chunks.size == 4 and info["mode"] == "fixed"


@pytest.mark.timeout(180)
def test_the_step0_evaluation_runs_in_the_interval_program(monkeypatch, smoke_cfg):
    """Four runs on one device with a large evaluation batch. The step-0 metrics are evaluated by the
    interval program (`programs.first_row`; in the scan layout one run at a time), not by a vmapped
    copy of the evaluation inside the start-up program, which once needed three times the interval's
    memory: so start needs less than the interval, and a budget that fits the interval program
    keeps the four runs in one chunk. (The chunker still counts the start program:
    test_chunker_counts_the_start_program_and_refuses_what_cannot_fit.)"""
    exp = get_experiment("icl-regression")
    cfg = with_seeds(
        smoke_cfg.with_overrides({"train.eval_batch_size": 4096, "train.run_layout": "scan"}), (0, 1, 2, 3)
    )
    group = plan_groups(cfg)[0]
    gr = _GroupRun(exp, group, Placement.default(), None, False)
    interval4 = chunking.compiled_bytes(gr.programs.compile_interval(4, gr.hp_keys))
    start4 = chunking.compiled_bytes(gr.programs.compile_start(4, gr.hp_keys))
    assert start4 < interval4
    monkeypatch.setenv(chunking.BUDGET_ENV, str(interval4 + 1))
    gr.compile()
    assert gr.chunks.size == 4 and gr.estimate["bytes_all_runs"] == interval4


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("icl-regression", {}),
        (
            "icl-regression",
            {"model.use_bias": True, "model.layernorm": True, "model.read_in": "linear", "model.d_model": 8},
        ),
        ("instruction-clustering", {}),
        ("latent-ambiguity", {"model.attention": "positional", "model.tie_layers": True, "model.n_layers": 3}),
        ("icl-autoregressive", {}),
    ],
)
def test_weight_count_is_a_lower_bound_of_the_models_parameters(experiment, overrides):
    """P (bounds.n_weights) counts the weight matrices: every parameter but biases and norm scales."""
    exp = get_experiment(experiment)
    cfg = exp.preset("smoke").with_overrides(overrides).resolve()
    train = exp.make_train(cfg)
    shapes = jax.eval_shape(train.init, jax.random.key(0))
    params = shapes.params
    matrices = sum(
        int(np.prod(x.shape))
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        if getattr(path[-1], "key", "") in ("kernel", "embedding", "w_qkv", "w_out", "w_in", "pos_embed")
    )
    assert bounds.n_weights(cfg) == matrices <= count_params(params)
    moments = bounds.optimizer_moments(cfg)
    opt_floats = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes.opt_state) if x.ndim == 1)
    assert opt_floats >= moments * bounds.n_weights(cfg)


# -- seeds -----------------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_seeds_outside_the_key_range_are_refused_everywhere(tmp_path, capsys, smoke_cfg):
    assert parse_seeds(f"0,{SEED_LIMIT - 1}") == (0, SEED_LIMIT - 1)
    for spec in (
        "705032704,5000000000",
        f"{SEED_LIMIT}",
        f"0:{SEED_LIMIT + 1}",
        "-1,3",
        "-2:2",
        "4294967290:4294967297",
    ):
        with pytest.raises(ConfigError) as err:
            parse_seeds(spec)
        assert err.value.field == "--seeds", spec
    with pytest.raises(ConfigError, match="at most"):
        parse_seeds("10000000000")  # counted, not listed
    msg = refused(capsys, [*SMOKE, "--seeds", "705032704,5000000000"], tmp_path / "o")
    assert "5000000000" in msg and "4294967295" in msg
    # presets and Python use: SweepConfig itself (with_seeds, from_dict)
    for seeds in [(SEED_LIMIT,), (0, 2**40), (1.5,), (True,), (-1,)]:
        with pytest.raises(ConfigError, match="sweep.seeds"):
            with_seeds(smoke_cfg, seeds)
    data = json.loads(smoke_cfg.to_json())
    data["sweep"]["seeds"] = [705032704, 5000000000]
    with pytest.raises(ConfigError, match="sweep.seeds"):
        get_experiment(data["experiment"]).config_from_dict(data)
    assert with_seeds(smoke_cfg, (np.int64(3), SEED_LIMIT - 1)).sweep.n_runs == 2


def test_empty_seeds_are_refused(tmp_path, capsys):
    for spec in ("", "  "):
        with pytest.raises(ConfigError, match="empty"):
            parse_seeds(spec)
    msg = refused(capsys, [*SMOKE, "--seeds", ""], tmp_path / "o")
    assert "--seeds" in msg and "empty" in msg
    msg = refused(capsys, [*SMOKE, "--seeds", "", "--resume"], tmp_path / "o")
    assert "--seeds" in msg


# -- §4 sweeps that repeat one run ------------------------------------------------------------------
def test_a_key_swept_twice_or_set_and_swept_is_refused(tmp_path, capsys, smoke_cfg):
    msg = refused(capsys, [*SMOKE, "--sweep", "optim.lr=0.01,0.02", "--sweep", "optim.lr=0.03"], tmp_path / "o")
    assert "--sweep optim.lr" in msg and "twice" in msg
    with pytest.raises(ConfigError, match="twice"):
        apply_sweep_args(smoke_cfg, ["optim.lr=0.01", " optim.lr =0.02"])
    msg = refused(capsys, [*SMOKE, "--set", "optim.lr=0.1", "--sweep", "optim.lr=0.01,0.02"], tmp_path / "o")
    assert "--set optim.lr" in msg and "--sweep" in msg
    # a key of the preset's grid: --set is refused, --sweep replaces the preset's values
    recurrent = ["run", "icl-regression", "--preset", "recurrent"]
    msg = refused(capsys, [*recurrent, "--set", "model.n_layers=4"], tmp_path / "o")
    assert "[2, 3]" in msg and "--sweep model.n_layers=VALUE" in msg
    assert main([*recurrent, "--sweep", "model.n_layers=4", "--show-config"]) == 0
    assert re.search(r"^sweep\.grid:.* = \[\('model\.n_layers', \[4\]\)\]\s+# ", capsys.readouterr().out, re.M)
    msg = refused(capsys, [*SMOKE, "--sweep", "optim.lr=0.01,0.02,0.01"], tmp_path / "o")
    assert "0.01 is given twice" in msg


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--sweep", "optim.momentum=0.5,0.9"], "optim.momentum has no effect with optim.name='adamw'"),
        (["--sweep", "optim.warmup_steps=10,20"], "optim.warmup_steps has no effect with optim.schedule='constant'"),
        (["--sweep", "model.activation=gelu,relu"], "model.activation has no effect with model.d_mlp=0"),
        (["--sweep", "probe.knn_k=1,2"], "probe.knn_k has no effect with probe.gd_probes=False"),
        (["--set", "optim.name=sgd", "--sweep", "optim.b1=0.5,0.9"], "optim.b1 has no effect with optim.name='sgd'"),
        (["--sweep", "optim.name=sgd,adamw", "--sweep", "optim.momentum=0,0.9"], "in the program optim.name=adamw"),
        (["--sweep", "train.checkpoint_every=1,2"], "sets how the sweep runs"),
        (["--sweep", "train.micro_batch=8,16"], "sets how the sweep runs"),
    ],
)
def test_sweeping_a_key_without_effect_is_refused(tmp_path, capsys, args, why):
    msg = refused(capsys, [*SMOKE, *args], tmp_path / "o")
    assert why in msg


@pytest.mark.timeout(60)
def test_sweep_of_a_key_an_experiment_does_not_read_is_refused(tmp_path, capsys):
    base = ["run", "representation-dissimilarity", "--preset", "smoke"]
    msg = refused(capsys, [*base, "--sweep", "probe.stitch_steps=5,10"], tmp_path / "o")
    assert "analysis across the sweep's programs" in msg
    base = ["run", "steerability", "--preset", "smoke"]
    msg = refused(capsys, [*base, "--sweep", "train.eval_batch_size=64,128"], tmp_path / "o")
    assert "train.eval_batch_size has no effect" in msg


def test_set_of_a_key_without_effect_warns_once(capsys):
    assert main([*SMOKE, "--set", "optim.momentum=0.9", "--show-config"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "jaxlab: warning: --set optim.momentum changes nothing: optim.momentum has no effect with optim.name='adamw'"
    ]
    for active in ("optim.lr=0.1", "train.checkpoint_every=2", "optim.name=sgd"):
        assert main([*SMOKE, "--set", active, "--show-config"]) == 0
        assert "warning" not in capsys.readouterr().err, active
    # without effect in one program of the sweep but not in the other: no warning
    args = [*SMOKE, "--sweep", "model.n_layers=1,2", "--set", "model.tie_layers=true", "--show-config"]
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().err


def test_every_preset_is_a_valid_sweep(monkeypatch):
    """No preset sweeps a key without effect, and every preset's runs pass the size bound."""
    monkeypatch.setenv(chunking.BUDGET_ENV, "64G")
    for name, exp in registry().items():
        for preset in exp.presets:
            assert plan_groups(exp.preset(preset)), (name, preset)


# -- the no-effect rules against the code that reads the fields ------------------------------------
TINY = {"train.steps": 2, "train.eval_every": 2, "train.batch_size": 8, "train.eval_batch_size": 16}

# rule -> ((experiment, overrides where the rule holds), (value a, value b), control or None):
# the control (experiment, overrides) makes the rule's condition false, and there the two values
# must give different programs or data (so the check above it can fail).
RULE_CASES = {
    "model.activation": (("icl-regression", {}), ("gelu", "relu"), ("icl-regression", {"model.d_mlp": 8})),
    "model.attn_norm": (
        ("icl-regression", {"model.attention": "softmax"}),
        ("none", "n_keys"),
        ("icl-regression", {}),
    ),
    "model.tie_layers": (("icl-regression", {}), (False, True), ("icl-regression", {"model.n_layers": 2})),
    "model.norm_position": (
        ("icl-regression", {"model.layernorm": False}),
        ("pre", "attn_out"),
        ("icl-regression", {"model.layernorm": True}),
    ),
    "model.vocab_size": (("icl-regression", {}), (40, 50), ("latent-ambiguity", {})),
    # with continuous tokens d_input must equal the token width: two values are refused, no control
    "model.d_input": (("latent-ambiguity", {}), (3, 5), None),
    "model.max_len": (
        ("latent-ambiguity", {"model.pos_encoding": "none"}),
        (40, 50),
        ("latent-ambiguity", {"model.pos_encoding": "learned"}),
    ),
    "optim.momentum": (("icl-regression", {}), (0.0, 0.9), ("icl-regression", {"optim.name": "sgd"})),
    "optim.eps": (("icl-regression", {"optim.name": "sgd"}), (1e-8, 1e-3), ("icl-regression", {})),
    "optim.warmup_steps": (
        ("icl-regression", {}),
        (0, 5),
        ("icl-regression", {"optim.schedule": "warmup_constant"}),
    ),
    # traced: the same program either way; tested on numbers in test_traced_rules_on_numbers
    "optim.b1": None,
    "optim.b2": None,
    "train.eval_every": (
        ("icl-regression", {"train.eval_schedule": "log", "train.n_evals": 2}),
        (1, 2),
        ("icl-regression", {}),
    ),
    "train.n_evals": (
        ("icl-regression", {"train.eval_every": 1}),
        (2, 3),
        ("icl-regression", {"train.eval_schedule": "log", "train.steps": 10}),
    ),
    "probe.ridge_lambda": (("icl-regression", {}), (0.1, 0.5), None),
    "probe.ridge_matched": (("icl-regression", {}), (False, True), None),
    "probe.knn_k": (("icl-regression", {}), (1, 2), None),
    "probe.ilwd_points": (("icl-regression", {}), (6, 9), None),
    "probe.ilwd_tasks": (("icl-regression", {}), (0, 4), None),
    "probe.probe_batch_size": (("icl-regression", {}), (8, 16), None),
    "probe.ood_scales": (("icl-regression", {}), ((1.0,), (0.5, 2.0)), None),
    "train.eval_batch_size@steerability": (("steerability", {}), (16, 32), None),
    "train.eval_batch_size@instruction-clustering": (("instruction-clustering", {}), (16, 32), None),
}


def declared_rules() -> set[str]:
    """Every no-effect declaration in the code: section INERT rules and probe configs' UNREAD_KEYS."""
    out = set()
    for cls in (ModelConfig, OptimConfig, TrainConfig):
        out |= {f"{cls.section}.{r.field}" for r in cls.INERT}
    for name, exp in registry().items():
        out |= {f"probe.{r.field}" for r in exp.probe_class.INERT}
        out |= {f"{key}@{name}" for key in exp.probe_class.UNREAD_KEYS}
    return out


def test_every_declared_rule_has_a_case():
    assert declared_rules() == set(RULE_CASES)


def fingerprint(experiment: str, cfg: ExperimentConfig, with_experiment: bool = True):
    """What a run is made of: the traced init and training-interval programs (train + evaluate) with
    their constants, the concrete evaluation data and the evaluation steps. Jaxprs, not the lowered
    text: the same program either way (lowering is deterministic), without the cost of lowering.
    `with_experiment=False`: the engine's own evaluation only (enough for the model, optim and train
    fields, which experiments do not read themselves; much cheaper to trace)."""
    train = get_experiment(experiment).make_train(cfg) if with_experiment else make_train(cfg)
    hp = default_hparams(train.cfg)
    key = jax.random.key(0)
    init = program(jax.make_jaxpr(train.init)(key, hp))
    state = jax.eval_shape(train.init, key, hp)
    data = jax.jit(train.make_eval_batch)()  # one program instead of many small eager ones
    chunk = program(jax.make_jaxpr(train.chunk, static_argnums=3)(state, hp, data, 2))
    return init, chunk, arrays(data), train.eval_steps


def arrays(tree) -> list[np.ndarray]:
    """The leaves of `tree` as NumPy arrays (typed keys as their key data)."""
    leaves = jax.tree_util.tree_leaves(tree)
    is_key = lambda x: jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
    return [np.asarray(jax.random.key_data(x) if is_key(x) else x) for x in leaves]


def program(closed) -> tuple[str, list[np.ndarray]]:
    """A traced program as its text and its constants (which the text names but does not print)."""
    return str(closed.jaxpr), arrays(closed.consts)


def equal_arrays(xs: list[np.ndarray], ys: list[np.ndarray]) -> bool:
    return len(xs) == len(ys) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(xs, ys))


def same(a, b) -> bool:
    (init_a, init_consts_a), (chunk_a, chunk_consts_a), data_a, steps_a = a
    (init_b, init_consts_b), (chunk_b, chunk_consts_b), data_b, steps_b = b
    consts = equal_arrays(init_consts_a, init_consts_b) and equal_arrays(chunk_consts_a, chunk_consts_b)
    return init_a == init_b and chunk_a == chunk_b and consts and equal_arrays(data_a, data_b) and steps_a == steps_b


def configs(experiment: str, overrides: dict, key: str, values: tuple):
    base = get_experiment(experiment).preset("smoke").with_overrides({**TINY, **overrides})
    return [base.set(key, v) for v in values]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rule", sorted(k for k, v in RULE_CASES.items() if v is not None))
def test_declared_rule_gives_identical_runs(rule):
    (experiment, overrides), values, control = RULE_CASES[rule]
    key = rule.split("@")[0]
    full = key.startswith("probe.") or "@" in rule  # read by the experiment's own code
    a, b = configs(experiment, overrides, key, values)
    assert key in a.resolve().inert_keys(), "the case does not meet the rule's condition"
    assert same(fingerprint(experiment, a, full), fingerprint(experiment, b, full))
    if control is not None:
        experiment, overrides = control
        a, b = configs(experiment, overrides, key, values)
        assert key not in a.resolve().inert_keys()
        assert not same(fingerprint(experiment, a, full), fingerprint(experiment, b, full))


@pytest.mark.timeout(300)
def test_icl_probe_fields_without_gd_probes_change_neither_evaluation_nor_finalize():
    """All six fields at once (the shared rule gd_probes=False): the same program and data, and
    `finalize` gives nothing either way, whatever the state."""
    exp = get_experiment("icl-regression")
    base = exp.preset("smoke").with_overrides(TINY)
    other = base.with_overrides(
        {
            "probe.ridge_lambda": 0.7,
            "probe.knn_k": 2,
            "probe.ilwd_points": 9,
            "probe.ilwd_tasks": 4,
            "probe.probe_batch_size": 8,
            "probe.ood_scales": (3.0,),
        }
    )
    assert same(fingerprint("icl-regression", base), fingerprint("icl-regression", other))
    for cfg in (base, other):
        fin = exp.finalize(exp.make_train(cfg), None, {}, np.arange(2))
        assert fin.per_run == {} and fin.history == {} and fin.reference == {}


@pytest.mark.timeout(300)
def test_traced_rules_on_numbers(smoke_cfg):
    """optim.b1 and optim.b2 vary inside one program, so compare numbers: with sgd two values give
    identical states and losses; with adamw (the control) they do not."""
    for name, inert in (("sgd", True), ("adamw", False)):
        cfg = smoke_cfg.with_overrides({**TINY, "optim.name": name})
        train = make_train(cfg)
        run = jax.jit(train)
        hp = default_hparams(train.cfg)
        base_state, base_hist = run(jax.random.key(0), hp)
        for key, value in (("optim.b1", 0.3), ("optim.b2", 0.5)):
            assert (key in train.cfg.inert_keys()) == inert
            state, hist = run(jax.random.key(0), {**hp, key: np.float32(value)})
            equal = all(
                np.array_equal(x, y)
                for x, y in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(base_state.params))
            ) and np.array_equal(hist["eval_loss"], base_hist["eval_loss"])
            assert equal == inert, (name, key)


def test_max_len_with_sinusoidal_positions_gives_the_same_outputs():
    """The sinusoidal table's first T rows do not depend on its length (a different program, the
    same numbers); with learned positions the parameters themselves differ (the control above)."""
    base = (
        get_experiment("latent-ambiguity").preset("smoke").with_overrides({**TINY, "model.pos_encoding": "sinusoidal"})
    )
    a, b = (make_train(base.set("model.max_len", n)) for n in (40, 50))
    assert "model.max_len" in a.cfg.inert_keys()
    state = jax.jit(a.init)(jax.random.key(0))
    batch = a.sample(jax.random.key(1), 4)
    out_a, out_b = (jax.jit(t.apply)(state.params, batch.inputs) for t in (a, b))
    np.testing.assert_array_equal(out_a, out_b)
    assert dataclasses.replace(a.cfg.model, max_len=50) == b.cfg.model

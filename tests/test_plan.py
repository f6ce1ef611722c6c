"""The execution plan (`jaxlab.train.plan`): its rules against an independent computation, forcing
through `train.*`, recording, what reaches the model and the compiled step, no backend checks
below it, and `jax.export` of every experiment's smoke sweep programs for CUDA and TPU."""

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.config.sections import ATTENTION_KERNEL_CHOICES
from jaxlab.errors import ConfigError, UserError
from jaxlab.models import AttentionExecution, Transformer, init_params
from jaxlab.models.attention import ATTENTION_KERNELS
from jaxlab.models.layer_scan import unstack_blocks
from jaxlab.registry import builtin_experiments, get_experiment
from jaxlab.tasks import task_module, task_spec
from jaxlab.train import make_train, stack_hparams
from jaxlab.train.group_run import check_resume_plan
from jaxlab.train.groups import plan_groups
from jaxlab.train.hparams import default_hparams
from jaxlab.train.plan import ExecutionPlan, make_plan, recorded_plan
from jaxlab.train.programs import Programs
from jaxlab.train.sharding import Placement, run_mesh

ROOT = Path(__file__).resolve().parent.parent
L2 = 2 * 2**20  # the work budget of the rules: one core's L2 on the measured CPU


def expected_cpu_plan(cfg):
    """The documented CPU rules, computed here with plain loops."""
    cfg = cfg.resolve()
    m, t = cfg.model, cfg.train
    T, B = task_spec(cfg.task).seq_len, t.batch_size
    D, F, H, L = int(m.d_model), m.d_mlp, m.n_heads, max(m.n_layers, 1)
    seq = 4 * T * (D + F + H * T) * L  # float32 residual, MLP hidden and attention rows per layer
    divisors = [d for d in range(1, B + 1) if B % d == 0]
    fits = max(d for d in divisors if d == 1 or d * seq <= L2)
    long_enough = min(d for d in divisors if d * T >= 512 or d == B)
    micro = t.micro_batch or max(fits, long_enough)
    block = t.run_block or min(8, max(1, L2 // (micro * seq)))
    positions = getattr(task_module(cfg.task), "loss_positions", None)
    path = "keys_first"
    if positions is not None and m.attention != "positional":
        P, Dh = len(positions(cfg.task)), m.head_dim
        keys_first_flops = 2 * T * D * H * Dh + 2 * P * T * H * Dh
        query_side_flops = P * H * D * Dh + 2 * P * T * H * D
        path = "query_side" if query_side_flops < keys_first_flops else "keys_first"
    return {"micro_batch": micro, "run_block": block, "attention_path": path}


PRESETS = [("icl-regression", "smoke"), ("icl-regression", "paper"), ("latent-ambiguity", "paper"),
           ("instruction-clustering", "paper"), ("steerability", "paper"), ("icl-autoregressive", "smoke")]  # fmt: skip


@pytest.mark.parametrize(("name", "preset"), PRESETS)
def test_cpu_plan_follows_the_documented_rules(name, preset):
    cfg = get_experiment(name).preset(preset)
    plan = make_plan(cfg, backend="cpu")
    want = expected_cpu_plan(cfg)
    assert {k: getattr(plan, k) for k in want} == want
    assert (plan.backend, plan.run_layout, plan.vector_floats, plan.forced) == ("cpu", "scan", 16, ())
    assert plan.attention_kernel == "jaxlab" and plan.attention().kernel == "jaxlab"
    assert (plan.batch_size, plan.dtype) == (cfg.train.batch_size, cfg.model.dtype)


def test_measured_cases_of_the_docstrings():
    """The sizes the benchmark tables quote (jaxlab.train.microbatch, jaxlab.train.runmap)."""
    lsa = make_plan(get_experiment("icl-regression").preset("paper"), backend="cpu")
    assert (lsa.micro_batch, lsa.run_block, lsa.attention_path) == (2048, 1, "query_side")
    assert make_plan(get_experiment("latent-ambiguity").preset("paper"), backend="cpu").micro_batch == 4
    assert make_plan(get_experiment("instruction-clustering").preset("paper"), backend="cpu").micro_batch == 64


@pytest.mark.parametrize("backend", ["gpu", "cuda", "rocm", "tpu"])
def test_accelerator_plans_use_whole_batches_vmap_no_padding_and_the_fused_kernel(backend):
    """No CPU-only setting on an accelerator: the whole batch (no L2-sized micro-batch), `vmap`
    (no scan), no vector padding, and JAX's fused attention instead of jaxlab's kernel."""
    cfg = get_experiment("latent-ambiguity").preset("paper")
    plan, cpu = make_plan(cfg, backend=backend), make_plan(cfg, backend="cpu")
    B = cfg.train.batch_size
    assert cpu.micro_batch < B  # the CPU plan does choose an L2-sized micro-batch here
    assert (plan.backend, plan.run_layout, plan.micro_batch, plan.vector_floats) == (backend, "vmap", B, 0)
    assert (plan.attention_kernel, cpu.attention_kernel) == ("fused", "jaxlab")
    assert plan.attention() == AttentionExecution(plan.attention_path, 0, "fused")
    assert plan.attention_path == cpu.attention_path  # the FLOP rule holds on every backend
    assert plan.n_devices == 1  # not this process's backend: a plan for export


def test_default_backend_is_this_process(smoke_cfg):
    plan = make_plan(smoke_cfg)
    assert plan.backend == jax.default_backend() and plan.n_devices == jax.device_count()
    assert make_train(smoke_cfg).plan == plan


@pytest.mark.parametrize("backend", ["cpu", "tpu"])
def test_train_settings_force_the_plan(smoke_cfg, backend):
    cfg = smoke_cfg.with_overrides({"train.micro_batch": 8, "train.run_block": 3, "train.run_layout": "vmap"})
    plan = make_plan(cfg, backend=backend)
    assert (plan.micro_batch, plan.run_block, plan.run_layout) == (8, 3, "vmap")
    assert plan.forced == ("run_layout", "run_block", "micro_batch")
    assert make_plan(smoke_cfg.set("train.run_layout", "scan"), backend="tpu").run_layout == "scan"
    kernel = "fused" if backend == "cpu" else "jaxlab"  # the other backend's choice
    forced = make_plan(cfg, backend=backend, attention_kernel=kernel)
    assert forced.attention_kernel == kernel and forced.forced == (*plan.forced, "attention_kernel")


def test_bad_input_is_refused_with_the_field(smoke_cfg):
    plan = make_plan(smoke_cfg, backend="cpu")
    with pytest.raises(ConfigError, match="backend") as err:
        make_plan(smoke_cfg, backend="cuda12")
    assert "tpu" in str(err.value)  # the allowed values
    for change, field in [({"micro_batch": 3}, "plan.micro_batch"), ({"run_layout": "auto"}, "plan.run_layout"),
                          ({"attention_path": "fast"}, "plan.attention_path"), ({"run_block": 0}, "plan.run_block"),
                          ({"vector_floats": -1}, "plan.vector_floats"),
                          ({"attention_kernel": "cudnn"}, "plan.attention_kernel")]:  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            dataclasses.replace(plan, **change)
    with pytest.raises(ConfigError, match="n_devices"):
        make_plan(smoke_cfg, n_devices=0)
    with pytest.raises(ConfigError, match="attention_kernel") as err:
        make_plan(smoke_cfg, attention_kernel="flash")
    assert "fused" in str(err.value) and "jaxlab" in str(err.value)
    other = make_plan(smoke_cfg.set("train.batch_size", 32))
    with pytest.raises(ConfigError, match="plan.batch_size"):
        make_train(smoke_cfg, plan=other)
    with pytest.raises(TypeError, match="ExecutionPlan"):
        make_train(smoke_cfg, plan="cpu")


def test_plan_is_recorded_as_json(smoke_cfg):
    plan = make_plan(smoke_cfg.set("train.micro_batch", 16), backend="tpu")
    data = json.loads(json.dumps(make_train(smoke_cfg.set("train.micro_batch", 16), plan=plan).plan.as_dict()))
    assert data["micro_batch"] == 16 and data["forced"] == ["micro_batch"] and data["backend"] == "tpu"
    for key in (
        "run_layout",
        "run_block",
        "vector_floats",
        "attention_path",
        "attention_kernel",
        "dtype",
        "n_devices",
        "batch_size",
    ):
        assert data[key] == getattr(plan, key), key
    assert ExecutionPlan(**{**data, "forced": tuple(data["forced"])}) == plan


def test_a_plan_recorded_before_attention_kernel_reads_as_jaxlabs_kernel(smoke_cfg):
    """A layout.json plan written before `attention_kernel` was recorded: `recorded_plan` gives it the
    kernel every plan then used (`jaxlab`), so it equals this CPU plan and its resume check passes.
    `check_resume_plan` reads a stored plan through it; a changed kernel, or a field this jaxlab does not
    know, is refused naming the field."""
    now = make_plan(smoke_cfg, backend="cpu").as_dict()
    old = {k: v for k, v in json.loads(json.dumps(now)).items() if k != "attention_kernel"}
    assert recorded_plan(old) == now and now["attention_kernel"] == "jaxlab"
    check_resume_plan({"plan": recorded_plan(old)}, 0, now)
    check_resume_plan({"plan": old}, 0, now)  # the resume check reads a stored plan the same way
    with pytest.raises(UserError, match=r"attention_kernel='jaxlab' and would continue with attention_kernel='fused'"):
        check_resume_plan({"plan": old}, 0, {**now, "attention_kernel": "fused"})
    with pytest.raises(UserError, match=r"kernel_v2=1 and would continue with kernel_v2=None.*--overwrite"):
        check_resume_plan({"plan": {**now, "kernel_v2": 1}}, 0, now)  # a field this jaxlab lacks: named
    with pytest.raises(ConfigError, match="unknown recorded plan fields"):
        recorded_plan({**now, "kernel_v2": 1})


def scan_lengths(jaxpr) -> list[int]:
    """The `length` of every scan in a (closed) jaxpr, nested ones included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append(int(eqn.params["length"]))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += scan_lengths(inner)
    return out


def interval_jaxpr(train, size=2):
    programs = Programs(train, Placement(run_mesh(jax.local_devices()[:1])), 2)
    keys = list(stack_hparams(train.cfg, [{}]))
    return programs.interval_program().trace(*programs.interval_inputs(size, keys)).jaxpr.jaxpr


def test_forced_micro_batch_reaches_the_compiled_step(smoke_cfg):
    """`--set train.micro_batch=8`: the plan says 8, and the sweep's interval program scans the
    batch of 64 in 64 / 8 micro-batches (and in 4 for 16; no such scan for the whole batch)."""
    B = smoke_cfg.train.batch_size
    assert B == 64
    lengths = {}
    for micro in (8, 16, B):
        train = make_train(smoke_cfg.set("train.micro_batch", micro))
        assert train.plan.micro_batch == train.micro_batch() == micro
        lengths[micro] = scan_lengths(interval_jaxpr(train))
    assert B // 8 in lengths[8] and B // 16 in lengths[16]
    assert B // 8 not in lengths[B] and B // 16 not in lengths[B] and B // 8 not in lengths[16]


def has_pad_to(jaxpr, width: int) -> bool:
    text = str(jaxpr)
    return bool(re.search(rf"\[[0-9,]*\b{width}\] = pad", text))


def test_model_receives_the_plans_attention_choices(smoke_cfg):
    """The paper's 11-wide tokens: the CPU plan pads them to 16 on the query-side path, the TPU plan
    does not; both give the same loss. `Transformer(cfg)` alone pads nothing."""
    cfg = smoke_cfg.set("task.n_dims", 10)  # tokens of width 11
    losses = {}
    for backend, pad, kernel in (("cpu", 16, "jaxlab"), ("tpu", 0, "jaxlab")):  # linear attention: no kernel
        train = make_train(cfg, plan=make_plan(cfg, backend=backend))
        assert train.model.execution == AttentionExecution("query_side", pad, kernel)
        state = train.init(jax.random.key(0))
        batch = train.train_batch(state)
        jaxpr = jax.make_jaxpr(train.train_loss)(state.params, batch)
        assert has_pad_to(jaxpr, 16) == (pad == 16)
        losses[backend] = float(jax.jit(train.train_loss)(state.params, batch))
    assert losses["cpu"] == pytest.approx(losses["tpu"], rel=1e-6)
    assert Transformer(train.cfg.model).execution == AttentionExecution("auto", 0)


@pytest.mark.parametrize(
    "execution",
    [AttentionExecution("keys_first", 0), AttentionExecution("query_side", 0), AttentionExecution("query_side", 16),
     AttentionExecution("auto", 16)],
)  # fmt: skip
def test_every_attention_execution_gives_the_full_outputs(execution):
    """The paper's LSA layer at width 11, one query: each path (padded or not) equals the full model."""
    cfg = ModelConfig(d_model=11, d_input=11, d_output=1, max_len=9, n_heads=1, attention="linear",
                      mask="context_keys", use_bias=False, layernorm=False, readout="y_block", d_mlp=0,
                      read_in="identity")  # fmt: skip
    x = jax.random.normal(jax.random.key(1), (4, 9, 11))
    params = init_params(Transformer(cfg), jax.random.key(0), x)
    fast, plain = Transformer(cfg, execution), Transformer(cfg)
    part = lambda p: jnp.sum(fast.apply({"params": p}, x, (), (8,)) ** 2)
    full = lambda p: jnp.sum(plain.apply({"params": p}, x)[:, 8:9] ** 2)
    (v_part, g_part), (v_full, g_full) = jax.value_and_grad(part)(params), jax.value_and_grad(full)(params)
    assert float(v_part) == pytest.approx(float(v_full), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_part), jax.tree_util.tree_leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
    padded = has_pad_to(jax.make_jaxpr(part)(params), 16)
    assert padded == (execution.query_path != "keys_first" and execution.vector_floats == 16)


def test_bad_attention_execution_is_refused():
    with pytest.raises(ValueError, match="query_path"):
        AttentionExecution("fast")
    with pytest.raises(ValueError, match="vector_floats"):
        AttentionExecution("auto", -1)
    with pytest.raises(ValueError, match="kernel must be one of jaxlab, fused"):
        AttentionExecution("auto", 0, "cudnn")


def test_no_backend_checks_in_the_model_or_the_engine():
    """Only the plan reads the backend: no `default_backend` or device platform in the model, the
    engine and its run layout and micro-batch code; no `jax._src` anywhere in jaxlab."""
    files = [*sorted((ROOT / "jaxlab" / "models").glob("*.py"))]
    files += [ROOT / "jaxlab" / "train" / f for f in ("engine.py", "runmap.py", "microbatch.py", "programs.py")]
    for path in files:
        text = path.read_text()
        assert "default_backend" not in text and not re.search(r"\.platform\b", text), path
    for path in (ROOT / "jaxlab").rglob("*.py"):
        assert "jax._src" not in path.read_text(), path
    train_files = [p.name for p in (ROOT / "jaxlab" / "train").glob("*.py") if "default_backend()" in p.read_text()]
    assert train_files == ["plan.py"]


# -- jax.export of the sweep programs for other backends, on this CPU-only machine -------------------
def exported_programs(exp, cfg, platforms: tuple[str, ...]):
    """The start and interval programs of `cfg`'s sweep groups, exported for `platforms` (one lowering
    for all of them) with the plan of the first (one device, 2 runs)."""
    one = Placement(run_mesh(jax.local_devices()[:1]))
    for group in plan_groups(cfg, check=False):
        plan = make_plan(group.cfg, backend=platforms[0], n_devices=1)
        train = make_train(group.cfg, exp.make_evaluate(group.cfg), exp.eval_data, plan=plan)
        programs = Programs(train, one, 2)
        keys = list(stack_hparams(group.cfg, [{}]))
        for fn, args in ((programs.start_program(), programs.start_inputs(2, keys)),
                         (programs.interval_program(), programs.interval_inputs(2, keys))):  # fmt: skip
            yield group.cfg, plan, jax.export.export(fn, platforms=list(platforms))(*args)


FUSED_CALL = "func.func private @fused_attention"  # `jaxlab.models.fused_attention`'s jitted call


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(builtin_experiments()))
def test_smoke_sweep_programs_export_for_cuda_and_tpu(name):
    assert jax.default_backend() == "cpu"
    exp = get_experiment(name)
    cfg = exp.preset("smoke")
    for group in plan_groups(cfg, check=False):  # cuda and tpu get the same plan: one lowering serves both
        cuda, tpu = (make_plan(group.cfg, backend=b, n_devices=1).as_dict() for b in ("cuda", "tpu"))
        assert {k: v for k, v in cuda.items() if k != "backend"} == {k: v for k, v in tpu.items() if k != "backend"}
    n, fused = 0, {}
    for group_cfg, plan, exported in exported_programs(exp, cfg, ("cuda", "tpu")):
        softmax = group_cfg.model.attention == "softmax"
        kernel = "fused" if softmax else "jaxlab"  # a model without softmax attention reads no kernel
        assert (plan.backend, plan.run_layout, plan.vector_floats, plan.attention_kernel) == ("cuda", "vmap", 0, kernel)
        assert exported.platforms == ("cuda", "tpu") and exported.nr_devices == 1
        text = exported.mlir_module()
        assert "lapack_" not in text, name
        fused[softmax] = fused.get(softmax, False) or FUSED_CALL in text
        n += 1
    assert n >= 2  # start and interval of every group
    # softmax models train and evaluate through jax.nn.dot_product_attention; linear ones have no softmax
    assert fused.get(True, True) and not fused.get(False, False), fused


def test_cpu_export_does_hold_lapack_calls():
    """The check above can fail: the same programs lowered for the CPU call LAPACK (eigh)."""
    exp = get_experiment("latent-ambiguity")
    texts = [e.mlir_module() for _, _, e in exported_programs(exp, exp.preset("smoke"), ("cpu",))]
    assert any("lapack_" in t for t in texts)
    assert not any(FUSED_CALL in t for t in texts)  # and jaxlab's attention kernel, not the fused one


def test_the_plan_is_recorded_and_a_resume_under_another_plan_is_refused(tmp_path, capsys):
    """summary.json says how every program ran; layout.json keeps it, and a resume whose automatic plan
    differs (another machine, another jaxlab) is refused instead of silently changing the numbers."""
    import json

    from jaxlab.cli import main

    out = tmp_path / "r"
    args = ["run", "icl-regression", "--preset", "smoke", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    (program,) = summary["programs"]
    assert program["group"] == 0 and program["plan"]["run_layout"] in ("scan", "vmap")
    assert {"run_block", "micro_batch", "attention_path", "backend"} <= set(program["plan"])
    layout_path = out / "checkpoints" / "group-0000" / "layout.json"
    layout = json.loads(layout_path.read_text())
    assert layout["plan"] == program["plan"]
    layout["plan"]["run_block"] = layout["plan"]["run_block"] + 1
    layout_path.write_text(json.dumps(layout))
    for part in (out / "parts").glob("done-*.json"):
        part.unlink()  # the chunk is to be trained again from its checkpoint
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "execution plan run_block=" in err and "--overwrite" in err


def test_train_attention_kernel_forces_the_plans_kernel_and_names_the_same_kernels(smoke_cfg):
    assert ATTENTION_KERNEL_CHOICES == ("auto", *ATTENTION_KERNELS)
    assert make_plan(smoke_cfg, backend="cpu").attention_kernel == "jaxlab"
    forced = make_plan(smoke_cfg.set("train.attention_kernel", "fused"), backend="cpu")
    assert forced.attention_kernel == "fused" and "attention_kernel" in forced.forced
    gpu = make_plan(smoke_cfg.set("train.attention_kernel", "jaxlab"), backend="cuda")
    assert gpu.attention_kernel == "jaxlab" and "attention_kernel" in gpu.forced
    assert (
        make_plan(
            smoke_cfg.set("train.attention_kernel", "jaxlab"), backend="cuda", attention_kernel="fused"
        ).attention_kernel
        == "fused"
    )
    with pytest.raises(ConfigError, match="train.attention_kernel"):
        smoke_cfg.set("train.attention_kernel", "flash")


def test_train_scan_layers_reaches_the_model_and_gives_the_unrolled_numbers(smoke_cfg):
    """`train.scan_layers` is a plan field (execution only): the engine's model scans its blocks, and a
    training step gives the unrolled model's loss (up to float summation order)."""
    cfg = smoke_cfg.set("model.n_layers", "3")
    plain, scanned = make_train(cfg), make_train(cfg.set("train.scan_layers", "true"))
    assert not plain.plan.scan_layers and not plain.model.scan_layers
    assert scanned.plan.scan_layers and scanned.model.scan_layers and "scan_layers" in scanned.plan.forced
    assert recorded_plan({k: v for k, v in plain.plan.as_dict().items() if k != "scan_layers"}) == plain.plan.as_dict()
    key = jax.random.key(0)
    hp = default_hparams(cfg)
    a, la = plain.step(plain.init(key), hp)
    b, lb = scanned.step(scanned.init(key), hp)
    np.testing.assert_allclose(float(la), float(lb), rtol=1e-6)
    assert scanned.stacked and "blocks" in b.params  # the state holds the blocks stacked [L, ...]
    b_params = unstack_blocks(b.params, 3)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b_params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_an_accelerator_run_started_before_the_kernel_field_resumes(smoke_cfg):
    """A plan recorded before `attention_kernel` existed ran jaxlab's kernel everywhere. A linear model
    reads no kernel, so its accelerator plan records `jaxlab` and resumes as it is; a softmax model's
    resumes when `train.attention_kernel=jaxlab` forces the old kernel (`forced` is not compared)."""
    for cfg, kernel in ((smoke_cfg, "jaxlab"), (get_experiment("latent-ambiguity").preset("smoke"), "fused")):
        now = make_plan(cfg, backend="cuda").as_dict()
        assert now["attention_kernel"] == kernel
        old = {k: v for k, v in json.loads(json.dumps(now)).items() if k not in ("attention_kernel", "scan_layers")}
        old["forced"] = []
        if kernel == "jaxlab":
            check_resume_plan({"plan": old}, 0, now)
            continue
        with pytest.raises(
            UserError, match=r"attention_kernel='jaxlab' and would continue with attention_kernel='fused'"
        ):
            check_resume_plan({"plan": old}, 0, now)
        forced = make_plan(cfg.set("train.attention_kernel", "jaxlab"), backend="cuda").as_dict()
        assert forced["forced"] == ["attention_kernel"] or forced["forced"] == ("attention_kernel",)
        check_resume_plan({"plan": old}, 0, forced)

"""The command line: `jaxlab list | run | report | bench`.

Exit status 0 on success, 2 on a user error (one message on stderr, no traceback), 1 on an
internal error, 130 / 143 when `jaxlab run` was stopped by SIGINT / SIGTERM (after a checkpoint
of the current state; the message gives the `--resume` command, `jaxlab.interrupt`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxlab._version import __version__
from jaxlab.errors import ConfigError, UserError, environment_error
from jaxlab.hostdevices import ENV as CPU_DEVICES_ENV
from jaxlab.interrupt import Interrupted
from jaxlab.trackers import TRACKERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxlab", description="Small-transformer experiments, many runs at once.")
    p.add_argument("--version", action="version", version=f"jaxlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,run,report,bench}")

    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py:NAME",
        help="load an experiment or task defined outside jaxlab (path/to/file.py:NAME or package.module:NAME)",
    )
    sub.add_parser("list", help="experiments and their presets", parents=[plugin])

    r = sub.add_parser("run", help="train and probe a sweep of an experiment", parents=[plugin])
    r.add_argument("experiment", help="a name from `jaxlab list`, or path/to/file.py:NAME / package.module:NAME")
    r.add_argument("--preset", help="preset name (see `jaxlab list`; default: the experiment's default)")
    r.add_argument("--seeds", help="N (seeds 0..N-1), a list 3,7,9, or a range 0:64")
    r.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help="grid over a config key")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    r.add_argument("--out", metavar="DIR", help="output directory (required, except with --show-config)")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    r.add_argument("--quiet", action="store_true", help="one log line per chunk instead of a progress bar")
    r.add_argument(
        "--log",
        action="append",
        default=[],
        choices=TRACKERS,
        help="also write every evaluation to a tracker as the sweep runs (tensorboard: DIR/tensorboard/; "
        "wandb: DIR/wandb/, offline unless WANDB_MODE says otherwise)",
    )
    r.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    d = r.add_argument_group(
        "several hosts",
        "start JAX's distributed runtime; on Cloud TPU, Slurm and Open MPI --distributed alone suffices "
        "(see scripts/); --out must be on a file system every process sees",
    )
    d.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
    d.add_argument("--num-processes", type=int, metavar="N", help="number of processes (implies --distributed)")
    d.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1 (implies --distributed)")

    rep = sub.add_parser("report", help="(re)write report.md and figures of a run directory", parents=[plugin])
    rep.add_argument("dir")

    from jaxlab.bench import registry

    b = sub.add_parser("bench", help="throughput benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    for name, module in registry().items():
        module.add_arguments(bsub.add_parser(name, help=module.HELP))
    return p


def load_plugins(args: argparse.Namespace) -> None:
    """Load every `--plugin` (jaxlab.registry.load_plugin), so their names are known."""
    from jaxlab.registry import load_plugin

    for spec in getattr(args, "plugin", []):
        load_plugin(spec)


def cmd_list(args: argparse.Namespace) -> int:
    """`jaxlab list`: every known experiment (plug-ins after `--plugin`), its description and presets; 0."""
    from jaxlab.registry import builtin_experiments, experiments

    load_plugins(args)
    builtin = builtin_experiments()
    for name, exp in experiments().items():
        presets = ", ".join(f"{p}{' (default)' if p == exp.default_preset else ''}" for p in exp.presets)
        origin = "" if name in builtin and builtin[name] is exp else "  (plug-in)"
        print(f"{name}{origin}\n    {exp.description}\n    presets: {presets}")
    return 0


def build_config(args: argparse.Namespace):
    """(experiment, config) from the preset and the command-line overrides, validated."""
    from jaxlab.config import apply_sweep_args, parse_assignment, parse_seeds
    from jaxlab.registry import get_experiment
    from jaxlab.train.groups import plan_groups, with_seeds

    exp = get_experiment(args.experiment)
    cfg = exp.preset(args.preset)
    assignments = [parse_assignment(item, "--set") for item in args.set]
    cfg = cfg.with_overrides(dict(assignments))  # together: their order does not matter (the last of a key wins)
    set_keys = [key for key, _ in assignments]
    if args.seeds is not None:  # `--seeds ''` is refused, not read as "the preset's seeds"
        cfg = with_seeds(cfg, parse_seeds(args.seeds))
    cfg = apply_sweep_args(cfg, args.sweep)
    refuse_set_and_swept(cfg, set_keys, [parse_assignment(item, "--sweep")[0] for item in args.sweep])
    groups = plan_groups(cfg)  # resolves and validates every program of the sweep
    inert = [g.cfg.inert_keys() for g in groups]
    for key in dict.fromkeys(set_keys):
        if all(key in keys for keys in inert):  # no effect in any program of the sweep
            print(f"jaxlab: warning: --set {key} changes nothing: {inert[0][key]}", file=sys.stderr)
    return exp, cfg


def refuse_set_and_swept(cfg, set_keys: Sequence[str], flag_sweeps: Sequence[str]) -> None:
    """A key given by `--set` and swept (by `--sweep` or the preset's grid): every point of the
    sweep would silently override the `--set` value, so refuse and say how to get one value."""
    grid = dict(cfg.sweep.grid)
    for key in set_keys:
        if key not in grid:
            continue
        if key in flag_sweeps:
            raise ConfigError(f"--set {key}", "is also swept by --sweep, whose values replace it; drop one of the two")
        raise ConfigError(
            f"--set {key}",
            f"the preset sweeps it over {list(grid[key])}, which would replace the --set value; "
            f"to run one value, replace the preset's grid with --sweep {key}=VALUE",
        )


def stored_config(out: Path):
    """(experiment, config) of the run in `out`."""
    from jaxlab.registry import read_run_config

    return read_run_config(out)


def start_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize()` before anything touches a device, when asked to."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(x is not None for x in explicit):
        from jaxlab.train.distributed import initialize

        initialize(*explicit)


def cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """`jaxlab run`: print the config (`--show-config`), or run the sweep into `--out` (fresh, `--resume`
    or `--overwrite`) and print its summary line. 0, or the exit status of a stopping signal.
    """
    from jaxlab.train.groups import plan_groups
    from jaxlab.train.sweep import run_sweep

    load_plugins(args)
    if not args.show_config:
        start_distributed(args)
    given = bool(args.preset is not None or args.set or args.sweep or args.seeds is not None)
    if args.resume and args.out and not given and (Path(args.out) / "config.json").exists():
        from jaxlab.registry import get_experiment

        named = get_experiment(args.experiment)  # a plug-in file is loaded here, before its config is read
        exp, cfg = stored_config(Path(args.out))
        if exp is not named:
            raise UserError(f"--resume: {args.out} holds a {cfg.experiment!r} run, not {named.name!r}")
    else:
        exp, cfg = build_config(args)
    if args.show_config:
        print(show_config(cfg, plan_groups(cfg)))
        return 0
    if not args.out:
        raise UserError("--out: required (the directory to write the run to)")
    command = "jaxlab " + " ".join(shlex.quote(a) for a in argv)
    import jax

    try:
        result = run_sweep(
            exp,
            cfg,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            quiet=args.quiet,
            command=command,
            log=args.log,
        )
    except Interrupted as err:
        if jax.process_index() == 0:
            if (Path(args.out) / "config.json").exists():
                then = f"continue with: {resume_command(args)}"
            else:  # a fresh run stopped before it started leaves nothing (jaxlab.train.replace)
                then = "nothing of this run was kept; run the same command again to start it"
            print(f"jaxlab: {err}; {then}", file=sys.stderr)
        return err.exit_status
    s = result.summary
    n_div = sum(r["status"] != "ok" for r in s["runs"])
    if jax.process_index() != 0:
        return 0
    print(f"{s['n_runs']} runs ({n_div} diverged) in {s['wall_s']:.1f} s; report: {Path(args.out) / 'report.md'}")
    return 0


# column widths of `show_config`: wider types and values push their line's comment to the right
_TYPE_WIDTH, _VALUE_WIDTH = 17, 20


def show_config(cfg, groups) -> str:
    """The text of `--show-config`: every key of every program (`groups`, from `plan_groups(cfg)`),
    then the sweep's, one per line as `key: type = value  # meaning; one of: allowed values`
    (`ExperimentConfig.describe`), in aligned columns."""
    blocks = [(f"# program {g.index}: {g.label}" if g.label else None, g.cfg.describe()) for g in groups]
    blocks.append((None, cfg.describe(("sweep",))))
    docs = [d for _, block in blocks for d in block]
    key_w = max(len(d.key) for d in docs) + 1
    type_w = min(max(len(d.type) for d in docs), _TYPE_WIDTH)
    value_w = min(max(len(_value_text(d)) for d in docs), _VALUE_WIDTH)
    lines = []
    for header, block in blocks:
        if header:
            lines.append(header)
        for d in block:
            meaning = d.meaning or "(no description: add one to the section's FIELD_DOCS)"
            if d.choices is not None:
                meaning += "; one of: " + ", ".join(str(c) for c in d.choices)
            head = f"{d.key + ':':<{key_w}} {d.type:<{type_w}} = {_value_text(d):<{value_w}}"
            lines.append(f"{head}  # {meaning}")
    return "\n".join(lines)


def _value_text(doc) -> str:
    if doc.key == "sweep.seeds":
        return str(list(doc.value))
    if doc.key == "sweep.grid":
        return str([(k, list(v)) for k, v in doc.value])
    return repr(doc.value)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues the run of `args` (its stored config; the same devices)."""
    words = ["jaxlab", "run", args.experiment, "--out", args.out, "--resume"]
    if args.quiet:
        words.append("--quiet")
    if args.distributed:
        words.append("--distributed")
    for flag, value in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes)):
        if value is not None:
            words += [flag, str(value)]
    if args.process_id is not None:
        words += ["--process-id", "I"]
    devices = os.environ.get(CPU_DEVICES_ENV, "").strip()
    prefix = f"{CPU_DEVICES_ENV}={shlex.quote(devices)} " if devices else ""
    return prefix + " ".join(shlex.quote(w) for w in words)


def cmd_report(args: argparse.Namespace) -> int:
    """`jaxlab report DIR`: rewrite the run directory's report.md and figures (holding its lock); 0."""
    from jaxlab.report import write_report
    from jaxlab.train.lock import RunLock

    load_plugins(args)
    run_dir = Path(args.dir)
    if not run_dir.is_dir():
        print(write_report(run_dir))  # says what is missing
        return 0
    with RunLock.acquire(run_dir, f"jaxlab report {shlex.quote(args.dir)}"):  # a writer, like a run
        print(write_report(run_dir))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse `argv` (default `sys.argv[1:]`), run the command, return the exit status
    (0 success, 2 a user or environment error, reported in one line, 130 on Ctrl-C).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args)
        from jaxlab.hostdevices import use_cpu_cores

        use_cpu_cores()  # before JAX starts its CPU backend
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "report":
            return cmd_report(args)
        from jaxlab.bench import registry

        return registry()[args.bench].main(args)
    except UserError as err:
        print(f"jaxlab: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # a full disk, a read-only or unreadable path, possibly wrapped by a library (orbax,
        # matplotlib): the machine's fault, not jaxlab's, so one line and exit 2; others propagate
        storage = environment_error(err)
        if storage is None:
            raise
        print(f"jaxlab: error: {storage}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

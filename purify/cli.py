"""Command line: ``purify simulate``, ``analyze``, ``plot``, ``info``, ``experiment``, ``sweep``, ``sweep-plot``.

Thin runners in the style of msprime: :func:`main` takes ``argv`` so tests call it
directly; each subcommand parses, validates everything before any work, calls the library
and prints.  Bad input ends with one line ``purify: error: ...`` and exit code 2.

Exit codes: 0 done; 1 a failure during the work (divergence, a write that failed: disk full,
I/O error), with the store kept at its last good state; 2 bad input or an unusable folder or
store (missing, foreign, damaged, in use, unwritable), nothing done; 130 interrupted.
Every command that reads a store checks it first (`purify.store.verify_run`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from purify.registry import ANALYSES, ATTACKERS

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input; printed as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and never a traceback."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


INT = _number(int, "an integer")
FLOAT = _number(float, "a number")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _levels(text: str) -> tuple[tuple[float, float], ...]:
    """``MAG:PROB,MAG:PROB`` → ((MAG, PROB), ...)."""
    try:
        return tuple(tuple(float(v) for v in item.split(":")) for item in text.split(",") if item)  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of MAGNITUDE:PROBABILITY") from None


# (flag, config section, field, parser, help) — one row per simulate option.
OPTIONS: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--d", "data", "d", INT, "input dimension d (default 1000)"),
    ("--k", "data", "k", INT, "sparsity k: |z_i| in {0, 1/sqrt(k), 1} (default 60)"),
    ("--dictionary", "data", "dictionary", str, "identity | orthogonal | overcomplete (default orthogonal)"),
    ("--n-features", "data", "n_features", INT, "dictionary atoms D (default d; 2d if overcomplete)"),
    ("--p-one", "data", "p_one", FLOAT, "Pr[|z_i| = 1] (default 2/D)"),
    ("--p-small", "data", "p_small", FLOAT, "Pr[|z_i| = 1/sqrt(k)] (default k/D)"),
    ("--extra-levels", "data", "extra_levels", _levels, "more |z_i| levels as MAG:PROB,MAG:PROB"),
    ("--sigma-x", "data", "sigma_x", FLOAT, "Gaussian noise level sigma_x (default 0.1)"),
    ("--spike-level", "data", "spike_level", FLOAT, "spike noise magnitude (default 1/k^0.501)"),
    ("--spike-prob", "data", "spike_prob", FLOAT, "spike noise probability (default sigma_x^2/(D level^2))"),
    ("--n-train", "data", "n_train", INT, "fixed training set size N (default: fresh samples every step)"),
    ("--n-test", "data", "n_test", INT, "held-out examples (default 2000)"),
    ("--m", "net", "width", INT, "width m (default 2d)"),
    ("--sigma0", "net", "sigma0", FLOAT, "init scale sigma_0 (default 1/d)"),
    ("--activation", "net", "activation", str, "smooth | noisy (default smooth)"),
    ("--bias-schedule", "net", "bias_schedule", str, "norm | paper (default norm; see README)"),
    ("--r-start", "net", "r_start", FLOAT, "norm schedule: initial r (default 1.5)"),
    ("--r-end", "net", "r_end", FLOAT, "norm schedule: final r (default 0.6)"),
    ("--r-decay-fraction", "net", "r_decay_fraction", FLOAT, "norm schedule: decay over this fraction of clean steps (0.7)"),
    ("--c-b", "net", "c_b", FLOAT, "paper schedule: bias growth c_b (default 1)"),
    ("--sigma-rho-ratio", "net", "sigma_rho_ratio", FLOAT, "sigma_rho / b (default 0.05 norm, 1/sqrt(log d) paper)"),
    ("--lam", "net", "lam", FLOAT, "regularizer weight (default 0 norm, logloglog(d)/d paper)"),
    ("--clean-steps", "train", "clean_steps", INT, "clean training steps (default 4d)"),
    ("--adv-steps", "train", "adv_steps", INT, "adversarial training steps (default clean/5; clean/2 with --preset purification)"),
    ("--lr", "train", "lr", FLOAT, "clean learning rate (default 1.0)"),
    ("--adv-lr", "train", "adv_lr", FLOAT, "adversarial learning rate (default lr/2)"),
    ("--batch-size", "train", "batch_size", INT, "batch size (default 512)"),
    ("--adv-attack", "train", "adv_attack", str, f"attacker of adversarial training: {' | '.join(ATTACKERS.where(trains=True))} (default fgm)"),
    ("--adv-norm", "train", "adv_norm", str, "l2 | linf (default l2)"),
    ("--adv-tau", "train", "adv_tau", FLOAT, "training radius (default: the evaluation radius)"),
    ("--adv-pgd-steps", "train", "adv_pgd_steps", INT, "PGD steps in training (default 3)"),
    ("--adv-init", "train", "adv_init", str, "clean | random: start of adversarial training (default clean)"),
    ("--adv-bias", "train", "adv_bias", str, "radius | clean | norm: biases of adversarial training: raised to b_i >= tau ||w_i||_q, the clean ones, or b_i/||w_i|| kept (default: the preset's)"),
    ("--clean-snapshots", "train", "clean_snapshots", INT, "evaluations + weight snapshots in clean training, init and end included (default 8)"),
    ("--adv-snapshots", "train", "adv_snapshots", INT, "evaluations + weight snapshots in adversarial training (default 4)"),
    ("--log-points", "train", "log_points", INT, "loss log points per phase (default 100)"),
    ("--tau", "eval", "tau", FLOAT, "l2 evaluation radius (default 1/sqrt(k); 0.5/sqrt(k) with --preset purification)"),
    ("--tau-linf", "eval", "tau_linf", FLOAT, "linf evaluation radius (default tau/sqrt(d))"),
    ("--radii", "eval", "radii", _float_list, "radius grid as multiples of tau (default 0.25,0.5,1,1.5,2)"),
    ("--norms", "eval", "norms", _str_list, "norms to evaluate (default l2,linf)"),
    ("--attacks", "eval", "attacks", _str_list, f"attackers to evaluate, any of {','.join(ATTACKERS.where(tier='cheap'))} (default all)"),
    ("--pgd-steps", "eval", "pgd_steps", INT, "PGD steps in evaluation (default 10)"),
    ("--pgd-restarts", "eval", "pgd_restarts", INT, "PGD restarts in evaluation (default 1)"),
    ("--pgd-rel-step", "eval", "pgd_rel_step", FLOAT, "PGD step size / tau (default 2.5/steps)"),
    ("--n-eval", "eval", "n_eval", INT, "held-out examples attacked per evaluation (default 500)"),
    ("--eval-attack", "eval", "strength", str, "end-of-phase evaluation: fast | standard | strong (default standard)"),
]


def _dest(flag: str) -> str:
    return "opt_" + flag.lstrip("-").replace("-", "_")


def build_parser() -> _Parser:
    parser = _Parser(prog="purify", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="clean then adversarial training, evaluated and stored")
    for flag, _, _, kind, help_text in OPTIONS:
        sim.add_argument(flag, dest=_dest(flag), type=kind, default=None, help=help_text)
    sim.add_argument("--config", type=Path, help="TOML or JSON file with [data] [net] [train] [eval] tables; "
                     "command-line options override it")
    sim.add_argument("--seed", type=INT, default=None, help="root seed (default: drawn and recorded)")
    sim.add_argument("--problem-seed", type=INT, default=None,
                     help="seed of the dictionary, teacher and held-out set (default: --seed); runs sharing it "
                          "differ only in init and training noise, e.g. for purify analyze --transfer-from")
    sim.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default cpu)")
    sim.add_argument("--preset", default=None,
                     help="boundary | purification: defaults of the radius and of adversarial training "
                          "(default purification; see README 'Purification or thresholding?')")
    sim.add_argument("--out", type=Path, default=None, help="run folder (default runs/d{d}-k{k}-seed{seed})")
    sim.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    sim.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    sim.add_argument("--dry-run", action="store_true",
                     help="print the derived config and the estimated memory and store size, then exit")
    sim.add_argument("--no-analysis", action="store_true",
                     help="skip the per-neuron analyses and figures (purify analyze / plot do them later)")

    ana = sub.add_parser("analyze", help="compute the per-neuron analyses a run is missing")
    ana.add_argument("run", type=Path, help="run folder")
    ana.add_argument("--force", action="store_true", help="recompute analyses already stored")
    ana.add_argument("--only", type=_str_list, default=None, help=f"comma-separated analyses, any of {','.join(ANALYSES)} (default all)")
    ana.add_argument("--transfer-from", type=Path, action="append", default=[],
                     help="another run of the same problem, for the transfer analysis (repeatable)")

    plot = sub.add_parser("plot", help="draw a run's figures into RUN/figures")
    plot.add_argument("run", type=Path, help="run folder")
    plot.add_argument("--pdf", action="store_true", help="also write PDF files")

    exp = sub.add_parser("experiment", help="reproduce a companion paper's experiment (--list names them)")
    exp.add_argument("name", nargs="?", default=None, help="experiment name (see --list)")
    exp.add_argument("--list", action="store_true", help="list the experiments and exit")
    exp.add_argument("--quick", action="store_true", help="small grids, at most ~90 s on 2 cores")
    exp.add_argument("--seed", type=INT, default=0, help="root seed (default 0)")
    exp.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    exp.add_argument("--out", type=Path, default=None,
                     help="output folder (default runs/experiments/NAME, NAME-quick with --quick)")
    exp.add_argument("--overwrite", action="store_true", help="replace the experiment in --out")
    exp.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="print a stored run's config and summary")
    info.add_argument("run", type=Path, help="run folder")
    info.add_argument("--json", action="store_true", help="print the summary as JSON only")
    _add_sweep_parsers(sub)
    return parser


def _load_config_file(path: Path) -> dict[str, Any]:
    from purify.config import read_table_file

    return read_table_file(path, "--config")


def config_from_args(args: argparse.Namespace):
    """The (unresolved) :class:`RunConfig` described by the config file and options."""
    from purify.config import RunConfig

    raw: dict[str, Any] = _load_config_file(args.config) if args.config else {}
    for flag, section, name, _, _ in OPTIONS:
        value = getattr(args, _dest(flag))
        if value is not None:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise UsageError(f"invalid {section} in --config: must be a table")
            table[name] = value
    if args.seed is not None:
        raw["seed"] = args.seed
    if args.problem_seed is not None:
        raw["problem_seed"] = args.problem_seed
    if args.device is not None:
        raw["device"] = args.device
    if args.preset is not None:
        raw["preset"] = args.preset
    return RunConfig.from_dict(raw)


def _fresh_start_config(args: argparse.Namespace, given: list[str], stored: str | None):
    """The config of a run that --resume starts afresh (see `cmd_simulate`)."""
    from purify.config import ConfigError, RunConfig

    if given:
        return config_from_args(args).resolve()
    if stored is None:
        raise UsageError(f"{args.out} holds no run yet (it was interrupted while being created, before "
                         f"anything was computed); start it with: purify simulate --out {args.out} "
                         "and the run's options")
    try:
        return RunConfig.from_json(stored).resolve()
    except (TypeError, ValueError, ConfigError) as e:
        raise UsageError(f"{args.out} holds no run yet and the config its half-created store recorded is "
                         f"unreadable ({type(e).__name__}); start it with: purify simulate --out {args.out} "
                         "--overwrite and the run's options") from None


def _check_resumable(run: Path) -> None:
    """Refuse to resume a store whose config disagrees with its arrays (see `_checked_run`);
    other problems (no store, damage) are left to `purify.simulate.simulate` to report."""
    from purify import store as S
    from purify.config import ConfigError, RunConfig

    try:
        config = RunConfig.from_json(S.read_attrs(run)["config_json"])
    except (S.StoreError, KeyError, TypeError, ValueError, RecursionError, ConfigError):
        return
    try:
        _check_config_matches_store(run, config)
    except S.StoreError as e:
        raise UsageError(str(e)) from None


def _check_path(path: Path, flag: str) -> None:
    """Refuse a path the file system cannot even look up (a name too long, a file used as a
    folder, no permission to search a parent, a NUL byte): one line naming the path."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-40:]}"
        raise UsageError(f"cannot use {flag} {shown}: {e.strerror or type(e).__name__}") from None
    except ValueError as e:  # embedded NUL byte
        raise UsageError(f"cannot use {flag} {str(path)!r}: {e}") from None


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"invalid --device={device}: CUDA is not available on this machine (use cpu)")


def _describe(config) -> str:
    d, n, t, e = config.data, config.net, config.train, config.eval
    return (f"d={d.d} k={d.k} D={d.n_features} dictionary={d.dictionary} "
            f"p_one={d.p_one:.3g} p_small={d.p_small:.3g} sigma_x={d.sigma_x:g} | "
            f"m={n.width} sigma0={n.sigma0:.3g} bias={n.bias_schedule} lam={n.lam:.3g} | "
            f"steps clean={t.clean_steps} adv={t.adv_steps} lr={t.lr:g} adv_lr={t.adv_lr:g} "
            f"batch={t.batch_size} adv={t.adv_attack}/{t.adv_norm} tau_train={t.adv_tau:.4g} "
            f"adv_bias={t.adv_bias} | "
            f"tau_l2={e.tau:.4g} tau_linf={e.tau_linf:.4g} eval-attack={e.strength} preset={config.preset} seed={config.seed}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.config import TheoryWarning
    from purify.simulate import Stopped, simulate
    from purify.threads import configure_threads
    from purify.train import DivergenceError

    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite cannot be combined")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN (the run folder to continue)")
        _check_path(args.out, "--out")
        given = [flag for flag, *_ in OPTIONS if getattr(args, _dest(flag)) is not None]
        given += [flag for flag in ("--config", "--seed", "--problem-seed", "--device")
                  if getattr(args, flag[2:].replace("-", "_")) is not None]
        fresh, stored = S.creation_interrupted(args.out)
        if fresh:
            # Killed while it was being created: nothing was computed, so --resume starts it,
            # with the options given or the config its half-created store recorded.
            config = _fresh_start_config(args, given, stored)
            _check_device(config.device)
        elif given:
            raise UsageError(f"--resume continues the stored run with its own config; drop {given[0]}")
        else:
            config = None
            _check_resumable(args.out)
    else:
        config = config_from_args(args).resolve()
        _check_device(config.device)
    out = args.out or Path("runs") / f"d{config.data.d}-k{config.data.k}-seed{config.seed}"
    _check_path(out, "--out")
    if config is not None:
        from purify.resources import check_fits

        given = {flag[2:].replace("-", "_") for flag, *_ in OPTIONS if getattr(args, _dest(flag)) is not None}
        estimate = check_fits(config, out, given=given)
        if args.dry_run:
            print(f"purify simulate: {_describe(config)}")
            for note in config.theory_warnings():
                print(f"warning: {note}")
            print(estimate.describe())
            print(f"run folder: {out} (nothing written: --dry-run)")
            return 0
    elif args.dry_run:
        raise UsageError("--dry-run describes a new run; it cannot be combined with --resume")
    if args.resume and config is not None:
        print(f"purify: {out} was interrupted while it was being created (nothing was computed): "
              "starting it", file=sys.stderr)

    threads = configure_threads(stored=_stored_threads(out) if args.resume else None)

    def announce(resolved) -> None:
        # Printed only once the folder is accepted, so a refused run prints its one error line.
        for note in resolved.theory_warnings():
            print(f"purify: warning: {note}", file=sys.stderr)
        print(f"purify simulate: {_describe(resolved)} | {threads.describe()}", file=sys.stderr)
        print(f"run folder: {_printable(str(out))}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TheoryWarning)
            summary = simulate(config, out, resume=args.resume, overwrite=args.overwrite,
                               progress=not args.quiet, on_start=announce)
    except S.StoreWriteError as e:
        print(f"purify: error: {e}; fix the cause (e.g. free disk space), then resume with: "
              f"purify simulate --out {out} --resume", file=sys.stderr)
        return EXIT_FAILED
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    except DivergenceError as e:
        print(f"purify: error: {e}; the store at {out} is marked failed", file=sys.stderr)
        return EXIT_FAILED
    except Stopped as e:
        print(f"purify: stopped after step {e.step}; resume with: purify simulate --out {out} --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_format_stored_summary(summary, out))
    print(f"store: {S.store_path(out)}")
    if not args.no_analysis:
        try:
            _analyze_and_plot(out)
        except Exception as e:  # the run itself is complete and stored: say so, in one line
            print(f"purify: error: analysis failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                  f"the run is complete; retry with: purify analyze {out}", file=sys.stderr)
            return EXIT_FAILED
    return 0


def _stored_threads(out: Path) -> int | None:
    """The torch threads a run to resume was started with (None if unreadable: simulate says why)."""
    from purify import store as S

    try:
        return S.read_attrs(out).get("torch_threads")
    except (S.StoreError, OSError, ValueError):
        return None


def _analyze_and_plot(out: Path) -> None:
    """The analyses and figures of a finished run; a failure here leaves the run intact."""
    from purify import store as S
    from purify.analysis import analyze
    from purify.plots import plot_run

    with S.RunLock(S.run_dir(out)):
        costs = analyze(out, log=lambda msg: print(msg, file=sys.stderr))
    if costs:
        print("analyses: " + ", ".join(f"{n} ({t:.1f} s)" for n, t in costs.items()))
    paths = plot_run(out)
    if paths:
        print(f"figures: {paths[0].parent}")


def _json_safe(value: Any) -> Any:
    """NaN/inf (values an unfinished run has not written yet) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _experiment_info(args: argparse.Namespace, attrs: dict) -> int:
    """``purify info`` on an experiment folder: its claims table (JSON) or its summary.md."""
    from purify import store as S

    if attrs.get("status") != "complete":
        raise UsageError(f"experiment at {S.run_dir(args.run)} is not complete (status: {attrs.get('status')})")
    if args.json:
        keep = ("experiment", "quick", "seed", "device", "elapsed_seconds")
        out = {k: attrs.get(k) for k in keep} | {
            "params": json.loads(attrs["params_json"]), "claims": json.loads(attrs["claims_json"])}
        print(json.dumps(_json_safe(out), indent=2, allow_nan=False))
        return 0
    from purify.experiments.framework import SUMMARY_NAME

    summary = S.run_dir(args.run) / SUMMARY_NAME
    try:
        print(summary.read_text(), end="")
    except OSError as e:
        raise UsageError(f"cannot read {summary}: {e.strerror or e}") from None
    return 0


def _checked_run(run: Path) -> dict[str, Any]:
    """Check a store before a reading command uses it: format, manifest, every chunk,
    completion state and (for a run) a readable config. Returns its root attributes."""
    from purify import store as S
    from purify.config import ConfigError, RunConfig

    _check_path(run, "run folder")
    attrs = S.verify_run(run)
    note = S.integrity_note(attrs)
    if note is not None:
        print(f"purify: note: {note}", file=sys.stderr)
    if attrs.get("kind") != "experiment":
        try:
            config = RunConfig.from_json(attrs["config_json"])
        except (KeyError, TypeError, ValueError, RecursionError, ConfigError) as e:
            raise S.StoreError(f"{S.store_path(run)} has no readable run config "
                               f"({type(e).__name__}); the store is damaged") from e
        _check_config_matches_store(run, config)
    return attrs


def _check_config_matches_store(run: Path, config) -> None:
    """Refuse a store whose config disagrees with its arrays (an edited ``config_json``: step
    counts, width, radii...), which the analyses and plots would index out of place."""
    import numpy as np

    from purify import store as S
    from purify.train import Timeline

    root = S.open_run(run)
    snapshots = S.open_run(run, "snapshots") if S.has_group(run, "snapshots") else None
    ev, problems = config.eval, []
    try:
        # Where evaluations fall may change between purify versions; these never have: step 0,
        # the end of clean training and the last step are evaluated, the last step is logged.
        tc, total = config.train.clean_steps, Timeline.from_config(config).total
        steps, logged = root["step"].values, root["iteration"].values
        if not (steps[0] == 0 and steps[-1] == total and tc in steps and logged[-1] == total):
            problems.append(f"its steps (evaluated up to {steps[-1]}, logged up to {logged[-1]}) differ from "
                            f"its config's clean_steps={tc} and adv_steps={config.train.adv_steps}")
        for name, want in (("norm", list(ev.norms)), ("attack", list(ev.attacks))):
            if [str(v) for v in root[name].values] != want:
                problems.append(f"its {name} coordinate differs from its config's {name}s")
        if not np.array_equal(root["radius"].values, np.asarray(ev.radii, dtype=np.float64)):
            problems.append("its radius coordinate differs from its config's radii")
        for group, ds, known in (("root", root, {"step", "iteration", "norm", "attack", "radius"}),
                                 ("snapshots", snapshots, {"step", "neuron", "input"})):
            extra = sorted(map(str, set(ds.dims) - known)) if ds is not None else []
            if extra:
                problems.append(f"its {group} arrays have unknown dimensions {extra} (edited dimension names)")
        if snapshots is not None and tuple(snapshots["W"].shape[1:]) != (config.net.width, config.data.d):
            problems.append(f"its weight snapshots have shape {tuple(snapshots['W'].shape[1:])}, its config "
                            f"says m={config.net.width}, d={config.data.d}")
    except (KeyError, ValueError, TypeError, IndexError) as e:
        problems.append(f"its arrays do not have the layout of a run ({type(e).__name__})")
    if problems:
        raise S.StoreError(f"{S.store_path(run)} does not match its own config: {problems[0]}; its config_json "
                           f"or arrays were edited; purify simulate --out {S.run_dir(run)} --overwrite re-runs it")


def _fail_during_work(what: str, e: Exception, retry: str) -> int:
    """A write (or read) that failed part-way: one line, exit 1; earlier results are kept."""
    text = getattr(e, "strerror", None) or " ".join(str(e).split())[:200]
    print(f"purify: error: {what}: {text}; what was stored before is intact; retry with: {retry}",
          file=sys.stderr)
    return EXIT_FAILED


def cmd_info(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.summary import summarize

    try:
        attrs = _checked_run(args.run)
        if attrs.get("kind") == "experiment":
            return _experiment_info(args, attrs)
        S.open_run(args.run)
        summary = summarize(args.run, allow_running=True)
    except S.StoreError as e:
        fresh, stored = S.creation_interrupted(args.run) if args.run.is_dir() else (False, None)
        if fresh:
            options = "" if stored is not None else " and the run's options"
            raise UsageError(f"{args.run} holds no run yet: nothing was computed (an empty folder, or a run "
                             f"interrupted while it was being created); start it with: purify simulate "
                             f"--out {args.run} --resume{options}") from None
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
        return 0
    config = json.loads(attrs["config_json"])
    status, folder = attrs.get("status"), S.run_dir(args.run)
    line = f"run: {folder}  status: {status} {attrs.get('status_reason', '')}".rstrip()
    if status == "stopped" or (status == "running" and S.writer_pid(args.run) is None):
        note = "" if status == "stopped" else "no process is writing it; "
        line += f" ({note}resume with: purify simulate --out {folder} --resume)"
    print(line)
    train = config.get("train", {})
    print(f"completed step: {attrs.get('completed_step')} of "
          f"{train.get('clean_steps', 0) + train.get('adv_steps', 0)} (the last checkpoint)")
    print(f"seed: {attrs.get('seed')}  purify {attrs.get('purify_version')}  torch {attrs.get('torch_version')}")
    for section in ("data", "net", "train", "eval"):
        items = " ".join(f"{k}={v}" for k, v in config[section].items())
        print(f"[{section}] {items}")
    print(_format_stored_summary(summary, args.run))
    return 0


def _format_stored_summary(summary: dict, run: Path) -> str:
    """`format_summary`, or one line naming the damaged ``summary_json`` it was read from."""
    from purify.summary import format_summary

    try:
        return format_summary(summary)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise UsageError(f"{run}: its summary_json attribute is damaged ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:100]}); purify simulate --out {run} --overwrite "
                         "re-runs it") from None


def cmd_analyze(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.analysis import analyze

    names = args.only or ANALYSES
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise UsageError(f"invalid --only={unknown[0]!r}: allowed: {', '.join(ANALYSES)}")
    try:
        for run in (args.run, *args.transfer_from):
            _checked_run(run)
            S.open_run(run, require_complete=True)
        with S.RunLock(S.run_dir(args.run)):
            costs = analyze(args.run, names=names, force=args.force, others=args.transfer_from,
                            log=lambda msg: print(msg, file=sys.stderr))
    except (S.StoreWriteError, OSError) as e:
        return _fail_during_work(f"cannot write the analyses of {args.run}", e, f"purify analyze {args.run}")
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:  # e.g. a transfer run of another problem
        raise UsageError(" ".join(str(e).split())) from None
    if costs:
        print("computed: " + ", ".join(f"{n} ({t:.1f} s)" for n, t in costs.items()))
    else:
        print("nothing to do: every analysis is stored (use --force to recompute)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.plots import plot_run

    try:
        _checked_run(args.run)
        S.open_run(args.run)
        paths = plot_run(args.run, formats=("png", "pdf") if args.pdf else ("png",))
    except OSError as e:
        return _fail_during_work(f"cannot write the figures of {args.run}", e, f"purify plot {args.run}")
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    for path in paths:
        print(path)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.experiments import EXPERIMENTS, run_experiment
    from purify.experiments.framework import SUMMARY_NAME, module_doc

    if args.list:
        for name in EXPERIMENTS:
            print(f"{name:18s} {module_doc(name)}")
        return 0
    if args.name not in EXPERIMENTS:
        raise UsageError(f"experiment: unknown name {args.name!r}; allowed: {', '.join(EXPERIMENTS)}")
    if args.seed < 0:
        raise UsageError(f"--seed: {args.seed} is negative; allowed: an integer >= 0")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise UsageError(f"--device: {args.device!r} is not allowed; allowed: cpu, cuda, cuda:N")
    _check_device(args.device)
    if args.out is not None:
        _check_path(args.out, "--out")
    try:
        out = run_experiment(args.name, args.out, quick=args.quick, seed=args.seed, device=args.device,
                             progress=not args.quiet, overwrite=args.overwrite)
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    print((out / SUMMARY_NAME).read_text())
    print(f"wrote {out}")
    return 0


def _add_sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="run a grid of simulations on Dask and combine their summaries",
                        description="Run one simulation per cell of a grid on Dask and combine their summaries "
                                    "into SWEEP/sweep.zarr. Every simulate option takes V1,V2,... to make it an "
                                    "axis (options whose value is a list separate axis values with ';').")
    sw.add_argument("spec", nargs="?", type=Path, default=None,
                    help="sweep file (TOML or JSON): [base] config, [axes], [collect]; see README 'Sweeps'")
    for flag, _, _, _, help_text in OPTIONS:
        sw.add_argument(flag, dest=_dest(flag), default=None, metavar="V[,V...]", help=help_text)
    sw.add_argument("--seed", default=None, help="seed, or seeds S1,S2,... as an axis (default 0)")
    sw.add_argument("--seeds", type=INT, default=None, help="seeds 0..N-1 as an axis")
    sw.add_argument("--problem-seed", default=None, help="problem seed(s) (default: each cell's seed)")
    sw.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default cpu)")
    sw.add_argument("--preset", default=None, help="boundary | purification, or P1,P2 as an axis (default purification)")
    sw.add_argument("--analyses", type=_str_list, default=None,
                    help="analyses run per cell whose scalar results are collected, e.g. lottery,mixture "
                         "(default: the file's [collect], else none)")
    sw.add_argument("--out", type=Path, default=None,
                    help="sweep folder (default sweeps/<file name> or sweeps/<axis names>)")
    sw.add_argument("--workers", type=INT, default=None, help="local worker processes (default cores/threads)")
    sw.add_argument("--threads-per-cell", type=INT, default=1,
                    help="torch/BLAS threads of each cell (default 1; results depend on it, not on --workers)")
    sw.add_argument("--scheduler", default=None,
                    help="address of a running Dask scheduler (tcp://HOST:PORT) to use instead of a local cluster")
    sw.add_argument("--retries", type=INT, default=2, help="extra attempts of a failed cell (default 2)")
    sw.add_argument("--overwrite", action="store_true", help="delete the sweep's cells and results and start again")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = sub.add_parser("sweep-plot", help="draw a sweep's phase diagrams into SWEEP/figures")
    sp.add_argument("sweep", type=Path, help="sweep folder")
    sp.add_argument("--vars", type=_str_list, default=None,
                    help="variables to draw (default robust/clean accuracy before and after, weight change)")
    sp.add_argument("--x", default=None, help="axis along x (default: the first axis with several values)")
    sp.add_argument("--y", default=None, help="axis along y of the heatmaps (default: the next one)")
    sp.add_argument("--pdf", action="store_true", help="also write PDF files")


_LIST_KINDS = (_float_list, _str_list, _levels)


def _sweep_values(flag: str, text: str, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    """``V1,V2,...`` as typed axis values; list-valued options separate their values by ``;``."""
    parts = [p.strip() for p in text.split(";" if kind in _LIST_KINDS else ",")]
    try:
        return tuple(kind(p) for p in parts if p)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"invalid {flag}: {e}") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    from purify import sweep as SW
    from purify.resources import check_sweep_fits
    from purify.sweep.combine import cell_dir

    for flag, value, low in (("--workers", args.workers, 1), ("--threads-per-cell", args.threads_per_cell, 1),
                             ("--retries", args.retries, 0), ("--seeds", args.seeds, 1)):
        if value is not None and value < low:
            raise UsageError(f"invalid {flag}={value}: must be an integer >= {low}")
    for path, flag in ((args.out, "--out"), (args.spec, "sweep file")):
        if path is not None:
            _check_path(path, flag)
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers sizes the local cluster; the cluster at --scheduler has its own workers")
    if args.seeds is not None and args.seeds > SW.MAX_CELLS:
        raise UsageError(f"invalid --seeds={args.seeds}: a sweep has at most {SW.MAX_CELLS} cells")
    if args.seeds is not None and args.seed is not None:
        raise UsageError("--seed and --seeds cannot be combined")
    overrides = [(f"{section}.{name}", _sweep_values(flag, getattr(args, _dest(flag)), kind))
                 for flag, section, name, kind, _ in OPTIONS if getattr(args, _dest(flag)) is not None]
    for flag, key, kind in (("--seed", "seed", INT), ("--problem-seed", "problem_seed", INT), ("--device", "device", str),
                              ("--preset", "preset", str)):
        text = getattr(args, key)
        if text is not None:
            overrides.append((key, _sweep_values(flag, text, kind)))
    if args.seeds is not None:
        overrides.append(("seed", tuple(range(args.seeds))))
    try:
        stored = SW.stored_spec(args.out) if args.spec is None and args.out is not None else None
    except SW.SweepError as e:
        raise UsageError(str(e)) from None
    if args.spec is None and not overrides and stored is None:
        raise UsageError("give a sweep file or options with several values, e.g. purify sweep --d 200,400 --seeds 3")
    try:
        aliases = {flag.lstrip("-"): f"{section}.{name}" for flag, section, name, *_ in OPTIONS}
        spec = SW.build_spec(args.spec, overrides, analyses=args.analyses, aliases=aliases, stored=stored)
        out = args.out or SW.default_out(args.spec, spec)
        # Every cell is sized before any starts; cells already stored take no new disk.
        check_sweep_fits([(" ".join(f"{n}={v}" for n, v in c.values), c.config) for c in spec.cells()
                          if not (cell_dir(out, c) / "store.zarr").exists()], out)
        result = SW.run_sweep(spec, out, workers=args.workers, threads_per_cell=args.threads_per_cell,
                              scheduler=args.scheduler, retries=args.retries, overwrite=args.overwrite,
                              progress=not args.quiet)
    except SW.SweepError as e:
        raise UsageError(str(e)) from None
    except SW.SweepInterrupted as e:
        print(f"purify: sweep {e}; finished cells are stored; run the same command again to go on",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(SW.format_result(result))
    return EXIT_FAILED if result.dataset.attrs["n_failed"] else 0


def cmd_sweep_plot(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.plots.sweep import plot_sweep

    _check_path(args.sweep, "sweep folder")
    try:
        paths = plot_sweep(args.sweep, variables=args.vars, x=args.x, y=args.y,
                           formats=("png", "pdf") if args.pdf else ("png",))
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:  # an unknown axis or variable
        raise UsageError(" ".join(str(e).split())) from None
    for path in paths:
        print(path)
    return 0


def _printable(text: str) -> str:
    """`text` on one line: control characters (newlines, and the separators `str.splitlines`
    breaks on, e.g. in a hostile file name) shown as escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``purify`` console script; returns the exit code."""
    from purify.config import ConfigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = {"simulate": cmd_simulate, "info": cmd_info, "analyze": cmd_analyze,
                   "plot": cmd_plot, "experiment": cmd_experiment, "sweep": cmd_sweep,
                   "sweep-plot": cmd_sweep_plot}[args.command]
        return handler(args)
    except (UsageError, ConfigError) as e:
        print(f"purify: error: {_printable(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (imports, store creation, summary): nothing to save.
        print("purify: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `purify info RUN | head`: the reader left; say nothing more (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

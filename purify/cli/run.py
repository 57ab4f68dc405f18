"""``purify simulate``, ``analyze``, ``plot`` and ``experiment``: each validates everything
before any work, then goes through :mod:`purify.pipeline` (or the experiment framework)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from purify.cli.checks import (
    check_device,
    check_path,
    check_resumable,
    checked_run,
    fail_during_work,
    printable,
    stored_threads,
)
from purify.cli.info import format_stored_summary
from purify.cli.parser import EXIT_FAILED, EXIT_INTERRUPTED, OPTIONS, UsageError, config_from_args, dest


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
    from purify.pipeline import run_backend
    from purify.threads import configure_threads

    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite cannot be combined")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN (the run folder to continue)")
        check_path(args.out, "--out")
        given = [flag for flag, *_ in OPTIONS if getattr(args, dest(flag)) is not None]
        given += [flag for flag in ("--config", "--seed", "--problem-seed", "--device")
                  if getattr(args, flag[2:].replace("-", "_")) is not None]
        fresh, stored = S.creation_interrupted(args.out)
        if fresh:
            # Killed while it was being created: nothing was computed, so --resume starts it,
            # with the options given or the config its half-created store recorded.
            config = _fresh_start_config(args, given, stored)
            check_device(config.device)
        elif given:
            raise UsageError(f"--resume continues the stored run with its own config; drop {given[0]}")
        else:
            config = None
            check_resumable(args.out)
    else:
        config = config_from_args(args).resolve()
        check_device(config.device)
    out = args.out or Path("runs") / f"d{config.data.d}-k{config.data.k}-seed{config.seed}"
    check_path(out, "--out")
    if config is not None:
        from purify.resources import check_fits

        given = {flag[2:].replace("-", "_") for flag, *_ in OPTIONS if getattr(args, dest(flag)) is not None}
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

    threads = configure_threads(stored=stored_threads(out) if args.resume else None)
    try:
        backend = run_backend(out, resume=args.resume)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return _simulate(args, out, config, backend, f"{threads.describe()}, matmul {backend}")


def _simulate(args: argparse.Namespace, out: Path, config, backend: str, setting: str) -> int:
    """Run (or resume) the simulation at ``out``, then its analyses and figures; the exit code."""
    from purify import store as S
    from purify.pipeline import run_simulation
    from purify.simulate import Stopped
    from purify.train import DivergenceError

    def announce(resolved) -> None:
        # Printed only once the folder is accepted, so a refused run prints its one error line.
        for note in resolved.theory_warnings():
            print(f"purify: warning: {note}", file=sys.stderr)
        print(f"purify simulate: {_describe(resolved)} | {setting}", file=sys.stderr)
        print(f"run folder: {printable(str(out))}", file=sys.stderr)

    try:
        summary = run_simulation(config, out, resume=args.resume, overwrite=args.overwrite, backend=backend,
                                 progress=not args.quiet, on_start=announce, command=args.command_line)
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
    print(format_stored_summary(summary, out))
    print(f"store: {S.store_path(out)}")
    if not args.no_analysis:
        try:
            _analyze_and_plot(out)
        except Exception as e:  # the run itself is complete and stored: say so, in one line
            print(f"purify: error: analysis failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                  f"the run is complete; retry with: purify analyze {out}", file=sys.stderr)
            return EXIT_FAILED
    return 0


def _analyze_and_plot(out: Path) -> None:
    """The analyses and figures of a finished run; a failure here leaves the run intact."""
    from purify.pipeline import analyze_locked, draw_figures

    costs = analyze_locked(out, log=lambda msg: print(msg, file=sys.stderr))
    if costs:
        print("analyses: " + ", ".join(f"{n} ({t:.1f} s)" for n, t in costs.items()))
    paths = draw_figures(out)
    if paths:
        print(f"figures: {paths[0].parent}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.pipeline import analyze_locked
    from purify.registry import ANALYSES

    names = args.only or ANALYSES
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise UsageError(f"invalid --only={unknown[0]!r}: allowed: {', '.join(ANALYSES)}")
    try:
        for run in (args.run, *args.transfer_from):
            checked_run(run)
            S.open_run(run, require_complete=True)
        costs = analyze_locked(args.run, names, force=args.force, others=args.transfer_from,
                               log=lambda msg: print(msg, file=sys.stderr))
    except (S.StoreWriteError, OSError) as e:
        return fail_during_work(f"cannot write the analyses of {args.run}", e, f"purify analyze {args.run}")
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
    from purify.pipeline import draw_figures

    try:
        checked_run(args.run)
        S.open_run(args.run)
        paths = draw_figures(args.run, formats=("png", "pdf") if args.pdf else ("png",))
    except OSError as e:
        return fail_during_work(f"cannot write the figures of {args.run}", e, f"purify plot {args.run}")
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
    check_device(args.device)
    if args.out is not None:
        check_path(args.out, "--out")
    try:
        out = run_experiment(args.name, args.out, quick=args.quick, seed=args.seed, device=args.device,
                             progress=not args.quiet, overwrite=args.overwrite,
                             command=args.command_line)
    except S.StoreError as e:
        raise UsageError(str(e)) from None
    print((out / SUMMARY_NAME).read_text())
    print(f"wrote {out}")
    return 0

"""``purify sweep`` and ``purify sweep-plot`` (the parsers are in :mod:`purify.cli.parser`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from purify.cli.checks import check_path
from purify.cli.parser import EXIT_FAILED, EXIT_INTERRUPTED, INT, LIST_KINDS, OPTIONS, UsageError, dest


def _sweep_values(flag: str, text: str, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    """``V1,V2,...`` as typed axis values; list-valued options separate their values by ``;``."""
    parts = [p.strip() for p in text.split(";" if kind in LIST_KINDS else ",")]
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
            check_path(path, flag)
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers sizes the local cluster; the cluster at --scheduler has its own workers")
    if args.seeds is not None and args.seeds > SW.MAX_CELLS:
        raise UsageError(f"invalid --seeds={args.seeds}: a sweep has at most {SW.MAX_CELLS} cells")
    if args.seeds is not None and args.seed is not None:
        raise UsageError("--seed and --seeds cannot be combined")
    from purify import matmul

    try:  # the cells choose their backend themselves: a bad override fails here, once
        matmul.choose_backend(override=os.environ.get(matmul.ENV))
    except ValueError as e:
        raise UsageError(str(e)) from None
    overrides = [(f"{section}.{name}", _sweep_values(flag, getattr(args, dest(flag)), kind))
                 for flag, section, name, kind, _ in OPTIONS if getattr(args, dest(flag)) is not None]
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
                              progress=not args.quiet, command=args.command_line)
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

    check_path(args.sweep, "sweep folder")
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

"""Command line: ``purify simulate``, ``analyze``, ``plot``, ``info``, ``experiment``, ``sweep``, ``sweep-plot``.

Thin runners in the style of msprime: :func:`main` takes ``argv`` so tests call it
directly; each subcommand parses, validates everything before any work, calls the library
and prints.  Bad input ends with one line ``purify: error: ...`` and exit code 2.

Exit codes: 0 done; 1 a failure during the work (divergence, a write that failed: disk full,
I/O error), with the store kept at its last good state; 2 bad input or an unusable folder or
store (missing, foreign, damaged, in use, unwritable), nothing done; 130 interrupted.
Every command that reads a store checks it first (`purify.store.verify_run`).

One module per concern: :mod:`~purify.cli.parser` (the options and the parser),
:mod:`~purify.cli.checks` (checks made before any work), :mod:`~purify.cli.run` (``simulate``,
``analyze``, ``plot``, ``experiment``, through :mod:`purify.pipeline`), :mod:`~purify.cli.info`
and :mod:`~purify.cli.sweep`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from purify.cli.checks import printable
from purify.cli.info import cmd_info
from purify.cli.parser import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    OPTIONS,
    UsageError,
    build_parser,
    config_from_args,
)
from purify.cli.run import cmd_analyze, cmd_experiment, cmd_plot, cmd_simulate
from purify.cli.sweep import cmd_sweep, cmd_sweep_plot

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "OPTIONS", "UsageError", "build_parser",
           "config_from_args", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``purify`` console script; returns the exit code."""
    from purify.config import ConfigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        # The command line recorded as the provenance of what this command writes.
        args.command_line = ["purify", *(sys.argv[1:] if argv is None else argv)]
        handler = {"simulate": cmd_simulate, "info": cmd_info, "analyze": cmd_analyze,
                   "plot": cmd_plot, "experiment": cmd_experiment, "sweep": cmd_sweep,
                   "sweep-plot": cmd_sweep_plot}[args.command]
        return handler(args)
    except (UsageError, ConfigError) as e:
        print(f"purify: error: {printable(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (imports, store creation, summary): nothing to save.
        print("purify: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `purify info RUN | head`: the reader left; say nothing more (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED

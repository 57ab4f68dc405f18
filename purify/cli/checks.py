"""Checks a command makes before any work (paths, devices, a store's integrity and its
agreement with its own config), and the one-line reports of a failure."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from purify.cli.parser import EXIT_FAILED, UsageError


def check_path(path: Path, flag: str) -> None:
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


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"invalid --device={device}: CUDA is not available on this machine (use cpu)")


def printable(text: str) -> str:
    """`text` on one line: control characters (newlines, and the separators `str.splitlines`
    breaks on, e.g. in a hostile file name) shown as escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def fail_during_work(what: str, e: Exception, retry: str) -> int:
    """A write (or read) that failed part-way: one line, exit 1; earlier results are kept."""
    text = getattr(e, "strerror", None) or " ".join(str(e).split())[:200]
    print(f"purify: error: {what}: {text}; what was stored before is intact; retry with: {retry}",
          file=sys.stderr)
    return EXIT_FAILED


def checked_run(run: Path) -> dict[str, Any]:
    """Check a store before a reading command uses it: format, manifest, every chunk,
    completion state and (for a run) a readable config. Returns its root attributes."""
    from purify import store as S
    from purify.config import ConfigError, RunConfig

    check_path(run, "run folder")
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
        check_config_matches_store(run, config)
    return attrs


def check_config_matches_store(run: Path, config) -> None:
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


def check_resumable(run: Path) -> None:
    """Refuse to resume a store whose config disagrees with its arrays (see `checked_run`);
    other problems (no store, damage) are left to `purify.simulate.simulate` to report."""
    from purify import store as S
    from purify.config import ConfigError, RunConfig

    try:
        config = RunConfig.from_json(S.read_attrs(run)["config_json"])
    except (S.StoreError, KeyError, TypeError, ValueError, RecursionError, ConfigError):
        return
    try:
        check_config_matches_store(run, config)
    except S.StoreError as e:
        raise UsageError(str(e)) from None


def stored_threads(out: Path) -> int | None:
    """The torch threads a run to resume was started with (None if unreadable: simulate says why)."""
    from purify import store as S

    try:
        return S.read_attrs(out).get("torch_threads")
    except (S.StoreError, OSError, ValueError):
        return None

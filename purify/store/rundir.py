"""The run folder: what to do with an output folder before a run starts, and its removal.

`prepare_run_dir` decides whether a folder is new, resumable, to be overwritten or to be
refused; `creation_interrupted` and `half_created` recognise a run killed while its store was
being created (nothing computed yet). Only purify's own entries are ever removed: the store,
checkpoint, figures, lock and temp files, and the names a caller adds (``also_ours``, e.g. an
experiment's summary).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from purify.store.format import (
    CHECKPOINT_NAME,
    CHECKPOINT_TMP_PREFIX,
    FIGURES_NAME,
    LOCK_NAME,
    STORE_NAME,
    StoreError,
    read_node,
    store_path,
)
from purify.store.lock import RunLock, is_ours, lock_holder
from purify.store.read import read_attrs

#: What a run writes in its folder (besides the lock's own files).
RUN_ENTRIES = frozenset({STORE_NAME, CHECKPOINT_NAME, FIGURES_NAME})


def half_created(run: str | Path) -> bool:
    """Whether the run's store was killed while it was being created (its root metadata lacks
    the ``format`` attribute written last): nothing in it to verify or resume."""
    root = store_path(run) / "zarr.json"
    if not root.exists():  # killed before its first file
        return store_path(run).is_dir()
    meta = read_node(root)  # unreadable: damage, not an interrupted creation
    return meta is not None and "format" not in (meta.get("attributes") or {})


def _is_ours(name: str, also_ours: Collection[str]) -> bool:
    return is_ours(name, RUN_ENTRIES | set(also_ours), (CHECKPOINT_TMP_PREFIX,))


def _entries(run: Path) -> Iterator[str]:
    try:
        yield from os.listdir(run)
    except OSError as e:
        raise StoreError(f"cannot read {run}: {e.strerror or e}") from e


def _remove_run_files(run: Path, also_ours: Collection[str] = ()) -> None:
    """Delete the store, checkpoint, figures and temp files of a run (and the entries
    `also_ours`); keep anything else."""
    try:
        for name in list(_entries(run)):
            if name == LOCK_NAME or not _is_ours(name, also_ours):
                continue
            target = run / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    except OSError as e:
        raise StoreError(f"cannot remove the old run in {run}: {e.strerror or e}") from e


def _half_created_attrs(run: Path) -> dict[str, Any] | None:
    """Root attributes of a store killed while `create_store` wrote it (they lack ``format``,
    written last, but hold the run's ``config_json``); None for any other store or none."""
    meta = read_node(store_path(run) / "zarr.json")
    attrs = (meta or {}).get("attributes")
    if not isinstance(attrs, dict) or "format" in attrs or not isinstance(attrs.get("config_json"), str):
        return None
    return attrs


def _creation_interrupted(run: Path, names: list[str], also_ours: Collection[str]) -> bool:
    """Whether the folder entries `names` (lock excluded) are what a run killed during its
    creation leaves: only purify's files, no checkpoint, and no store or a half-created one."""
    if not all(_is_ours(n, also_ours) for n in names) or CHECKPOINT_NAME in names:
        return False
    if STORE_NAME not in names:
        return True
    store = store_path(run)
    return not (store / "zarr.json").exists() or _half_created_attrs(run) is not None


def creation_interrupted(run: str | Path, also_ours: Collection[str] = ()) -> tuple[bool, str | None]:
    """Whether `run` holds a run killed while it was being created (nothing computed yet), and
    the config JSON its half-created store recorded, if any.

    Such a folder (a lock, temp files, a store without its ``format`` attribute, no checkpoint)
    is started from scratch by `prepare_run_dir`, with ``resume`` too. `also_ours` names
    further entries the caller writes in its run folders, as in `prepare_run_dir`.
    """
    run = Path(run)
    try:
        names = [n for n in os.listdir(run) if n != LOCK_NAME]
    except OSError:
        return False, None
    if not names:
        return True, None
    if not _creation_interrupted(run, names, also_ours):
        return False, None
    attrs = _half_created_attrs(run)
    return True, None if attrs is None else attrs["config_json"]


def prepare_run_dir(
    run: str | Path, *, overwrite: bool, resume: bool, also_ours: Collection[str] = ()
) -> str:
    """Decide what to do with an output folder before any work starts.

    Parameters
    ----------
    run : str or Path
        The run folder.
    overwrite : bool
        Replace a run already there (only its store, checkpoint and figures are deleted).
    resume : bool
        Continue a run already there.
    also_ours : Collection[str]
        Further entries the caller writes in its run folders (e.g. an experiment's
        ``summary.md``): part of a run, removed with it, never foreign.

    Returns
    -------
    str
        ``"new"`` (the folder exists and is ready for a new run: also when it held only a
        run killed during its creation, with nothing computed, even with `resume`) or
        ``"resume"`` (it holds a fully created store, with or without a checkpoint; the
        caller checks which).

    Raises
    ------
    StoreError
        If both flags are given; the folder cannot be created or written; it is not empty
        and holds no purify run (even with `overwrite`); it holds a run and neither flag is
        given; there is nothing to resume; or a live process holds its lock.
    """
    if overwrite and resume:
        raise StoreError("--overwrite and --resume cannot be used together")
    run = Path(run)
    if not run.exists():
        if resume:
            raise StoreError(f"nothing to resume at {run}")
        try:
            run.mkdir(parents=True)
        except OSError as e:
            raise StoreError(f"cannot create run folder {run}: {e.strerror or e}") from e
        return "new"
    if not run.is_dir():
        raise StoreError(f"{run} exists and is not a folder")
    if not os.access(run, os.W_OK | os.X_OK):
        raise StoreError(f"run folder {run} is not writable")

    names = [n for n in _entries(run) if n != LOCK_NAME]
    pid, live, _ = lock_holder(run / LOCK_NAME)
    if live and pid != os.getpid():
        raise StoreError(f"{run} is in use by process {pid} (lock {run / LOCK_NAME})")
    if not names or _creation_interrupted(run, names, also_ours):
        # Nothing was computed here (an empty folder, or one killed while its store was being
        # created): a new run and --resume alike start it from scratch.
        if names:
            with RunLock(run):
                _remove_run_files(run, also_ours)
        return "new"

    # A store without `format` is one killed during creation: still ours to overwrite if
    # nothing foreign sits beside it, but nothing to resume.
    holds_run = all(_is_ours(n, also_ours) for n in names) and any(
        n in (STORE_NAME, CHECKPOINT_NAME) for n in names
    )
    if not holds_run:
        raise StoreError(
            f"{run} is not empty and holds no purify run; choose an empty or new folder"
        )
    if resume:
        try:
            read_attrs(run)
        except StoreError as e:
            raise StoreError(f"nothing to resume at {run}: {e}") from e
        # A complete store without a checkpoint was killed before its first checkpoint
        # (right after creation): resuming it means starting it at step 0, in place.
        return "resume"
    if overwrite:
        # Under the lock: of two overwrites started together, the second is told the folder is
        # in use instead of finding the old run half removed.
        with RunLock(run):
            _remove_run_files(run, also_ours)
        return "new"
    raise StoreError(
        f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it"
    )

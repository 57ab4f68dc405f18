"""What a run folder and its store are: names, format versions, errors, paths.

The lowest layer of `purify.store`: every other module of the package imports from here, and
this module imports none of them.

A run folder ``RUN/`` holds::

    RUN/store.zarr/      zarr v3 store written with xarray (root group, one group per
                         table the caller writes, "analysis/<name>")
    RUN/checkpoint.pt    latest resumable training state, replaced atomically
    RUN/.lock            one-writer lock (see `purify.store.lock.RunLock`)
    RUN/.zarr-tmp/       temporary files of in-flight store writes
    RUN/figures/         written by the plotting code
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT_NAME = "purify-run"
#: 1: first layout. 2: every chunk written at creation, checksummed zstd frames, the
#: ``layout_json`` manifest. 3: the run identity and keyed digests of every attribute and file
#: (see `purify.store.integrity`). All are read; older stores get the checks their content
#: allows (`integrity_note` says what cannot be checked).
FORMAT_VERSION = 3
#: First version with a run identity and digests.
IDENTITY_VERSION = 3
STORE_NAME = "store.zarr"
CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = ".lock"
FIGURES_NAME = "figures"
TMP_NAME = ".zarr-tmp"
#: Temp files of a checkpoint being written (``checkpoint.pt.tmp-<pid>``).
CHECKPOINT_TMP_PREFIX = CHECKPOINT_NAME + ".tmp-"

#: Root attribute holding the manifest ``{group: [array, ...]}`` of a version-2 store.
LAYOUT_ATTR = "layout_json"

#: Root attribute holding the random identity of a version-3 store (32 hex digits).
RUN_ID_ATTR = "run_id"

#: Root attribute holding ``{"attrs": {name: digest}, "files": {path: [digest, ...]}}``.
INTEGRITY_ATTR = "integrity_json"

#: Root attributes owned by the store; callers may not set them.
RESERVED_ATTRS = frozenset({"format", "format_version", LAYOUT_ATTR, RUN_ID_ATTR, INTEGRITY_ATTR})

#: Root attributes kept by the store and hidden from `read_attrs` and `open_run` (the run
#: identity too: two runs of one config and seed give identical datasets).
HIDDEN_ATTRS = frozenset({LAYOUT_ATTR, INTEGRITY_ATTR, RUN_ID_ATTR})

#: Values of the root ``status`` attribute: ``running`` (being written, or killed while it
#: was: `writer_pid` tells), ``stopped`` (Ctrl-C/SIGTERM, resumable), ``complete``, ``failed``
#: (with ``status_reason``).
STATUSES = ("running", "stopped", "complete", "failed")

AttrValue = str | int | float | bool


class StoreError(Exception):
    """A problem with a run folder/store, with a one-line message fit to show a user.

    The CLI prints the message and exits with status 2.
    """


class StoreWriteError(StoreError):
    """Writing to a store failed part-way through work (disk full, permissions, I/O error).

    What was written before stays intact. The CLI prints the message and exits with status 1
    (a failure during work), not 2 (bad input).
    """


def one_line(e: BaseException, limit: int = 200, *, kind: bool = True) -> str:
    """An exception as one line for a user: whitespace runs collapsed, at most `limit` characters.

    Parameters
    ----------
    e : BaseException
        The exception.
    limit : int
        Characters of its message kept.
    kind : bool
        Put its type in front (``"OSError: ..."``, ``"... : no details"`` for an empty
        message); otherwise the message alone (its type for an empty one).
    """
    text = " ".join(str(e).split())[:limit]
    if kind:
        return f"{type(e).__name__}: {text or 'no details'}"
    return text or type(e).__name__


def store_path(run: str | Path) -> Path:
    """Return the ``store.zarr`` path of a run.

    Parameters
    ----------
    run : str or Path
        The run folder, or the ``store.zarr`` path itself.

    Returns
    -------
    Path
        ``RUN/store.zarr``.
    """
    path = Path(run)
    return path if path.name == STORE_NAME else path / STORE_NAME


def run_dir(run: str | Path) -> Path:
    """Return the run folder, given the run folder or its ``store.zarr`` path."""
    return store_path(run).parent


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in the file at `path` (OSError, ValueError if absent or not an object)."""
    meta = json.loads(path.read_bytes())
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    return meta


def read_node(meta_path: Path) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` at `meta_path`, or None if absent or unreadable."""
    try:
        return read_json(meta_path)
    except (OSError, ValueError):
        return None

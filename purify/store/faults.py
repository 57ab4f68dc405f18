"""Files replaced whole, and the fault points just before they are.

Every file purify replaces (a store file, a checkpoint, a staged group, a summary, a figure, a
sweep spec) is written to a temp file and renamed over its target, so a reader, or a process
killed at any moment, sees the old file or the new one, never a part of one. The store's
renames pass a fault point first, where the reliability tests kill the process.

``PURIFY_FAULT_KILL_AT=N`` makes the process SIGKILL itself at its N-th fault point: the
moments just before a store file, a checkpoint or a staged group is renamed into place. Read
at every fault point (one dictionary lookup, next to a file write), so a process forked after
import can be given its own N.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

_fault_count = 0

#: Set to a list to record the label of every fault point reached (tests plan kills with it).
FAULT_TRACE: list[str] | None = None


def fault_point(label: str) -> None:
    """Mark a moment where a kill is most damaging; see ``PURIFY_FAULT_KILL_AT`` above.

    `label` says what is in flight: ``store:<key>``, ``checkpoint`` or ``group:<path>``.
    """
    global _fault_count
    if FAULT_TRACE is not None:
        FAULT_TRACE.append(label)
    kill_at = os.environ.get("PURIFY_FAULT_KILL_AT")
    if not kill_at:
        return
    _fault_count += 1
    if _fault_count == int(kill_at):
        sys.stderr.write(f"purify: fault injection: SIGKILL at {label}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomically(
    path: Path, write: Callable[[Path], None], *, tmp: Path | None = None, fault: str | None = None
) -> None:
    """Write the file at `path` whole or not at all.

    Parameters
    ----------
    path : Path
        The file to write or replace.
    write : Callable[[Path], None]
        Writes the new content to the file it is given (a temp file in the same folder).
    tmp : Path, optional
        That temp file; default ``.<name>.<pid>-<random>`` beside `path`.
    fault : str, optional
        Label of the fault point passed just before the rename (none if not given).

    Notes
    -----
    On any failure, also an interrupt, the temp file is removed and `path` is left as it was.
    """
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}")
    try:
        write(tmp)
        if fault is not None:
            fault_point(fault)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to the file at `path` whole or not at all (see `write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(text))

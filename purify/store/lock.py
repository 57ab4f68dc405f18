"""The one-writer lock of a run (or sweep) folder: `RunLock`, its stale-lock takeover, SIGTERM.

Writers of a store hold the lock of its folder; `writer_pid` tells readers whether a live
process does, which is how a ``running`` store that nobody writes is recognised as killed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from purify.store.format import CHECKPOINT_TMP_PREFIX, LOCK_NAME, TMP_NAME, StoreError, run_dir

#: A lock file that cannot be parsed is only treated as stale after this many seconds,
#: because its owner may be between creating it and writing its content.
LOCK_GRACE_SECONDS = 5.0

#: Prefix of a stale lock being moved aside by the process taking it over.
_STALE_PREFIX = LOCK_NAME + ".stale-"


def is_ours(name: str, names: Collection[str] = (), prefixes: tuple[str, ...] = ()) -> bool:
    """Whether `name`, an entry of a folder written under a `RunLock`, was put there by purify.

    Parameters
    ----------
    name : str
        A folder entry.
    names : Collection[str]
        The entries its writers make (e.g. ``store.zarr``).
    prefixes : tuple of str
        Prefixes of their temp files.

    Returns
    -------
    bool
        True for one of `names`, a name starting with one of `prefixes`, and what the lock
        itself leaves: the lock, a stale lock being moved aside, the temp-file folder.
    """
    return name in names or name in (LOCK_NAME, TMP_NAME) or name.startswith((_STALE_PREFIX, *prefixes))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def lock_holder(lock: Path) -> tuple[int | None, bool, int | None]:
    """Inspect a lock file: return ``(pid, live, inode)``.

    `pid` is None when the file cannot be parsed; `live` tells whether the lock must be
    respected; `inode` identifies the inspected file (None if it vanished meanwhile).
    """
    try:
        with lock.open("rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        return None, False, None
    except OSError:  # e.g. a folder named .lock: not ours to remove
        return None, True, None
    try:
        info = json.loads(raw)
        pid, host = int(info["pid"]), str(info["hostname"])
    except (ValueError, KeyError, TypeError):
        return None, time.time() - st.st_mtime < LOCK_GRACE_SECONDS, st.st_ino
    if host != socket.gethostname():
        return pid, True, st.st_ino  # cannot tell whether it is alive: respect it
    return pid, _pid_alive(pid), st.st_ino


def writer_pid(run: str | Path) -> int | None:
    """The process id of the live process holding the run's lock, or None if none does.

    A store whose status says ``running`` while no process writes it was killed (or its
    machine went down): it is resumable from its last checkpoint.
    """
    pid, live, _ = lock_holder(run_dir(run) / LOCK_NAME)
    return pid if live else None


def _hold_sigterm() -> bool:
    """Block SIGTERM on the main thread where the platform can; whether it did."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    return True


def _release_sigterm(blocked: bool) -> None:
    """Unblock SIGTERM again; a SIGTERM that arrived meanwhile is delivered now."""
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


class RunLock:
    """One-writer lock of a run folder, as a context manager.

    ``with RunLock(run): ...`` creates ``RUN/.lock`` (``O_CREAT | O_EXCL``) holding JSON
    ``{pid, hostname, started}`` and removes it on exit, also on exceptions. A lock whose
    process is dead, or which is unparseable and older than `LOCK_GRACE_SECONDS`, is stale
    and taken over, so a SIGKILLed owner does not block the run forever.

    On entry, temp files left by killed writers (store and checkpoint) are removed, which is
    safe because only the lock holder writes.

    Parameters
    ----------
    run : str or Path
        Run folder (must exist) or its ``store.zarr`` path.

    Raises
    ------
    StoreError
        On entry, if a live process holds the lock or the lock cannot be created.
    """

    def __init__(self, run: str | Path) -> None:
        self.run = run_dir(run)
        self.path = self.run / LOCK_NAME
        self._token = uuid.uuid4().hex
        self._sigterm: Any = None

    def __enter__(self) -> RunLock:
        _import_lazy_dependencies()
        self._catch_sigterm()
        # SIGTERM is held back while the lock file is created and written: landing between the
        # O_EXCL create and the return, it would leave a lock that nobody releases.  Delivered
        # once the lock is ours, it releases it through __exit__.
        blocked = _hold_sigterm()
        try:
            self._acquire()
        except BaseException:
            _release_sigterm(blocked)
            self._restore_sigterm()
            raise
        try:
            _release_sigterm(blocked)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _catch_sigterm(self) -> None:
        """While held, SIGTERM raises KeyboardInterrupt (as Ctrl-C does) instead of killing the
        process on the spot, so ``__exit__`` removes the lock: a run terminated while its store
        is being created leaves no lock behind. Only where SIGTERM still has its default
        action (a caller with its own handler, e.g. a Dask worker, keeps it) and on the main
        thread (the only one Python lets set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._sigterm = signal.SIG_DFL
            signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._sigterm is not None and signal.getsignal(signal.SIGTERM) is _raise_interrupt:
            signal.signal(signal.SIGTERM, self._sigterm)
        self._sigterm = None

    def _acquire(self) -> RunLock:
        content = json.dumps(
            {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "token": self._token,
            }
        ).encode()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            except OSError as e:
                raise StoreError(f"cannot create lock {self.path}: {e.strerror or e}") from e
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            _sweep_temp_files(self.run)
            return self
        raise StoreError(f"could not take the lock {self.path}; try again")

    def _take_over_stale(self) -> None:
        pid, live, inode = lock_holder(self.path)
        if live:
            holder = f"process {pid}" if pid is not None else "another process"
            raise StoreError(
                f"{self.run} is in use by {holder} (lock {self.path}); wait for it or remove "
                "the lock if that process is gone"
            )
        if inode is None:
            return
        # Move the stale lock aside rather than unlinking it: if another process took it
        # over between our inspection and now, we notice by its inode and put it back.
        aside = self.path.with_name(f"{_STALE_PREFIX}{os.getpid()}-{self._token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if os.stat(aside).st_ino != inode:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def __exit__(self, *exc_info: object) -> None:
        try:
            try:
                ours = json.loads(self.path.read_bytes()).get("token") == self._token
            except (OSError, ValueError, AttributeError):
                ours = False
            if ours:
                self.path.unlink(missing_ok=True)
        finally:
            self._restore_sigterm()


@functools.cache
def _import_lazy_dependencies() -> None:
    """Run the imports that xarray defers to its first array (dask, SciPy, jinja2: several
    hundred modules) now, before SIGTERM raises KeyboardInterrupt.  Raised inside the
    initialisation of a compiled module, the interrupt either surfaces as ``ImportError:
    initialization failed`` or leaves CPython's unhandled-interrupt flag set, so that a run
    which caught it and exited 130 still ends with a SIGINT status."""
    import numpy as np
    import xarray as xr

    xr.Variable("x", np.zeros(1))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sweep_temp_files(run: Path) -> None:
    shutil.rmtree(run / TMP_NAME, ignore_errors=True)
    for tmp in run.glob(f"{CHECKPOINT_TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)

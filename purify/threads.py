"""How many torch and BLAS threads a run uses: the cores it may run on that nothing else uses.

A training step is a few large matrix products plus elementwise passes, all of which torch
splits over its threads.  More threads than idle cores only adds synchronization: on a
loaded 2-core machine one thread has been 2–15× faster than two.  So ``purify simulate``
takes the smallest of

* the threads torch would use anyway (its default, which honours ``OMP_NUM_THREADS``, or a
  smaller count the caller already set — the tests pin one thread this way),
* the cores in the process's affinity mask (``os.sched_getaffinity``: a container or
  ``taskset`` may allow fewer than the machine has),
* the cores not busy: the affinity count minus the 1-minute load average, rounded, at least 1;

unless ``PURIFY_THREADS=N`` says otherwise.  A resumed run reuses the count stored with it:
float sums split by thread count, and a resume is promised bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from purify.config import ConfigError

ENV = "PURIFY_THREADS"


@dataclass(frozen=True)
class ThreadSetting:
    """The chosen thread count and, in words, why."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} thread{'s' * (self.threads != 1)} ({self.reason})"


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None


def choose_threads(
    *,
    override: str | None = None,
    stored: int | None = None,
    default: int | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> ThreadSetting:
    """The thread count by the rules of the module docstring (a pure function of its inputs).

    Parameters
    ----------
    override : the value of ``PURIFY_THREADS`` if set: wins over everything.
    stored : the count a resumed run was started with.
    default : torch's current count (default ``torch.get_num_threads()``).
    cores : cores of the affinity mask (default :func:`available_cores`).
    load : 1-minute load average (default ``os.getloadavg()[0]``; ``None`` if unknown).

    Raises
    ------
    ConfigError
        ``override`` is not a positive integer.
    """
    if override is not None and override.strip():
        try:
            n = int(override)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"invalid {ENV}={override!r}: must be a positive integer (torch and BLAS threads)")
        return ThreadSetting(n, f"{ENV}={n}")
    if stored is not None and stored >= 1:
        return ThreadSetting(int(stored), "as the run was started, for a bitwise resume")
    default = torch.get_num_threads() if default is None else default
    cores = available_cores() if cores is None else cores
    n = max(1, min(default, cores))
    if load is None:
        return ThreadSetting(n, f"{cores} cores, load unknown")
    idle = max(1, int(cores - load + 0.5))
    return ThreadSetting(min(n, idle), f"{cores} cores, load average {load:.1f}")


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and in every BLAS/OpenMP library loaded (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def configure_threads(*, stored: int | None = None) -> ThreadSetting:
    """Choose (:func:`choose_threads`, from the environment and the machine) and apply."""
    setting = choose_threads(override=os.environ.get(ENV), stored=stored, load=_load())
    set_threads(setting.threads)
    return setting

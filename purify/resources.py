"""What a run will need before it starts: peak memory and store size, checked against the machine.

:func:`estimate` reads only the resolved :class:`~purify.config.RunConfig` and adds up the
arrays a run holds at its busiest moment (the sizes below; float32 = 4 bytes, the dictionary
and the hidden codes are drawn in float64 = 8 bytes):

* held for the whole run: the dictionary ``M`` (d × D), the held-out set (``n_test`` × (d + D):
  inputs and codes), a fixed training set if any (``n_train`` × (d + D)), the weights and the
  copies a step, a checkpoint and a snapshot write make (5 × m × d);
* the transients, added up (the allocator keeps freed blocks, so they do not simply take
  turns): creating the store (every weight snapshot pre-allocated:
  snapshots × m × d), drawing the dictionary (QR of a d × D float64 matrix: 3 copies), drawing
  a set of n examples (uniforms, codes and spikes: 5 float64-sized n × D arrays, plus n × d),
  a training step (7 (B × m) activation buffers, twice for the attack's extra forward, plus the
  batch draw) and an evaluation chunk (≤ 1024 examples: 7 (chunk × m) buffers per forward);
* the interpreter with torch, numpy, xarray, zarr and scikit-learn loaded (`BASELINE_BYTES`).

The store size is its uncompressed content (snapshots of W, b, σ_ρ; the dictionary; the
curves) plus the checkpoint: an upper bound, since chunks only shrink under zstd.
:func:`check_fits` compares both with the memory available (``MemAvailable`` of
``/proc/meminfo``, or psutil) and the free disk at the output path (`shutil.disk_usage`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from purify.config import ConfigError, RunConfig, find_option

#: Resident memory of ``purify simulate`` with nothing to hold: the max RSS of a d = 8, m = 8
#: run (``/usr/bin/time -v``, Linux, CPU torch 2.13, one thread) was 377 MB.
BASELINE_BYTES = 380 * 2**20

#: Examples per evaluation chunk (`purify.evaluate.evaluate`'s ``chunk``).
EVAL_CHUNK = 1024

_F32, _F64 = 4, 8


@dataclass(frozen=True)
class Term:
    """One contribution to an estimate: what it is, its bytes, the options that size it."""

    what: str
    bytes: int
    options: tuple[str, ...]


@dataclass(frozen=True)
class Estimate:
    """Peak memory and store size of a run, with the terms they are made of."""

    memory: tuple[Term, ...]  # held terms and transients
    store: tuple[Term, ...]

    @property
    def memory_bytes(self) -> int:
        return sum(t.bytes for t in self.memory)

    @property
    def store_bytes(self) -> int:
        return sum(t.bytes for t in self.store)

    def describe(self) -> str:
        """Two lines: peak memory and store size, each with its largest parts."""
        return (f"estimated peak memory {format_bytes(self.memory_bytes)} ({_parts(self.memory)})\n"
                f"estimated store size {format_bytes(self.store_bytes)} ({_parts(self.store)})")


def _parts(terms: tuple[Term, ...]) -> str:
    top = sorted(terms, key=lambda t: -t.bytes)[:3]
    return ", ".join(f"{t.what} {format_bytes(t.bytes)}" for t in top)


def format_bytes(n: int | float) -> str:
    """``1536`` → ``'1.5 KB'``, ``1000`` → ``'1000 B'`` (powers of 1024; huge values in scientific notation)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.4g} {unit}" if n < 1e6 else f"{n:.2e} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def n_snapshots(config: RunConfig) -> int:
    """Evaluation points (each with a weight snapshot) the run's timeline will hold, at most."""
    tr = config.train
    assert tr.clean_steps is not None and tr.adv_steps is not None, "resolve() first"
    clean = min(tr.clean_snapshots, tr.clean_steps + 1)
    adv = min(tr.adv_snapshots, tr.adv_steps)
    return max(1, clean + adv)


def estimate(config: RunConfig) -> Estimate:
    """Peak memory and store size of the run `config` describes (resolved), in bytes.

    Python integers throughout, so absurd sizes give absurd (exact) numbers, never an overflow.
    """
    dc, net, tr, ev = config.data, config.net, config.train, config.eval
    assert dc.n_features is not None and net.width is not None, "resolve() first"
    d, D, m = dc.d, dc.n_features, net.width
    B, n_test = tr.batch_size, dc.n_test
    n_train = dc.n_train or 0
    snaps = n_snapshots(config)
    log = 2 * tr.log_points

    def draw(n: int) -> int:  # uniforms, codes, spikes (float64-sized) and the inputs
        return n * D * 5 * _F64 + n * d * 2 * _F32

    chunk = min(EVAL_CHUNK, n_test)
    pgd = 1 if tr.adv_attack == "fgm" else tr.adv_pgd_steps
    held = (
        Term("interpreter and libraries", BASELINE_BYTES, ()),
        Term("dictionary M", d * D * _F32, ("d", "n_features")),
        Term("held-out set", n_test * (d + D) * _F32, ("n_test", "d")),
        Term("training set", n_train * (d + D) * _F32, ("n_train", "d")),
        Term("weights and their copies", 5 * m * d * _F32, ("m", "d")),
    )
    transient = (
        Term("pre-allocated snapshots", snaps * m * (d + 2) * _F32,
             ("m", "d", "clean_snapshots", "adv_snapshots")),
        Term("dictionary draw", 3 * d * D * _F64, ("d", "n_features")),
        Term("held-out draw", draw(n_test), ("n_test", "d")),
        Term("training-set draw", draw(n_train), ("n_train", "d")),
        Term("training step", draw(B) + 2 * 7 * B * m * _F32 + (1 + pgd) * B * d * _F32,
             ("batch_size", "m", "d")),
        Term("evaluation chunk", 7 * chunk * m * _F32 + 4 * chunk * d * _F32, ("m", "n_test", "d")),
    )
    memory = tuple(t for t in held + transient if t.bytes)
    radii = len(ev.radii) * len(ev.norms)
    store = (
        Term("weight snapshots", snaps * m * (d + 2) * _F32, ("m", "d", "clean_snapshots", "adv_snapshots")),
        Term("dictionary", (d * D + D + d) * _F32, ("d", "n_features")),
        Term("curves", (5 * log + snaps * (1 + radii * (len(ev.attacks) + 1))) * _F32 + 64 * 1024, ()),
        Term("checkpoint", m * d * _F32 + n_train * 8 + 2 * m * _F32, ("m", "d")),
    )
    return Estimate(memory, store)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the file system that would hold `path` (its nearest existing ancestor)."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except (OSError, ValueError):
            continue
    return None


def _culprit(terms: tuple[Term, ...], config: RunConfig, given: set[str]) -> str:
    """The options behind the largest term, the ones the user gave first, as ``--flag=value``."""
    # The interpreter's share is no option's doing: blame the largest term an option sizes.
    top = max((t for t in terms if t.options), key=lambda t: t.bytes)
    names = sorted(top.options, key=lambda n: n not in given)
    shown = []
    for name in names[:2]:
        value = config.net.width if name == "m" else find_option(config, name)
        shown.append(f"--{name.replace('_', '-')}={value}" if value is not None else f"--{name}")
    return f"{' '.join(shown)} ({top.what} {format_bytes(top.bytes)})"


def check_fits(config: RunConfig, out: str | Path | None, *, given: set[str] | frozenset[str] = frozenset()
               ) -> Estimate:
    """Refuse a run that cannot fit in this machine's memory or on the disk of `out`.

    Parameters
    ----------
    config : the resolved config.
    out : the run folder (its file system's free space is checked), or None to skip the disk.
    given : option names the user set (named first when a size is to blame).

    Raises
    ------
    ConfigError
        One line naming the option to blame, the estimate and what is available.
    """
    est = estimate(config)
    memory = available_memory()
    if memory is not None and est.memory_bytes > memory:
        raise ConfigError(f"invalid {_culprit(est.memory, config, given)}: the run needs about "
                          f"{format_bytes(est.memory_bytes)} of memory, {format_bytes(memory)} "
                          "are available")
    disk = free_disk(out) if out is not None else None
    if disk is not None and est.store_bytes > disk:
        raise ConfigError(f"invalid {_culprit(est.store, config, given)}: the store needs up to "
                          f"{format_bytes(est.store_bytes)}, {format_bytes(disk)} are free at {out}")
    return est


def check_sweep_fits(cells: list[tuple[str, RunConfig]], out: str | Path) -> int:
    """Refuse a sweep with a cell that cannot fit in memory, or whose stores cannot all fit on
    the disk of `out`; return the estimated bytes of all stores. `cells` are (label, config)."""
    total = 0
    for label, config in cells:
        try:
            total += check_fits(config, None).store_bytes
        except ConfigError as e:
            raise ConfigError(f"cell {label}: {e}") from None
    disk = free_disk(out)
    if disk is not None and total > disk:
        raise ConfigError(f"invalid sweep: its {len(cells)} stores need up to {format_bytes(total)}, "
                          f"{format_bytes(disk)} are free at {out}")
    return total

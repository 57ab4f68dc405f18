"""Running a sweep on Dask: one task per cell, each a full :func:`purify.simulate.simulate` run.

The driver (:func:`run_sweep`) validates every cell, locks the sweep folder, skips the cells
whose store is already complete, and submits the others to a ``dask.distributed`` cluster —
a :class:`~distributed.LocalCluster` of single-threaded worker processes by default, or any
running cluster given by its scheduler address.  A worker runs :func:`run_cell`: it pins
torch and BLAS to the sweep's threads per cell (so cells on one machine do not oversubscribe
its cores, and a cell's numbers do not depend on how many workers ran the sweep), then
creates the cell's run store — or resumes it from its checkpoint — and runs the analyses the
sweep asks for.  A failure is sent back as a value, never raised, so it cannot stop other
cells; the driver retries it up to ``retries`` times unless it is deterministic (a divergence
repeats bit for bit from the same seed and checkpoint).  At the end the cells' stores are
combined into ``SWEEP/sweep.zarr`` (:mod:`purify.sweep.combine`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from purify import provenance
from purify import store as S
from purify.config import ConfigError, RunConfig
from purify.sweep.combine import (
    CELLS_NAME,
    COMBINED_NAME,
    SPEC_NAME,
    Outcome,
    cell_dir,
    cell_state,
    combine,
    open_combined,
    write_combined,
)
from purify.sweep.progress import CellProgress
from purify.sweep.spec import Cell, SweepSpec
from purify.threads import available_cores as machine_cores

FIGURES_NAME = "figures"
#: How often the driver refreshes the progress bar while no cell finishes (seconds).
POLL_SECONDS = 1.0


class SweepError(Exception):
    """The sweep cannot start (folder, cluster, stored cells); one line fit to show a user."""


class SweepInterrupted(Exception):
    """Ctrl-C: the finished cells are stored and combined; re-running resumes the rest."""


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to run one cell (small and picklable)."""

    name: str
    run: str  # absolute path of the cell's run folder
    config_json: str  # the resolved config
    analyses: tuple[str, ...]
    threads: int
    command: tuple[str, ...] | None = None  # the driver's command line, for the cells' provenance


@dataclass
class SweepResult:
    dataset: xr.Dataset
    path: Path  # SWEEP/sweep.zarr
    skipped: int  # cells already complete at the start
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # cells run in this session


# --------------------------------------------------------------------------------------
# On a worker
# --------------------------------------------------------------------------------------




def run_cell(task: CellTask) -> dict[str, Any]:
    """Run (or resume, or finish the analyses of) one cell; never raises.

    Returns ``{"status": "complete" | "failed", "error", "retry", "worker"}``;
    ``retry`` is False for failures that would repeat identically (divergence, bad config).
    """
    import dask
    import torch
    from threadpoolctl import threadpool_limits

    from purify.pipeline import analyze_locked, simulate_or_resume
    from purify.train import DivergenceError

    torch.set_num_threads(task.threads)
    out: dict[str, Any] = {"status": "complete", "error": "", "retry": False, "worker": _worker_name()}
    try:
        # Synchronous dask: the stores are opened lazily by xarray, and on a worker dask would
        # otherwise send those reads to the cluster as sub-tasks, queued behind other cells.
        with threadpool_limits(limits=task.threads), warnings.catch_warnings(), \
                dask.config.set(scheduler="synchronous"):
            warnings.simplefilter("ignore")  # theory warnings are printed once by the driver
            # A store killed while being created starts afresh; a failed cell (a write error,
            # which may not repeat) resumes from its checkpoint.
            simulate_or_resume(RunConfig.from_json(task.config_json), task.run, progress=False,
                               restart_unreadable=True, resume_failed=True, command=task.command)
            analyze_locked(task.run, task.analyses)
    except DivergenceError as e:
        out.update(status="failed", error=f"DivergenceError: {S.one_line(e, 300, kind=False)}")
    except Exception as e:  # any failure of one cell is recorded, never raised to the others
        out.update(status="failed", error=f"{type(e).__name__}: {S.one_line(e, 300, kind=False)}",
                   retry=not isinstance(e, ConfigError))
    return out


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


# --------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def default_workers(threads_per_cell: int) -> int:
    """Local workers so that ``workers × threads_per_cell`` fills the cores without going over."""
    return max(1, machine_cores() // threads_per_cell)


@contextlib.contextmanager
def dask_client(*, scheduler: str | None, workers: int, log: Callable[[str], None]) -> Iterator[Any]:
    """A connected :class:`distributed.Client`: to ``scheduler`` if given, else to a new
    loopback :class:`~distributed.LocalCluster` of ``workers`` one-thread processes (closed on exit)."""
    from distributed import Client, LocalCluster

    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {S.one_line(e, 300, kind=False)}") from None
        else:
            # A random loopback port: never a clash with another cluster's 8787, never public.
            # Dask's own logs stay quiet (a worker losing its heartbeat while the cluster closes
            # logs a traceback); what matters, each cell's failure, is reported by the sweep.
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
                                   scheduler_kwargs={"dashboard": _has_bokeh()})
            client = Client(cluster)
    except SweepError:
        raise
    except Exception as e:
        if cluster is not None:
            cluster.close()
        raise SweepError(f"cannot start a local Dask cluster: {S.one_line(e, 300, kind=False)}") from None
    try:
        services = client.scheduler_info().get("services", {})
        where = f"Dask scheduler {client.scheduler.address}" if scheduler else "local Dask cluster"
        n = len(client.nthreads())
        log(f"{where}: {n} worker{'s' * (n != 1)}, {sum(client.nthreads().values())} task slots")
        if "dashboard" not in services:
            log("dashboard: none (the scheduler serves no HTTP)")
        elif scheduler or _has_bokeh():
            log(f"dashboard: {client.dashboard_link}")
        else:
            base = client.dashboard_link.rsplit("/", 1)[0]
            log(f"dashboard: needs bokeh>=3.1 (pip install bokeh); worker pages: {base}/info/main/workers.html")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------------------
# The sweep folder
# --------------------------------------------------------------------------------------


def prepare_sweep_dir(out: Path) -> None:
    """Create the sweep folder, or check an existing one holds a sweep (or nothing)."""
    if not out.exists():
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise SweepError(f"cannot create sweep folder {out}: {e.strerror or e}") from None
        return
    if not out.is_dir():
        raise SweepError(f"{out} exists and is not a folder")
    ours, temp = {SPEC_NAME, CELLS_NAME, COMBINED_NAME, FIGURES_NAME}, (f".{COMBINED_NAME}.", f".{SPEC_NAME}.")
    foreign = [n for n in os.listdir(out) if not S.is_ours(n, ours, temp)]
    if foreign:
        raise SweepError(f"{out} is not empty and holds no purify sweep ({foreign[0]!r}); "
                         "choose an empty or new folder")


@contextlib.contextmanager
def _sweep_lock(out: Path) -> Iterator[None]:
    """One driver per sweep folder (the run-folder lock of :mod:`purify.store`, on ``SWEEP/.lock``)."""
    lock = S.RunLock(out)
    try:
        lock.__enter__()
    except S.StoreError as e:
        raise SweepError(str(e)) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _remove_sweep_files(out: Path) -> None:
    for name in (CELLS_NAME, COMBINED_NAME, FIGURES_NAME, SPEC_NAME):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where}={a!r} there, {b!r} here"


def check_sweep_folder(out: Path) -> None:
    """Refuse a sweep folder whose own entries are of the wrong kind (e.g. ``cells`` a file)."""
    for name, folder in ((CELLS_NAME, True), (SPEC_NAME, False)):
        path = out / name
        if path.exists() and path.is_dir() != folder:
            kind = "folder" if folder else "file"
            raise SweepError(f"{path} is not a {kind}; the sweep folder is damaged: remove it, or "
                             "pass --overwrite to start the sweep again")


def check_stored_cells(out: Path, cells: list[Cell]) -> None:
    """Refuse, before any work, cell folders that hold a run of another config, or a damaged
    run: every stored cell is verified (a complete one down to each chunk, since it will be
    skipped and its numbers combined as they are)."""
    redo = "remove that folder to run the cell again, or --overwrite to start the sweep again"
    for cell in cells:
        run = cell_dir(out, cell)
        if run.exists() and not run.is_dir():
            raise SweepError(f"{run} is not a folder; {redo}")
        if not S.store_path(run).exists() or S.half_created(run):
            continue  # absent, or killed while its store was being created: started afresh
        try:
            attrs = S.verify_run(run, data=False)
            if attrs.get("status") == "complete":
                S.verify_run(run)
            stored = json.loads(attrs["config_json"])
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except S.StoreError as e:
            raise SweepError(f"cell {cell.name}: {e}") from None
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise SweepError(f"cell {cell.name}: the stored config of {run} is unreadable "
                             f"({type(e).__name__}); {redo}") from None
        if attrs["config_json"] != cell.config.to_json():
            diff = _first_difference(stored, json.loads(cell.config.to_json()))
            raise SweepError(f"{run} holds a run of another config ({diff}); use another --out, "
                             "or --overwrite to start the sweep again")


def check_devices(cells: list[Cell]) -> None:
    """Refuse cells asking for CUDA on a machine without it, before any cell starts."""
    import torch

    for cell in cells:
        if cell.config.device.startswith("cuda") and not torch.cuda.is_available():
            raise SweepError(f"invalid device={cell.config.device} (cell {cell.name}): CUDA is not "
                             "available on this machine (use cpu)")


def _write_spec(out: Path, spec: SweepSpec) -> None:
    S.write_text_atomically(out / SPEC_NAME, json.dumps(json.loads(spec.to_json()), indent=2) + "\n")


def stored_spec(out: str | Path) -> SweepSpec | None:
    """The spec a sweep folder was last run with, or None."""
    path = Path(out) / SPEC_NAME
    if not path.exists():
        return None
    try:
        return SweepSpec.from_json(path.read_text())
    except OSError as e:  # e.g. a folder named spec.json
        raise SweepError(f"cannot read {path}: {e.strerror or e}; the sweep folder is damaged: "
                         "remove it, or give the sweep file and --overwrite") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, ConfigError) as e:
        raise SweepError(f"cannot read {path}: {S.one_line(e, 300, kind=False)}; the sweep folder is damaged: "
                         "remove it, or give the sweep file and --overwrite") from None


def _complete(run: Path, analyses: tuple[str, ...]) -> bool:
    from purify.analysis import done

    status, _ = cell_state(run)
    return status == "complete" and all(a in done(run) for a in analyses)


# --------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------


def _execute(client: Any, tasks: list[CellTask], *, retries: int, progress: CellProgress,
             runner: Callable[[CellTask], dict[str, Any]]) -> dict[str, Outcome]:
    from distributed import wait

    attempts: dict[str, int] = {}
    outcomes: dict[str, Outcome] = {}
    live: dict[Any, CellTask] = {}

    def submit(task: CellTask) -> None:
        attempts[task.name] = attempts.get(task.name, 0) + 1
        key = f"purify-cell-{task.name}-{attempts[task.name]}-{uuid.uuid4().hex[:8]}"
        live[client.submit(runner, task, key=key, pure=False)] = task

    for task in tasks:
        submit(task)
    try:
        while live:
            try:
                finished, _ = wait(list(live), timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                finished = set()
            for future in finished:
                task = live.pop(future)
                try:
                    res = future.result()
                except Exception as e:  # the worker died (KilledWorker), lost connection, ...
                    res = {"status": "failed", "error": f"{type(e).__name__}: {S.one_line(e, 300, kind=False)}",
                           "retry": True, "worker": ""}
                if res["status"] == "failed" and res["retry"] and attempts[task.name] <= retries:
                    progress.retried += 1
                    submit(task)
                    continue
                outcomes[task.name] = Outcome(res["status"], res["error"], attempts[task.name], res["worker"])
                progress.finished(res["status"])
            slots = sum(client.nthreads().values()) if live else 0
            progress.show(min(len(live), slots))
    except KeyboardInterrupt:
        client.cancel(list(live))
        raise SweepInterrupted(f"interrupted with {len(live)} cells unfinished") from None
    return outcomes


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    workers: int | None = None,
    threads_per_cell: int = 1,
    scheduler: str | None = None,
    retries: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    runner: Callable[[CellTask], dict[str, Any]] = run_cell,
    command: Sequence[str] | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` that is not complete in ``out`` and combine them all.

    Parameters
    ----------
    spec : the sweep; every cell's config is validated before anything else happens.
    out : the sweep folder (``out/cells/<cell>/`` run folders, ``out/sweep.zarr``).
    workers : local worker processes (default: cores // threads_per_cell); ignored with
        ``scheduler``.
    threads_per_cell : torch and BLAS threads of each cell. Results depend on the thread count
        (float round-off), not on the number of workers.
    scheduler : address of a running Dask scheduler to submit to instead of a local cluster;
        its workers must have purify installed and see ``out`` at the same path.
    retries : extra attempts for a cell that failed for a reason that may not repeat.
    overwrite : delete the sweep's cells and results first and run everything again.
    runner : the task run per cell (:func:`run_cell`, or a wrapper of it); it must be picklable
        by value or importable on the workers.
    command : the command line recorded as the provenance of the sweep and of its cells
        (default ``sys.argv``).

    Raises
    ------
    purify.config.ConfigError
        A cell's config is invalid (nothing was started).
    SweepError
        The folder, a stored cell or the cluster cannot be used (nothing was started).
    SweepInterrupted
        Ctrl-C; what finished is stored and combined.
    """
    cells = spec.cells()
    check_devices(cells)
    record = provenance.current(kind="sweep", config=spec.to_json(), threads=threads_per_cell,
                                scheduler=scheduler or "local", command=command)
    out = Path(out).absolute()  # workers may run elsewhere: give them absolute paths
    prepare_sweep_dir(out)
    with _sweep_lock(out):
        if overwrite:
            _remove_sweep_files(out)
        check_sweep_folder(out)
        check_stored_cells(out, cells)
        (out / CELLS_NAME).mkdir(exist_ok=True)
        _write_spec(out, spec)
        notes = dict.fromkeys(note for c in cells for note in c.config.theory_warnings())
        for note in notes:
            log(f"purify: warning: {note}")
        todo = [c for c in cells if not _complete(cell_dir(out, c), spec.analyses)]
        skipped = len(cells) - len(todo)
        log(f"sweep {out}: {len(cells)} cells over {' x '.join(f'{a.name}({len(a.values)})' for a in spec.axes)}; "
            f"{skipped} complete (skipped), {len(todo)} to run")
        outcomes: dict[str, Outcome] = {}
        interrupted: SweepInterrupted | None = None
        if todo:
            tasks = [CellTask(c.name, str(cell_dir(out, c)), c.config.to_json(), spec.analyses, threads_per_cell,
                              tuple(record.command or ())) for c in todo]
            n_workers = workers or default_workers(threads_per_cell)
            with dask_client(scheduler=scheduler, workers=n_workers, log=log) as client:
                bar = CellProgress(len(tasks), progress)
                try:
                    outcomes = _execute(client, tasks, retries=retries, progress=bar, runner=runner)
                except SweepInterrupted as e:
                    interrupted = e
                finally:
                    bar.close()
        import dask

        with dask.config.set(scheduler="synchronous"):  # never through a client left as default
            ds = combine(spec, out, cells, outcomes)
            ds.attrs.update(provenance.attrs([*_earlier_records(out), record]))
            path = write_combined(out, ds)
        if interrupted is not None:
            raise interrupted
        return SweepResult(ds, path, skipped, outcomes)


def _earlier_records(out: Path) -> list[provenance.Provenance]:
    """The provenance of the sweep's earlier sessions, kept by the result each one rewrites."""
    try:
        return provenance.read(open_combined(out).attrs)
    except (S.StoreError, OSError, ValueError, KeyError):  # none yet, or unreadable: start afresh
        return []


def format_result(result: SweepResult, *, max_failures: int = 10) -> str:
    """What a finished sweep prints: the counts, each failed cell's error, where the result is."""
    ds = result.dataset
    a = ds.attrs
    lines = [f"sweep: {a['n_cells']} cells: {a['n_complete']} complete ({result.skipped} were already), "
             f"{a['n_failed']} failed" + (f", {a['n_pending']} pending" if a["n_pending"] else "")]
    failed = [(str(c), str(e)) for c, e, s in zip(ds.cell.values.ravel(), ds.error.values.ravel(),
                                                   ds.status.values.ravel(), strict=True) if s == "failed"]
    for cell, error in failed[:max_failures]:
        lines.append(f"  failed {cell}: {error}")
    if len(failed) > max_failures:
        lines.append(f"  ... and {len(failed) - max_failures} more (variables status, error of the result)")
    lines.append(f"result: {result.path}")
    return "\n".join(lines)

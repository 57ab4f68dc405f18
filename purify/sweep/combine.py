"""The combined result of a sweep: one dataset indexed by the sweep axes, in ``SWEEP/sweep.zarr``.

Every value is read back from the cells' own run stores (``summary_json``, the scalar
variables of ``analysis/<name>``), never from what a worker sent back, so a sweep whose
cells were computed over several sessions — some skipped as already complete — combines
into the same dataset as one computed in a single go.  Cells that did not complete hold
NaN, with ``status`` (``complete`` / ``failed`` / ``pending``) and ``error`` saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from zarr.codecs import ZstdCodec

from purify import store as S
from purify.sweep.spec import SUMMARIES, Cell, SweepSpec

SWEEP_FORMAT = "purify-sweep"
SWEEP_FORMAT_VERSION = 1
COMBINED_NAME = "sweep.zarr"
CELLS_NAME = "cells"
SPEC_NAME = "spec.json"


@dataclass
class Outcome:
    """What this session learned about a cell it ran (the store has the rest)."""

    status: str  # complete | failed
    error: str = ""
    attempts: int = 0
    worker: str = ""


def cell_dir(sweep: str | Path, cell: Cell) -> Path:
    return Path(sweep) / CELLS_NAME / cell.name


def _dig(summary: Mapping[str, Any], path: tuple[str, ...]) -> float:
    node: Any = summary
    for part in path:
        if not isinstance(node, Mapping) or node.get(part) is None:
            return float("nan")
        node = node[part]
    return float(node)


def cell_state(run: Path) -> tuple[str, str]:
    """``(status, reason)`` of a cell's store: a run store's own status, or ``pending``."""
    try:
        attrs = S.read_attrs(run)
    except S.StoreError:
        return "pending", ""
    return str(attrs.get("status")), str(attrs.get("status_reason", ""))


def analysis_scalars(run: Path, name: str) -> dict[str, float]:
    """The 0-d variables of ``analysis/<name>`` (e.g. ``lottery.sure_win_fraction``)."""
    from purify.analysis import done, open_analysis

    if name not in done(run):
        return {}
    ds = open_analysis(run, name)
    return {str(v): float(ds[v].values) for v in ds.data_vars if ds[v].ndim == 0}


def combine(spec: SweepSpec, sweep: str | Path, cells: list[Cell],
            outcomes: Mapping[str, Outcome] | None = None) -> xr.Dataset:
    """The sweep's dataset: one variable per summary (and per scalar of each analysis, named
    ``<analysis>_<variable>``), plus ``status``, ``error``, ``attempts``, ``elapsed_seconds``
    and ``cell`` (the cell's folder), over the axes' dimensions."""
    outcomes = outcomes or {}
    shape, dims = spec.shape, spec.dims
    values: dict[str, np.ndarray] = {n: np.full(shape, np.nan) for n in spec.summaries}
    extra: dict[str, np.ndarray] = {}
    status = np.full(shape, "pending", dtype=object)
    error = np.full(shape, "", dtype=object)
    attempts = np.zeros(shape, np.int64)
    elapsed = np.full(shape, np.nan)
    folder = np.full(shape, "", dtype=object)
    for cell in cells:
        run, i = cell_dir(sweep, cell), cell.index
        folder[i] = f"{CELLS_NAME}/{cell.name}"
        state, reason = cell_state(run)
        outcome = outcomes.get(cell.name)
        if outcome is not None:
            attempts[i] = outcome.attempts
        if state == "complete":
            attrs = S.read_attrs(run)
            summary = json.loads(attrs["summary_json"])
            for name in spec.summaries:
                values[name][i] = _dig(summary, SUMMARIES[name][0])
            elapsed[i] = float(attrs.get("elapsed_seconds", np.nan))
            missing = []
            for analysis in spec.analyses:
                scalars = analysis_scalars(run, analysis)
                if not scalars:
                    missing.append(analysis)
                for var, v in scalars.items():
                    extra.setdefault(f"{analysis}_{var}", np.full(shape, np.nan))[i] = v
            if missing and outcome is not None and outcome.status == "failed":
                status[i], error[i] = "failed", outcome.error  # the run is fine, an analysis is not
            else:
                status[i] = "complete"
        elif outcome is not None and outcome.status == "failed":
            status[i], error[i] = "failed", outcome.error
        elif state == "failed":
            status[i], error[i] = "failed", reason
    coords = {a.name: (a.name, _coordinate(a.values)) for a in spec.axes}
    # a summary that is itself an axis (sweeping --tau) is the coordinate already
    data_vars: dict[str, Any] = {
        name: (dims, values[name], {"long_name": SUMMARIES[name][1]}) for name in spec.summaries
        if name not in coords}
    for name in sorted(extra):
        data_vars[name] = (dims, extra[name], {"long_name": f"analysis/{name.split('_', 1)[0]} scalar "
                                                             f"{name.split('_', 1)[1]}"})
    data_vars.update({
        "status": (dims, status, {"long_name": "complete | failed | pending (not run to the end yet)"}),
        "error": (dims, error, {"long_name": "why the cell failed (empty unless failed)"}),
        "attempts": (dims, attempts, {"long_name": "attempts at the cell in the latest sweep session "
                                                   "(0: already complete, skipped)"}),
        "elapsed_seconds": (dims, elapsed, {"long_name": "training and evaluation time of the cell's last session"}),
        "cell": (dims, folder, {"long_name": "the cell's run folder, relative to the sweep folder"}),
    })
    from purify import __version__

    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(
        format=SWEEP_FORMAT, format_version=SWEEP_FORMAT_VERSION, spec_json=spec.to_json(),
        purify_version=__version__, n_cells=len(cells), n_complete=int((status == "complete").sum()),
        n_failed=int((status == "failed").sum()), n_pending=int((status == "pending").sum()),
    )
    return ds


def _coordinate(values: tuple[Any, ...]) -> np.ndarray:
    """Axis values as a coordinate: numbers and strings as they are, anything else (tuples of
    a list-valued option) as labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values)
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    return np.array([json.dumps(v) for v in values], dtype=object)


# --------------------------------------------------------------------------------------
# Writing and reading SWEEP/sweep.zarr
# --------------------------------------------------------------------------------------


def write_combined(sweep: str | Path, ds: xr.Dataset) -> Path:
    """Write ``ds`` to ``SWEEP/sweep.zarr``, replacing the old one.

    The new store is written beside the old one through :class:`purify.store.AtomicLocalStore`
    and swapped in by two renames, so a reader finds either the old or the new dataset whole
    (or, between the renames, none), never a mix.
    """
    sweep = Path(sweep)
    target = sweep / COMBINED_NAME
    tag = f"{os.getpid()}-{uuid.uuid4().hex}"
    fresh, old = sweep / f".{COMBINED_NAME}.new-{tag}", sweep / f".{COMBINED_NAME}.old-{tag}"
    ds = ds.drop_encoding()
    encoding = {str(n): {"compressors": (ZstdCodec(level=3),)} for n in ds.variables}
    try:
        ds.to_zarr(S.AtomicLocalStore(fresh), mode="w-", zarr_format=3, consolidated=False, encoding=encoding)
        if target.exists():
            os.rename(target, old)
        os.rename(fresh, target)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def open_combined(sweep: str | Path) -> xr.Dataset:
    """Load ``SWEEP/sweep.zarr`` (``sweep`` may also be the ``sweep.zarr`` path).

    Raises
    ------
    purify.store.StoreError
        There is no sweep there, or it is of another format.
    """
    path = Path(sweep)
    if path.name != COMBINED_NAME:
        path = path / COMBINED_NAME
    if not (path / "zarr.json").exists():
        raise S.StoreError(f"no sweep result at {path} (run: purify sweep ... --out {path.parent})")
    import dask

    try:
        with dask.config.set(scheduler="synchronous"):  # a small read: never through a cluster
            ds = xr.open_zarr(path, consolidated=False, zarr_format=3).load()
    except Exception as e:  # a foreign or corrupted store can fail in any zarr/xarray layer
        raise S.StoreError(f"cannot open {path}: {S.one_line(e)}") from e
    if ds.attrs.get("format") != SWEEP_FORMAT:
        raise S.StoreError(f"{path} is not a purify sweep result")
    return ds

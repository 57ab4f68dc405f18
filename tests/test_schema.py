"""The run-store schema (:mod:`purify.schema`) is what a run writes: groups, variables, dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from purify import schema as V
from purify import store as S
from purify.analysis.rundata import RunData
from purify.data import Batch
from purify.train import Timeline


def _template(run) -> dict:
    data = RunData.open(run)
    ev = data.config.eval
    n_attacks, n_radii = len(ev.attacks), len(ev.radii)
    ideal = {"clean": 0.5, "robust": {n: np.zeros((n_attacks, n_radii)) for n in ev.norms},
             "strongest": {n: np.zeros(n_radii) for n in ev.norms}}
    return V.store_template(data.config, Timeline.from_config(data.config), data.problem, ideal, data.test.y)


def _kind(dtype: np.dtype) -> str:
    return "str" if dtype.kind in "UTO" else dtype.kind  # zarr reads strings back as StringDType


def _layout(ds) -> dict:
    return {name: (tuple(ds[name].dims), ds[name].shape, _kind(ds[name].dtype)) for name in ds.variables}


def test_template_matches_the_groups_a_run_writes(tiny_run):
    template = _template(tiny_run)
    stored = zarr.open_group(S.store_path(tiny_run), mode="r")
    assert set(stored.group_keys()) == {g for g in template if g} | set(V.FINAL_GROUPS)
    for group, ds in template.items():
        got = S.load_run(tiny_run, group) if group else S.load_run(tiny_run)
        # Same variables and coordinates, each with the same dims, shape and kind of dtype.
        assert _layout(got) == _layout(ds), group
        for name in ds.coords:
            np.testing.assert_array_equal(got[name].values, ds[name].values)
    problem = S.load_run(tiny_run, V.PROBLEM)
    np.testing.assert_array_equal(problem[V.M].values, template[V.PROBLEM][V.M].values)


def test_template_holds_no_copies_of_its_nans_and_writes_the_bytes_of_a_full_one(tiny_run, tmp_path):
    """The snapshots' NaN template is a view of one NaN (a default run's is 104 MB otherwise), and
    a store written from it has the bytes of one written from materialized arrays."""
    template = _template(tiny_run)
    snaps = template[V.SNAPSHOTS]
    assert all(np.asarray(snaps[v].values).strides == (0,) * snaps[v].ndim for v in (V.W, V.B, V.SIGMA_RHO))
    full = {g: ds.copy(deep=True) for g, ds in template.items()}  # deep copies materialize the views
    assert np.asarray(full[V.SNAPSHOTS][V.W].values).strides != (0, 0, 0)
    attrs = {"status": "running"}
    for name, groups in (("view", template), ("full", full)):
        S.create_store(tmp_path / name, groups, attrs, chunk_along={V.SNAPSHOTS: V.STEP})

    def files(run):
        root = S.store_path(run)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = files(tmp_path / "view"), files(tmp_path / "full")
    assert a.keys() == b.keys() and len(a) > 10
    assert all(a[k] == b[k] for k in a if k != "zarr.json")  # the root's attrs name the run


def test_final_layout_matches_the_final_groups(tiny_run):
    for group, variables in V.FINAL_LAYOUT.items():
        ds = S.load_run(tiny_run, group)
        assert {name: tuple(ds[name].dims) for name in ds.data_vars} == variables, group


def test_rows_fit_the_template_and_reproduce_stored_values(tiny_run):
    root, snaps = S.load_run(tiny_run), S.load_run(tiny_run, V.SNAPSHOTS)
    template = _template(tiny_run)
    # A log point that is also a snapshot: the log row of the stored network is the stored log row.
    step = int(np.intersect1d(root.iteration.values, snaps.step.values)[0])
    s = snaps.sel(step=step)
    W, b, sr = (torch.from_numpy(s[v].values) for v in (V.W, V.B, V.SIGMA_RHO))
    log = V.log_row(3.0, 1.5, 2, W, b, sr)
    assert log[V.LOSS] == np.float32(1.5) and log[V.TRAIN_ACCURACY] == np.float32(0.75)
    logged = root.sel(iteration=step)
    for name in (V.BIAS_MEAN, V.SIGMA_RHO_MEAN, V.WEIGHT_NORM_MEAN):
        assert log[name] == logged[name].values, name
    rows = {V.ITERATION: (template[V.ROOT], log), V.STEP: (template[V.SNAPSHOTS], V.snapshot_row(W, b, sr))}
    norms = [str(n) for n in root.norm.values]
    at = root.sel(step=step)
    stored = {"clean": float(at[V.CLEAN_ACCURACY]),
              "robust": {n: at[V.ROBUST_ACCURACY].sel(norm=n).values for n in norms},
              "strongest": {n: at[V.STRONGEST_ACCURACY].sel(norm=n).values for n in norms}}
    rows["eval"] = (template[V.ROOT], V.eval_row(stored, norms))
    for dim, (ds, row) in rows.items():
        for name, value in row.items():
            along = V.STEP if dim == "eval" else dim
            assert value.shape == ds[name].isel({along: 0}).shape and value.dtype == np.float32, name
    for name, value in rows["eval"][1].items():
        np.testing.assert_array_equal(value, at[name].values)
    np.testing.assert_array_equal(rows[V.STEP][1][V.W], s[V.W].values)


def test_stored_labels_replace_the_regenerated_ones_and_must_match_the_held_out_set():
    test = Batch(torch.randn(5, 3), torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0]), torch.zeros(5, 4))
    assert V.with_stored_labels(test, xr.Dataset()) is test  # a store made before the labels were stored
    stored = np.array([1, 1, -1, 1, -1], dtype=np.int8)
    got = V.with_stored_labels(test, xr.Dataset({V.TEST_LABEL: ("example", stored)}))
    assert got.y.dtype == test.y.dtype and got.y.tolist() == [1.0, 1.0, -1.0, 1.0, -1.0]
    assert got.x is test.x and got.z is test.z
    short = xr.Dataset({V.TEST_LABEL: ("example", stored[:4])})
    with pytest.raises(ValueError, match="4 held-out labels for 5 held-out examples"):
        V.with_stored_labels(test, short)
    assert test.y.tolist() == [1.0, -1.0, 1.0, 1.0, -1.0]  # the regenerated set is not modified

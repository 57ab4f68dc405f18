"""Sweeps on Dask: a real 2-worker LocalCluster (processes, loopback) runs 8 tiny cells —
4 of them diverge by design (lr = 1e30), one was interrupted beforehand and resumes, one fails
once on its worker and is retried — and the combined dataset must equal, bit for bit, the same
cells run one by one in this process.  Then: re-running skips the complete cells (their files are
untouched), bad specs are refused with one line and exit 2, and sweep-plot draws the figures.

Why bitwise: a cell is the same deterministic computation wherever it runs — the same resolved
config and seed, one torch/BLAS thread in the worker as here (``conftest``'s fixture,
``threadpool_limits(1)``), the same CPU — and the combined values are the float32 results the
run stores hold, read back as they are.  Any difference would mean the sweep ran another
computation (a wrong config, a wrong thread count, a resumed cell that is not bit-for-bit).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import xarray as xr
from threadpoolctl import threadpool_limits

import purify.trainer as trainer_module
from purify import matmul, provenance
from purify import store as S
from purify.analysis import analyze
from purify.cli import main
from purify.plots.sweep import seed_stats, sweep_heatmaps
from purify.simulate import Stopped, simulate
from purify.summary import summarize
from purify.sweep import SUMMARIES, build_spec, open_combined, run_cell, run_sweep, spec_from_dict
from purify.sweep.combine import analysis_scalars, cell_dir, combine
from purify.sweep.execute import dask_client
from purify.sweep.spec import load_sweep_file

SPEC = """
[base]
data = {k = 3, n_test = 200}
train = {clean_steps = 60, adv_steps = 20, batch_size = 128, clean_snapshots = 3, adv_snapshots = 2, log_points = 10}
eval = {n_eval = 100, pgd_steps = 3}

[axes]
"data.d" = [16, 24]
lr = [1.0, 1e30]      # 1e30 diverges at the first steps: the cells designed to fail
seed = {range = [0, 2]}

[collect]
analyses = ["lottery", "mixture"]
"""
ANALYSES = ("lottery", "mixture")
INTERRUPTED = "d24-lr1.0-seed1"  # stopped mid-run before the sweep; the sweep resumes it
FLAKY = "d16-lr1.0-seed1"  # its first attempt dies on the worker; the retry completes it

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this file


def run_main(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_usage_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purify: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def flaky_runner(marker: Path):
    """``run_cell``, except that the first attempt at ``FLAKY`` raises on the worker."""

    def run(task):
        if task.name == FLAKY and not marker.exists():
            marker.touch()
            raise RuntimeError("transient failure injected by the test")
        return run_cell(task)

    return run


def stop_at(step: int):
    """Make ``simulate`` receive SIGINT during its ``step``-th training step (main thread)."""
    real = trainer_module.train_step
    calls = {"n": 0}

    def train_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    return train_step


# --------------------------------------------------------------------------------------
# The sweep, on a real cluster
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(_one_thread):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                      silence_logs=logging.ERROR) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def cells(spec_file):
    return spec_from_dict(load_sweep_file(spec_file)).cells()


@pytest.fixture(scope="module")
def swept(tmp_path_factory, cluster, spec_file, cells):
    """The sweep run once: ``(folder, dataset, stdout, stderr, exit code)``."""
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    interrupted = next(c for c in cells if c.name == INTERRUPTED)
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        mp.setattr(trainer_module, "train_step", stop_at(45))
        with pytest.raises(Stopped):
            simulate(interrupted.config, cell_dir(out, interrupted), progress=False)
    assert S.read_attrs(cell_dir(out, interrupted))["status"] == "stopped"

    spec = spec_from_dict(load_sweep_file(spec_file))
    log = io.StringIO()
    result = run_sweep(spec, out, scheduler=cluster, retries=1, progress=False,
                       log=lambda m: print(m, file=log), runner=flaky_runner(out.parent / "flaky-marker"))
    return out, result, log.getvalue()


def _fresh_backend() -> str:
    return matmul.choose_backend(override=os.environ.get(matmul.ENV))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cells):
    """The complete cells run one by one in this process: ``{cell name: (summary, scalars)}``."""
    root = tmp_path_factory.mktemp("reference")
    refs = {}
    with threadpool_limits(1):
        for cell in cells:
            if cell.config.train.lr > 1e3:
                continue
            run = root / cell.name
            # each cell on the backend the sweep ran it on: the interrupted one resumed on the
            # blas its first session (plain simulate) started with, the others on a fresh choice
            with matmul.using("blas" if cell.name == INTERRUPTED else _fresh_backend()):
                simulate(cell.config, run, progress=False)
                analyze(run, names=ANALYSES)
            refs[cell.name] = (summarize(run), {a: analysis_scalars(run, a) for a in ANALYSES})
    return refs


def test_combined_dataset_equals_cells_run_one_by_one(swept, cells, reference):
    out, result, log = swept
    ds = open_combined(out)
    assert ds.status.dims == ("d", "lr", "seed")
    assert ds.d.values.tolist() == [16, 24] and ds.lr.values.tolist() == [1.0, 1e30]
    assert ds.seed.values.tolist() == [0, 1]
    assert len(reference) == 4
    for cell in cells:
        at = dict(cell.values)
        if cell.name not in reference:
            continue
        summary, scalars = reference[cell.name]
        for name in SUMMARIES:
            expected = summary
            for part in SUMMARIES[name][0]:
                expected = expected.get(part) if isinstance(expected, dict) else None
            got = ds[name].sel(at).item()
            if expected is None:  # a block this run has not (bias_only_model without raised biases): NaN
                assert np.isnan(got), (cell.name, name, got)
                continue
            assert got == expected, (cell.name, name, got, expected)  # bitwise, see the module docstring
        for analysis, values in scalars.items():
            assert values, analysis
            for var, expected in values.items():
                got = ds[f"{analysis}_{var}"].sel(at).item()
                assert got == expected or (np.isnan(got) and np.isnan(expected)), (cell.name, var, got, expected)
    # what the driver returned is what it stored
    xr.testing.assert_identical(ds, result.dataset)
    assert json.loads(ds.attrs["spec_json"])["axes"][1] == {"path": ["train", "lr"], "values": [1.0, 1e30]}


def test_failed_cells_are_recorded_and_the_rest_complete(swept):
    out, result, log = swept
    ds = open_combined(out)
    ok, bad = ds.sel(lr=1.0), ds.sel(lr=1e30)
    assert (ok.status == "complete").all() and (ok.error == "").all()
    assert (bad.status == "failed").all()
    for err in bad.error.values.ravel():
        assert err.startswith("DivergenceError: diverged at step") and "lr=1e+30" in err, err
    assert np.isnan(bad.robust_accuracy_after).all() and np.isfinite(ok.robust_accuracy_after).all()
    # divergence repeats bit for bit from the same seed: never retried; the injected crash is
    attempts = {c: int(a) for c, a in zip(ds.cell.values.ravel(), ds.attempts.values.ravel(), strict=True)}
    assert attempts[f"cells/{FLAKY}"] == 2
    assert all(a == 1 for c, a in attempts.items() if c != f"cells/{FLAKY}")
    assert ds.attrs["n_complete"] == 4 and ds.attrs["n_failed"] == 4 and ds.attrs["n_pending"] == 0
    # every failed cell's store says why, too
    for cell in bad.cell.values.ravel():
        attrs = S.read_attrs(out / cell)
        assert attrs["status"] == "failed" and "diverged" in attrs["status_reason"]
    assert "8 cells over d(2) x lr(2) x seed(2); 0 complete (skipped), 8 to run" in log
    assert "Dask scheduler tcp://127.0.0.1:" in log and "2 workers" in log



def test_cells_read_their_stores_without_sending_subtasks_to_the_cluster(swept, cluster):
    """xarray reads a store lazily; on a worker, dask would ship those reads to the cluster as
    sub-tasks queued behind other cells (cells then pile up on one worker): the only tasks the
    scheduler ever saw must be cells."""
    from distributed import Client

    with Client(cluster) as client:
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert prefixes and all(p.startswith("purify-cell") for p in prefixes), prefixes


def test_interrupted_cell_resumed_from_its_checkpoint(swept, cells):
    out, _, _ = swept
    run = out / "cells" / INTERRUPTED
    attrs = S.read_attrs(run)
    assert attrs["status"] == "complete"
    # resumed on the backend it started with; a cell the sweep started chose afresh
    assert attrs["matmul"] == "blas"
    other = next(c for c in cells if c.name != INTERRUPTED and c.config.train.lr < 1e3)
    assert S.read_attrs(out / "cells" / other.name)["matmul"] == _fresh_backend()
    # the resumed session trained only the remaining steps (its own elapsed time) and, by the
    # bitwise comparison above, ended where an uninterrupted run ends.
    total = next(c for c in cells if c.name == INTERRUPTED).config.train
    assert total.clean_steps + total.adv_steps == 80


def test_rerun_skips_complete_cells(swept, spec_file, cluster):
    out, result, _ = swept
    complete = [out / c for c, s in zip(result.dataset.cell.values.ravel(), result.dataset.status.values.ravel(),
                                        strict=True) if s == "complete"]
    stamps = {p: sorted((f.relative_to(p), f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())
              for p in complete}
    # through the CLI this time, on the running cluster
    code, stdout, err = run_main("sweep", spec_file, "--out", out, "--scheduler", cluster, "--quiet")
    assert code == 1, err  # 1: some cells failed (again)
    assert "8 cells over d(2) x lr(2) x seed(2); 4 complete (skipped), 4 to run" in err
    assert f"Dask scheduler {cluster}: 2 workers" in err
    assert "sweep: 8 cells: 4 complete (4 were already), 4 failed" in stdout
    assert stdout.count("  failed cells/d") == 4
    for p in complete:  # not a byte of a complete cell was rewritten
        assert sorted((f.relative_to(p), f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file()) == stamps[p]
    ds = open_combined(out)
    assert (ds.attempts.sel(lr=1.0) == 0).all() and (ds.attempts.sel(lr=1e30) == 1).all()
    for name in ds.data_vars:
        if name != "attempts" and name != "error":
            xr.testing.assert_identical(ds[name], result.dataset[name])
    # each session of the sweep adds its record; this one's command line is the CLI's
    sessions = provenance.read(ds.attrs)
    assert [r.kind for r in sessions] == ["sweep", "sweep"]
    assert sessions[-1].command[:3] == ["purify", "sweep", str(spec_file)]


def test_cells_record_the_command_of_the_sweep_that_ran_them(swept):
    out, result, _ = swept
    driver = provenance.read(result.dataset.attrs)[-1]
    assert driver.kind == "sweep" and driver.threads == 1 and driver.extra["scheduler"].startswith("tcp://")
    # the interrupted cell's first session called simulate directly, which writes no record (the
    # one its stored attributes imply stands for it); its resumed session ran for the sweep
    first, resumed = provenance.read(S.read_attrs(out / "cells" / INTERRUPTED))
    assert first.command is None and first.kind == "run"
    assert resumed.command == driver.command and resumed.host and resumed.threads == 1


def test_sweep_plot_draws_heatmaps_and_lines(swept):
    out, result, _ = swept
    code, stdout, err = run_main("sweep-plot", out)
    assert code == 0, err
    names = sorted(Path(line).name for line in stdout.split())
    assert names == ["heatmap_lr_d.png", "lines_d.png", "lines_lr.png"]
    assert all((out / "figures" / n).stat().st_size > 10_000 for n in names)
    # the failed cells are marked as failed on the heatmap, not drawn as values
    fig = sweep_heatmaps(result.dataset, x="d", y="lr", variables=["robust_accuracy_after"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts.count("failed 2/2") == 2
    mean = result.dataset.robust_accuracy_after.sel(lr=1.0).mean("seed").values
    assert {f"{m:.2f}" for m in mean} <= {t.split("\n")[0] for t in texts}
    assert_usage_error(*run_main("sweep-plot", out, "--x", "k"), "invalid --x='k'", "allowed: d, lr")
    assert_usage_error(*run_main("sweep-plot", out, "--vars", "nope"), "unknown variable 'nope'")


def test_local_cluster_is_loopback_single_threaded_and_says_so():
    logs: list[str] = []
    with dask_client(scheduler=None, workers=1, log=logs.append) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert list(client.nthreads().values()) == [1]
        # BLAS/OpenMP pools of the worker process start at one thread (Dask's pre-spawn environ)
        assert set(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}
    assert logs[0] == "local Dask cluster: 1 worker, 1 task slots"
    assert logs[1].startswith("dashboard: ")


# --------------------------------------------------------------------------------------
# Spec parsing and validation (no cluster)
# --------------------------------------------------------------------------------------


def test_seed_stats_skip_failed_seeds():
    da = xr.DataArray([[0.2, 0.4, np.nan], [np.nan, np.nan, np.nan]], dims=("d", "seed"))
    mean, sd, n = seed_stats(da)
    assert mean.values[0] == pytest.approx(0.3) and np.isnan(mean.values[1])
    assert sd.values[0] == pytest.approx(np.std([0.2, 0.4], ddof=1)) and np.isnan(sd.values[1])
    assert n.values.tolist() == [2, 0]


def test_spec_forms_and_quick_options():
    spec = spec_from_dict({"base": {"seed": 7}, "axes": {
        "m": [8, 16], "sigma-x": {"linspace": [0.0, 0.3, 4]}, "tau": {"geomspace": [0.1, 10, 3]},
        "radii": [[0.5, 1.0], [1.0, 2.0]]}}, aliases={"m": "net.width"})
    assert [a.path for a in spec.axes] == [("net", "width"), ("data", "sigma_x"), ("eval", "tau"),
                                           ("eval", "radii"), ("seed",)]
    assert spec.axes[1].values == (0.0, 0.1, 0.2, 0.3)
    assert spec.axes[2].values == (0.1, 1.0, 10.0)
    assert spec.axes[-1].values == (7,)  # the base's seed becomes a one-value axis
    assert spec.shape == (2, 4, 3, 2, 1)
    cells = spec.cells()
    assert cells[0].name == "width8-sigma_x0.0-tau0.1-radii0.5_1.0-seed7"
    assert cells[0].config.net.width == 8 and cells[-1].config.eval.radii == (1.0, 2.0)
    assert len({c.name for c in cells}) == len(cells) == 48

    quick = build_spec(None, [("data.d", (16, 24)), ("data.k", (3,)), ("seed", (0, 1, 2))])
    assert quick.dims == ("d", "seed") and quick.base == {"data": {"k": 3}}
    assert [c.config.seed for c in quick.cells()][:3] == [0, 1, 2]


def test_a_summary_that_is_an_axis_is_its_coordinate(tmp_path):
    # sweeping the radius: the summary "tau" and the axis "tau" are the same numbers
    spec = build_spec(None, [("data.d", (16,)), ("data.k", (2,)), ("eval.tau", (0.1, 0.2)), ("seed", (0,))])
    ds = combine(spec, tmp_path, spec.cells())
    assert ds.tau.values.tolist() == [0.1, 0.2] and "tau" in ds.coords
    assert "robust_accuracy_after" in ds and ds.robust_accuracy_after.dims == ("tau", "seed")


@pytest.mark.parametrize("argv, needles", [
    (["--d", "16,24", "--k", "20"], ["cell d=16 seed=0: invalid k=20: must be an integer in [1, d=16]"]),
    (["--d", "16,x"], ["invalid --d: 'x' is not an integer"]),
    (["--d", "16,16"], ["invalid axis data.d: value 16 appears twice"]),
    (["--lr", "1,-1"], ["cell lr=-1.0 seed=0: invalid lr=-1.0: must be > 0"]),
    (["--d", "16,24", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], ["--workers sizes the local cluster"]),
    (["--d", "16,24", "--seed", "1", "--seeds", "3"], ["--seed and --seeds cannot be combined"]),
    (["--d", "16,24", "--retries", "-1"], ["invalid --retries=-1"]),
    (["--d", "16,24", "--analyses", "lasso,nope"], ["invalid analyses='nope'"]),
    ([], ["give a sweep file or options with several values"]),
], ids=["k>d", "not-int", "duplicate", "negative-lr", "workers+scheduler", "seed+seeds", "retries",
        "analysis", "nothing"])
def test_bad_quick_options_are_one_line_errors(tmp_path, argv, needles):
    out = tmp_path / "sweep"
    assert_usage_error(*run_main("sweep", *argv, "--out", out, "--quiet"), *needles)
    assert not out.exists()  # refused before anything was created


@pytest.mark.parametrize("text, needles", [
    ("[axes]\nfoo = [1, 2]\n", ["invalid axis 'foo': not a config option"]),
    ("[axes]\nd = 16\n", ["invalid axis d=16: must be a list of values or a table"]),
    ("[axes]\nseed = {range = [3]}\n", ["invalid axis seed: range = [start, stop]"]),
    ("[axes]\nd = []\n", ["invalid axis d: it has no values"]),
    ("[axes]\nlr = [1.0, 2.0]\n[base]\ntrain = {lr = 1.0}\n", ["train.lr is both in [base] and an axis"]),
    ("[axes]\nd = [16]\n[base]\ndata = {nope = 1}\n", ["unknown option data.nope"]),
    ("[axes]\nd = [16]\n[extra]\n", ["unknown table 'extra'"]),
    ("[axes\n", ["cannot parse sweep file"]),
], ids=["unknown-axis", "scalar-axis", "bad-range", "empty-axis", "axis-in-base", "unknown-base-key",
        "unknown-table", "toml-syntax"])
def test_bad_sweep_files_are_one_line_errors(tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "sweep"
    assert_usage_error(*run_main("sweep", path, "--out", out, "--quiet"), *needles)
    assert not out.exists()


def test_sweep_folders_that_cannot_be_used_are_refused(tmp_path, swept, spec_file):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_usage_error(*run_main("sweep", "--d", "16,24", "--k", "3", "--out", foreign, "--quiet"),
                       "holds no purify sweep ('notes.txt')")
    # the same cells with another base config: refused before any work, naming the difference
    out, _, _ = swept
    before = sorted(p.name for p in (out / "cells").iterdir())
    assert_usage_error(*run_main("sweep", spec_file, "--n-eval", "50", "--out", out, "--quiet"),
                       "holds a run of another config (eval.n_eval=100 there, 50 here)", "--overwrite")
    assert sorted(p.name for p in (out / "cells").iterdir()) == before

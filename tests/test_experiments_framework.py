"""`purify experiment`: the folder, store, figures and summary every experiment writes."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from purify import experiments
from purify import store as S
from purify.cli import main
from purify.experiments import Claim, Result


def _toy_run(ctx):
    g = ctx.generator("values")
    import torch

    values = torch.rand(5, generator=g, dtype=torch.float64).numpy()
    fig = Figure()
    fig.add_subplot().plot(values)
    ds = xr.Dataset({"value": ("x", values)}, coords={"x": np.arange(5)})
    return Result(
        groups={"": ds},
        figures={"values": fig},
        claims=[Claim("values lie in [0, 1)", f"max {values.max():.3f}", "by construction", True)],
        params={"n": 5, "quick": ctx.quick},
        notes="A toy experiment.",
    )


@pytest.fixture
def toy(monkeypatch):
    mod = types.ModuleType("purify.experiments.toy")
    mod.__doc__ = "A toy experiment for the framework tests."
    mod.TITLE, mod.PAPER, mod.FULL_TIME = "Toy", "nobody 2026", "1 s"
    mod.run = _toy_run
    monkeypatch.setitem(sys.modules, "purify.experiments.toy", mod)
    monkeypatch.setitem(experiments.EXPERIMENTS, "toy", "toy")
    return mod


def test_experiment_writes_store_figures_and_summary(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["experiment", "toy", "--quick", "--quiet", "--seed", "3", "--out", str(out)]) == 0
    attrs = S.read_attrs(out)
    assert attrs["status"] == "complete" and attrs["kind"] == "experiment" and attrs["seed"] == 3
    ds = S.load_run(out, require_complete=True)
    assert ds["value"].shape == (5,)
    assert (out / "figures" / "values.png").stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert "| values lie in [0, 1) |" in summary and "agrees" in summary and "--quick" in summary
    assert "wrote" in capsys.readouterr().out
    # Same seed, same numbers: the experiment is reproducible from (name, seed).
    again = tmp_path / "again"
    experiments.run_experiment("toy", again, quick=True, seed=3, progress=False)
    np.testing.assert_array_equal(S.load_run(again)["value"].values, ds["value"].values)


def test_existing_folder_needs_overwrite_and_foreign_folders_are_refused(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["experiment", "toy", "--quiet", "--out", str(out)]) == 0
    before = S.load_run(out)["value"].values
    assert main(["experiment", "toy", "--quiet", "--seed", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(S.load_run(out)["value"].values, before)  # untouched
    assert main(["experiment", "toy", "--quiet", "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    assert not np.array_equal(S.load_run(out)["value"].values, before)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    assert main(["experiment", "toy", "--quiet", "--overwrite", "--out", str(foreign)]) == 2
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["experiment", "nope"], "allowed: lazy-vs-feature"),
        (["experiment"], "unknown name None"),
        (["experiment", "toy", "--seed", "-1"], "--seed"),
        (["experiment", "toy", "--device", "tpu"], "--device"),
        (["experiment", "toy", "--seed", "x"], "integer"),
    ],
)
def test_bad_experiment_input_is_one_line_exit_2(toy, argv, fragment, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_list_names_every_experiment(toy, capsys):
    assert main(["experiment", "--list"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "A toy experiment" in out


def test_info_prints_an_experiments_summary_and_claims(toy, tmp_path, capsys):
    import json

    out = tmp_path / "toy"
    assert main(["experiment", "toy", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert capsys.readouterr().out == (out / "summary.md").read_text()
    assert main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["experiment"] == "toy" and info["claims"][0]["agrees"] is True and info["params"]["n"] == 5

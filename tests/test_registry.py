"""The registries of attackers, analyses and figures (purify/registry.py): every list derives
from them, and the README's "How to extend" walk-through works as written.

The toy analysis and figure are registered, run on the shared tiny run and unregistered; their
code is the README's, written to a module of a temporary folder (the README puts it in
``purify/analysis/weight_norms.py``).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from purify import plots, registry
from purify import store as S
from purify.analysis import ANALYSES, analyze, done, open_analysis
from purify.analysis.rundata import RunData
from purify.attacks import ATTACKS, TRAINING_ATTACKS, make_attack
from purify.cli import main
from purify.config import ConfigError, EvalConfig, TrainConfig
from purify.registry import Analysis, Attacker, FigureEntry, Registry
from purify.sweep.spec import SWEEP_ANALYSES

# The README's toy analysis and its figure, verbatim.
TOY_ANALYSIS = '''
"""Toy analysis: the norm of every neuron at every snapshot."""

import numpy as np
import xarray as xr

from purify.analysis.rundata import RunData


def compute(data: RunData) -> xr.Dataset:
    norms = np.stack([np.linalg.norm(data.W(int(s)), axis=1) for s in data.steps])  # (steps, m)
    return xr.Dataset({"weight_norm": (("step", "neuron"), norms)}, coords={"step": data.steps})
'''
TOY_FIGURE = '''
from matplotlib.figure import Figure

from purify.plots.source import FigureInput


def draw_weight_norms(r: FigureInput) -> Figure | None:
    ds = r.analysis("weight_norms")
    fig = Figure(figsize=(5, 3))
    ax = fig.add_subplot()
    ax.plot(ds.step, ds.weight_norm.median("neuron"))
    ax.set(xlabel="step", ylabel="median ||w_i||", title=r.caption)
    return fig
'''
# The README's toy attacker: no perturbation at all (a control below the noise control).
TOY_ATTACKER = '''
import torch

from purify.attacks import Attack


class Zero(Attack):
    def run(self, model, x, y, tau, *, generator):
        return torch.zeros_like(x)
'''


@pytest.fixture
def toy_modules(tmp_path, monkeypatch):
    """The toy modules importable as ``toy_weight_norms``, ``toy_weight_norms_plot``, ``toy_zero``."""
    folder = tmp_path / "toys"
    folder.mkdir()
    for name, code in (("toy_weight_norms", TOY_ANALYSIS), ("toy_weight_norms_plot", TOY_FIGURE),
                       ("toy_zero", TOY_ATTACKER)):
        (folder / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def registered(toy_modules):
    """The toy analysis and figure registered for one test, unregistered after it."""
    entries = [
        (registry.ANALYSES, Analysis("weight_norms", "toy_weight_norms", sweep=True,
                                     summary="norm of every neuron at every snapshot")),
        (registry.FIGURES, FigureEntry("weight_norms", "toy_weight_norms_plot:draw_weight_norms",
                                       summary="median neuron norm over training", analysis="weight_norms")),
    ]
    for reg, entry in entries:
        reg.register(entry)
    try:
        yield
    finally:
        for reg, entry in entries:
            reg.unregister(entry.name)


def test_a_registered_analysis_and_figure_run_on_a_run_and_leave_no_trace(tiny_run, tmp_path, registered):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # Every list derived from the registries has the new entries, in registration order (last).
    assert ANALYSES[-1] == "weight_norms" and "weight_norms" in SWEEP_ANALYSES
    assert plots.FIGURES[-1] == "weight_norms"
    assert plots.plan(run, ["weight_norms"]) == {
        "weight_norms": f"no weight_norms analysis (run: purify analyze {S.run_dir(run)})"}
    # The CLI accepts it (its --only list is the registry) and stores it like any analysis.
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["analyze", str(run), "--only", "weight_norms"]) == 0
    assert out.getvalue().startswith("computed: weight_norms")
    assert done(run) == ["weight_norms"]
    ds = open_analysis(run, "weight_norms").load()
    data = RunData.open(run)
    np.testing.assert_array_equal(ds.step.values, data.steps)
    for i, step in enumerate(data.steps):  # the stored norms are the snapshot weights' row norms
        np.testing.assert_allclose(ds.weight_norm.values[i], np.linalg.norm(data.W(int(step)), axis=1))
    assert analyze(run, names=["weight_norms"]) == {}  # stored: nothing left to do
    # The figure is planned, drawn and written with the others.
    assert plots.plan(run, ["weight_norms"]) == {"weight_norms": None}
    (name, fig), = plots.draw(run, ["weight_norms"])
    assert name == "weight_norms" and len(fig.axes) == 1 and len(fig.axes[0].lines) == 1
    assert plots.caption(data.config, run.name) == fig.axes[0].get_title()
    paths = plots.plot_run(run, names=["weight_norms"])
    assert paths == [run / S.FIGURES_NAME / "weight_norms.png"] and paths[0].stat().st_size > 0


def test_unregistering_removes_the_entry_from_every_list(registered):
    registry.ANALYSES.unregister("weight_norms")
    registry.FIGURES.unregister("weight_norms")
    try:
        assert "weight_norms" not in ANALYSES and "weight_norms" not in SWEEP_ANALYSES
        with pytest.raises(ValueError, match="unknown figure 'weight_norms'; allowed: training_curves"):
            list(plots.draw("unused", ["weight_norms"]))
        with pytest.raises(ValueError, match="unknown analysis 'weight_norms'"):
            analyze("unused", names=["weight_norms"])
    finally:  # the fixture unregisters them again
        registry.ANALYSES.register(Analysis("weight_norms", "toy_weight_norms", True, ""))
        registry.FIGURES.register(FigureEntry("weight_norms", "toy_weight_norms_plot:draw_weight_norms", ""))


def test_a_registered_attacker_is_built_and_accepted_by_the_config(toy_modules):
    before = EvalConfig().attacks
    registry.ATTACKERS.register(Attacker("zero", "toy_zero:Zero.from_options", "cheap", False, "no perturbation"))
    try:
        attack = make_attack("zero", "l2")
        x = torch.ones(3, 4)
        assert torch.equal(attack(None, x, torch.ones(3), 0.5, generator=torch.Generator()), torch.zeros(3, 4))
        assert "zero" in ATTACKS and "zero" not in TRAINING_ATTACKS
        assert EvalConfig(attacks=("fgm", "zero")).attacks == ("fgm", "zero")
        # The default evaluation grid is fixed when the config module is imported: a run's
        # config does not change because some module registered an attacker.
        assert EvalConfig().attacks == before
        with pytest.raises(ConfigError, match="invalid adv_attack='zero': allowed: fgm, pgd"):
            TrainConfig(adv_attack="zero")
    finally:
        registry.ATTACKERS.unregister("zero")
    with pytest.raises(ConfigError, match=r"allowed: fgm, pgd, dense, noise$"):
        EvalConfig(attacks=("zero",))


def test_the_readme_walk_through_is_the_tested_code():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## How to extend")[1].split("\n## ")[0]
    for code in (TOY_ANALYSIS, TOY_FIGURE):
        assert f"```python\n{code.strip()}\n```" in section


def test_lists_derive_from_the_entries():
    assert tuple(ATTACKS) == ("fgm", "pgd", "dense", "noise")
    assert tuple(TRAINING_ATTACKS) == ("fgm", "pgd")
    assert tuple(registry.ATTACKERS.where(tier="strong")) == ("converged_pgd", "shrink")
    assert tuple(SWEEP_ANALYSES) == tuple(n for n in ANALYSES if n != "transfer")
    needs = {n: registry.FIGURES.entry(n).analysis for n in plots.FIGURES}
    assert needs["theta_histograms"] == "purification" and needs["training_curves"] is None
    # Every reference resolves to code (a typo in a registry entry fails here, not in a run).
    for entry in registry.ATTACKERS._entries.values():
        assert callable(registry.load(entry.factory))
    for entry in registry.ANALYSES._entries.values():
        assert callable(registry.load(entry.module).compute)
    for entry in registry.FIGURES._entries.values():
        assert callable(registry.load(entry.draw))
        assert entry.analysis is None or entry.analysis in ANALYSES


def test_registry_refuses_a_taken_name_and_names_the_allowed_ones():
    reg: Registry[Analysis] = Registry("analysis", [Analysis("a", "m", True, ""), Analysis("b", "m", False, "")])
    view = reg.where(sweep=True)
    assert list(reg) == ["a", "b"] and reg[1] == "b" and reg[:1] == ("a",) and view == ("a",)
    with pytest.raises(ValueError, match="analysis 'a' is already registered"):
        reg.register(Analysis("a", "other", False, ""))
    with pytest.raises(ValueError, match="unknown analysis 'c'; allowed: a, b"):
        reg.entry("c")
    reg.register(Analysis("c", "m", True, ""))
    assert view == ("a", "c") and len(view) == 2  # views are live
    reg.unregister("a")
    assert list(reg) == ["b", "c"] and view == ("c",)
    with pytest.raises(ValueError, match="tier 'fast'"):
        Attacker("x", "m:f", "fast", False, "")

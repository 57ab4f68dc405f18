"""Tests of the figures.

Two layers.  Every figure function is tested on a small hand-built dataset with the schema it
reads, checking that the drawn data *is* the data (lines, bars, images) as well as the
presentation contract (title, labelled axes, legend where several series, caption).  Then one
tiny real run is simulated and analysed once: :func:`purify.plots.plot_run` must write every
figure the run has data for as valid files, and skip those whose analysis is absent.  A figure
whose analysis module is missing or fails on the tiny run is skipped in the second layer with
the module's name — the first layer still tests the figure's code.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from purify import plots
from purify.analysis import ANALYSES, analyze, done, module
from purify.analysis.rundata import RunData
from purify.cli import main
from purify.plots.lasso import curve_variables, lasso_curves
from purify.plots.neurons import (
    as_coefficients,
    coefficient_heatmap,
    heatmap_order,
    lottery_trajectories,
    pure_vs_dense,
    theta_histograms,
)
from purify.plots.robustness import direction_norm_control, perturbation_density, robust_vs_tau
from purify.plots.training import clean_end_of, training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000
CAPTION = "d=16   k=3   m=32   dictionary=orthogonal   σ_x=0.1   seed=1   τ(ℓ₂)=0.5"
TINY = [
    "--d", "16", "--k", "3", "--m", "32", "--clean-steps", "40", "--adv-steps", "10", "--n-test", "60",
    "--n-eval", "40", "--batch-size", "64", "--pgd-steps", "2", "--clean-snapshots", "4",
    "--adv-snapshots", "2", "--log-points", "4", "--radii", "0.5,1,2", "--attacks", "fgm,pgd,dense",
    "--seed", "1", "--quiet", "--no-analysis",
]


# --------------------------------------------------------------------------------------
# Checks shared by every figure
# --------------------------------------------------------------------------------------


def data_lines(ax) -> list:
    """Lines that carry data (axvline/axhline have two points and are references)."""
    return [ln for ln in ax.lines if np.atleast_1d(ln.get_xdata()).size > 2]


def check_figure(fig: Figure, caption: str | None = CAPTION) -> None:
    """The presentation contract: figure title, title and labelled axes on every panel (the
    colour bar's label on colour bars), a legend on any panel with several series, the caption."""
    assert isinstance(fig, Figure)
    assert fig._suptitle is not None and fig._suptitle.get_text().strip()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert visible
    for ax in visible:
        bar = getattr(ax, "_colorbar", None)
        if bar is not None:
            assert (ax.get_ylabel() or ax.get_xlabel()).strip(), "colour bar without label"
            continue
        assert ax.get_title().strip(), "panel without title"
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"unlabelled axes: {ax.get_title()}"
        series = len(data_lines(ax)) + len(ax.containers) + len(ax.collections)
        if series >= 2:
            assert ax.get_legend() is not None or fig.legends, f"no legend: {ax.get_title()}"
    if caption is not None:
        assert any(t.get_text() == caption for t in fig.texts), "caption line missing"


def line_with(ax, color: str, lw: float):
    found = [ln for ln in ax.lines if to_rgba(ln.get_color()) == to_rgba(color) and ln.get_linewidth() == lw]
    assert len(found) == 1, f"{len(found)} lines of colour {color} and width {lw}"
    return found[0]


# --------------------------------------------------------------------------------------
# Hand-built datasets with the store's and the analyses' schemas
# --------------------------------------------------------------------------------------

STEPS = np.array([0, 5, 20, 60, 80, 100])
CLEAN_END = 60
ITERS = np.arange(10, 101, 10)
NORMS, ATTACKS, RADII = ["l2", "linf"], ["fgm", "pgd", "dense"], np.array([0.5, 1.0, 2.0])


def root_dataset(seed: int = 0) -> xr.Dataset:
    g = np.random.default_rng(seed)
    n_s = len(STEPS)
    robust = g.uniform(0.0, 0.9, (n_s, 2, 3, 3))
    taus = np.array([[0.5, 1.0, 2.0], [0.05, 0.1, 0.2]]) * 0.4
    return xr.Dataset(
        {
            "loss": ("iteration", g.uniform(0.3, 1.2, ITERS.size)),
            "train_accuracy": ("iteration", g.uniform(0.2, 0.9, ITERS.size)),
            "clean_accuracy": ("step", g.uniform(0.5, 1.0, n_s)),
            "robust_accuracy": (("step", "norm", "attack", "radius"), robust),
            "strongest_accuracy": (("step", "norm", "radius"), robust.min(axis=2) - 0.05),
            "ideal_clean_accuracy": ((), 0.97),
            "ideal_strongest_accuracy": (("norm", "radius"), g.uniform(0.3, 0.9, (2, 3))),
            "ideal_robust_accuracy": (("norm", "attack", "radius"), g.uniform(0.3, 0.9, (2, 3, 3))),
        },
        coords={
            "iteration": ITERS,
            "iteration_phase": ("iteration", np.where(ITERS <= CLEAN_END, "clean", "adversarial")),
            "step": STEPS, "phase": ("step", np.where(STEPS <= CLEAN_END, "clean", "adversarial")),
            "norm": NORMS, "attack": ATTACKS, "radius": RADII, "tau": (("norm", "radius"), taus),
        },
    )


def test_clean_end_is_the_last_clean_step():
    assert clean_end_of(root_dataset()) == CLEAN_END
    assert clean_end_of(root_dataset().drop_vars("phase")) == CLEAN_END  # from iteration_phase
    # The store writes StringDType coordinates, which do not cast with astype(str).
    root = root_dataset().assign_coords(phase=("step", np.array(["clean"] * 4 + ["adversarial"] * 2,
                                                                   dtype=np.dtypes.StringDType())))
    assert clean_end_of(root) == CLEAN_END


def test_training_curves_draw_the_record():
    root = root_dataset()
    fig = training_curves(root, caption=CAPTION)
    check_figure(fig)
    ax_loss, ax_acc, ax_eval = fig.axes
    for ax in fig.axes:  # the phase boundary on every panel
        assert any(list(ln.get_xdata()) == [CLEAN_END, CLEAN_END] for ln in ax.lines)
    clean_it = ITERS[ITERS <= CLEAN_END]
    clean_line, adv_line = data_lines(ax_loss)
    np.testing.assert_array_equal(clean_line.get_xdata(), clean_it)
    np.testing.assert_allclose(clean_line.get_ydata(), root.loss.values[: clean_it.size])
    np.testing.assert_allclose(adv_line.get_ydata(), root.loss.values[clean_it.size:])
    np.testing.assert_allclose(np.concatenate([ln.get_ydata() for ln in data_lines(ax_acc)]),
                               root.train_accuracy.values)
    clean, robust = data_lines(ax_eval)
    np.testing.assert_allclose(clean.get_ydata(), root.clean_accuracy.values)
    np.testing.assert_allclose(robust.get_ydata(), root.strongest_accuracy.sel(norm="l2", radius=1.0).values)
    assert "τ=0.4" in robust.get_label()


def test_robust_vs_tau_draws_each_model_attacker_and_the_ideal():
    root = root_dataset()
    fig = robust_vs_tau(root, clean_step=CLEAN_END, robust_step=100, caption=CAPTION)
    check_figure(fig)
    assert len(fig.axes) == len(NORMS)
    for ax, norm in zip(fig.axes, NORMS, strict=True):
        # 2 models × (3 attackers + strongest) + ideal; τ = 0 prepended with the clean accuracy
        assert len(data_lines(ax)) == 2 * (len(ATTACKS) + 1) + 1
        for color, step in (("tab:blue", CLEAN_END), ("tab:red", 100)):
            best = line_with(ax, color, 2.2)
            np.testing.assert_allclose(best.get_xdata(), [0.0, *root.tau.sel(norm=norm).values])
            np.testing.assert_allclose(best.get_ydata(), [float(root.clean_accuracy.sel(step=step)),
                                                          *root.strongest_accuracy.sel(step=step, norm=norm).values])
        ideal = line_with(ax, "black", 1.8)
        np.testing.assert_allclose(ideal.get_ydata()[1:], root.ideal_strongest_accuracy.sel(norm=norm).values)
        assert ideal.get_linestyle() == "--"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "clean model (step 60)" in labels and "robust model (step 100)" in labels
    assert {f"attack: {a}" for a in ATTACKS} <= set(labels)


def purification_dataset(m: int = 50, n_pairs: int = 300, control: bool = True) -> xr.Dataset:
    g = np.random.default_rng(1)
    ds = xr.Dataset(
        {
            "theta_init_clean": ("neuron", g.uniform(0.0, 0.4, m)),
            "theta_init_robust": ("neuron", g.uniform(0.0, 0.4, m)),
            "theta_clean_robust": ("neuron", g.uniform(0.8, 1.0, m)),
            "theta_pairs_init": ("pair", g.uniform(0.0, 0.3, n_pairs)),
            "theta_pairs_clean": ("pair", g.uniform(0.0, 0.2, n_pairs)),
            "theta_pairs_robust": ("pair", g.uniform(0.0, 0.2, n_pairs)),
            "relative_change": ("step", [np.nan, np.nan, np.nan, 0.0, 0.02, 0.04]),
        },
        coords={"neuron": np.arange(m), "pair": np.arange(n_pairs), "step": STEPS},
    )
    if control:
        variants = ["clean", "robust", "clean_dir_robust_norm", "robust_dir_clean_norm"]
        ds = ds.assign(
            control_accuracy=(("variant", "radius"), g.uniform(0, 0.8, (4, 3))),
            control_clean_accuracy=("variant", g.uniform(0.8, 1.0, 4)),
            gain_total=((), 0.12), gain_from_norm=((), 0.09), gain_from_direction=((), -0.01),
        ).assign_coords(variant=variants, radius=RADII, tau=("radius", RADII * 0.4))
        ds.attrs["control_radius_multiple"] = 1.0
    return ds


def test_theta_histograms_count_every_neuron_and_mark_medians():
    ds = purification_dataset()
    fig = theta_histograms(ds, caption=CAPTION)
    check_figure(fig)
    for ax, var in zip(fig.axes[:3], ("theta_init_clean", "theta_init_robust", "theta_clean_robust"), strict=True):
        heights = sum(p.get_height() for p in ax.patches)
        assert heights == ds.sizes["neuron"]  # every neuron falls in some bin of [0, 1]
        median = [ln for ln in ax.lines if ln.get_linestyle() == "--"][0]
        assert median.get_xdata()[0] == pytest.approx(float(np.median(ds[var].values)))
    assert len(fig.axes[3].patches) == 3  # clean, robust and init pair histograms (step outlines)
    assert "0.04" in fig.axes[2].get_title()  # the last relative change


def test_direction_norm_control_bars_are_the_gains():
    ds = purification_dataset()
    fig = direction_norm_control(ds, caption=CAPTION)
    check_figure(fig)
    ax_tau, ax_gain = fig.axes
    assert [p.get_height() for p in ax_gain.patches] == pytest.approx([0.12, 0.09, -0.01])
    clean = line_with(ax_tau, "tab:blue", 1.8)
    np.testing.assert_allclose(clean.get_ydata(), [float(ds.control_clean_accuracy[0]),
                                                   *ds.control_accuracy.sel(variant="clean").values])


def lottery_coefficients() -> tuple[xr.DataArray, dict[int, int]]:
    """Neuron 3's feature 2 grows 10× per snapshot and wins; neuron 7 is lucky for feature 0 but
    feature 5 overtakes it; other coefficients stay small."""
    g = np.random.default_rng(2)
    D = 12
    C = g.normal(0, 0.001, (len(STEPS), 2, D))
    C[:, 0, 2] = 0.02 * 10.0 ** np.arange(len(STEPS)) / 1e3
    C[:, 1, 0] = 0.05
    C[:, 1, 5] = 0.01 * 3.0 ** np.arange(len(STEPS))
    return as_coefficients(C, np.array([3, 7]), STEPS), {3: 2, 7: 0}


def test_lottery_trajectories_highlight_the_lucky_feature():
    coef, lucky = lottery_coefficients()
    fig = lottery_trajectories(coef, lucky, clean_end=CLEAN_END, n_features=4, caption=CAPTION)
    check_figure(fig)
    ax3, ax7 = [ax for ax in fig.axes if ax.get_visible()]
    assert ax3.get_xscale() == "log" and ax3.get_yscale() == "log"
    hi = line_with(ax3, "tab:orange", 2.6)
    np.testing.assert_array_equal(hi.get_xdata(), STEPS[1:])  # step 0 left out of the log axis
    np.testing.assert_allclose(hi.get_ydata(), coef.sel(neuron=3, feature=2).values[1:] ** 2)
    assert len([ln for ln in ax3.lines if to_rgba(ln.get_color()) == to_rgba("0.6")]) == 4
    assert "wins at clean end" in ax3.get_title()
    # neuron 7: feature 5 is on top at the clean end (0.01·3³ = 0.27 > 0.05), drawn and named
    assert "loses" in ax7.get_title()
    assert any(t.get_text() == "winner j=5" for t in ax7.get_legend().get_texts())


def mixture_dataset() -> xr.Dataset:
    g = np.random.default_rng(3)
    n_s, m = len(STEPS), 40
    pure = g.uniform(0.5, 1.5, (n_s, m))
    dense = pure * np.linspace(0.6, 0.1, n_s)[:, None]
    active = np.ones((n_s, m), bool)
    active[:, :4] = False
    data = {"pure_norm": pure, "dense_norm": dense, "dense_to_pure": dense / pure,
            "dense_cos_mwstar": g.uniform(0.3, 0.9, (n_s, m))}
    ds = xr.Dataset({k: (("step", "neuron"), v) for k, v in data.items()},
                    coords={"step": STEPS, "neuron": np.arange(m)})
    ds["active"] = (("step", "neuron"), active)
    for k, v in data.items():
        ds[f"median_{k}"] = ("step", np.median(v[:, 4:], axis=1))
    ds.attrs.update(clean_end=CLEAN_END, pure_fraction=0.3)
    return ds


def test_pure_vs_dense_draws_the_medians():
    ds = mixture_dataset()
    fig = pure_vs_dense(ds, caption=CAPTION)
    check_figure(fig)
    ax_norm, ax_ratio, ax_cos = fig.axes
    pure, dense = data_lines(ax_norm)
    np.testing.assert_allclose(pure.get_ydata(), ds.median_pure_norm.values)
    np.testing.assert_allclose(dense.get_ydata(), ds.median_dense_norm.values)
    np.testing.assert_allclose(data_lines(ax_ratio)[0].get_ydata(), ds.median_dense_to_pure.values)
    np.testing.assert_allclose(data_lines(ax_cos)[0].get_ydata(), ds.median_dense_cos_mwstar.values)
    assert any(list(ln.get_xdata()) == [CLEAN_END, CLEAN_END] for ln in ax_norm.lines)


def test_heatmap_order_puts_each_neurons_top_feature_on_a_diagonal():
    """Neurons ``w_i = α_i e_{j(i)} + small``: rows sorted by j(i), first columns the j(i)."""
    g = np.random.default_rng(4)
    n, D = 6, 30
    tops = np.array([17, 3, 25, 3, 9, 0])
    before = g.normal(0, 0.01, (n, D))
    before[np.arange(n), tops] = [1.0, 2.0, 1.5, 0.5, 1.2, 0.8]
    after = 0.5 * before
    rows, cols = heatmap_order(before, after, top=3)
    assert list(tops[rows]) == sorted(tops)
    assert list(cols[:5]) == [0, 3, 9, 17, 25]  # distinct top features in row order
    assert len(set(cols)) == len(cols)
    # the union of every neuron's top 3 and nothing else
    union = {int(j) for r in range(n) for j in np.argsort(-np.abs(before[r]))[:3]}
    assert set(cols.tolist()) == union


def test_coefficient_heatmap_panels_share_one_scale():
    g = np.random.default_rng(5)
    n, D = 8, 40
    before = g.normal(0, 0.05, (n, D))
    before[np.arange(n), g.choice(D, n, replace=False)] = 1.0
    after = 0.7 * before
    ids = np.array([2, 5, 11, 13, 20, 31, 40, 44])
    fig = coefficient_heatmap(as_coefficients(before, ids), as_coefficients(after, ids), caption=CAPTION)
    check_figure(fig)
    img_b, img_a = (ax.images[0] for ax in fig.axes[:2])
    rows, cols = heatmap_order(before, after, 10)
    np.testing.assert_allclose(img_b.get_array(), np.abs(before)[np.ix_(rows, cols)])
    np.testing.assert_allclose(img_a.get_array(), np.abs(after)[np.ix_(rows, cols)])
    assert img_b.norm.vmin == img_a.norm.vmin == 0.0
    assert img_b.norm.vmax == img_a.norm.vmax == pytest.approx(1.0)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(i) for i in ids[rows]]


def perturbations_dataset(n: int = 30) -> xr.Dataset:
    g = np.random.default_rng(6)
    shape = (2, 2, n)
    return xr.Dataset(
        {"participation_ratio": (("model", "attack", "example"), g.uniform(0.05, 0.6, shape)),
         "topk_mass": (("model", "attack", "example"), g.uniform(0.3, 0.9, shape)),
         "cos_mwstar": (("model", "attack", "example"), g.uniform(0.0, 0.9, shape)),
         "participation_ratio_mwstar": ((), 1.0), "topk_mass_mwstar": ((), 0.2)},
        coords={"model": ["clean", "robust"], "attack": ["fgm", "pgd"], "example": np.arange(n)},
        attrs={"radius": 1.0, "tau": 0.4, "k": 3},
    )


def test_perturbation_density_histograms_every_example():
    ds = perturbations_dataset()
    fig = perturbation_density(ds, caption=CAPTION)
    check_figure(fig)
    for ax in fig.axes:
        assert len(ax.patches) == 4  # 2 models × 2 attackers, step outlines
    refs = [ln for ln in fig.axes[0].lines if np.atleast_1d(ln.get_xdata())[0] == 1.0]
    assert refs, "no M w* reference line"


def lasso_dataset() -> xr.Dataset:
    """The lasso analysis' schema (``purify/analysis/lasso.py``): ``error`` and ``n_nonzero``
    over ``(dictionary, target, alpha_index)`` — NaN after a path stops early —,
    ``span_residual`` and ``atoms_at_error`` over ``(dictionary, target)``."""
    n_alpha = 7
    dictionaries, targets = ["random", "clean", "robust", "true"], ["input", "clean_delta", "robust_delta"]
    nnz = np.broadcast_to(np.linspace(0, 20, n_alpha), (4, 3, n_alpha)) * np.arange(1, 5)[:, None, None]
    err = np.broadcast_to(np.linspace(1.0, 0.05, n_alpha), (4, 3, n_alpha)).copy()
    nnz = nnz.copy()
    nnz[0, :, -2:] = err[0, :, -2:] = np.nan  # the random dictionary's path stopped early
    return xr.Dataset(
        {"error": (("dictionary", "target", "alpha_index"), err, {"long_name": "relative error"}),
         "n_nonzero": (("dictionary", "target", "alpha_index"), nnz, {"long_name": "mean atoms used"}),
         "example_error": (("dictionary", "target", "example", "alpha_index"), np.zeros((4, 3, 2, n_alpha))),
         "span_residual": (("dictionary", "target"), np.full((4, 3), 0.01)),
         "atoms_at_error": (("dictionary", "target"), np.array([[np.nan] * 3, [12.0] * 3, [6.0] * 3, [3.0] * 3]))},
        coords={"dictionary": dictionaries, "target": targets, "alpha_index": np.arange(n_alpha)},
        attrs={"reference_error": 0.2},
    )


def test_lasso_curves_one_panel_per_target_one_curve_per_dictionary():
    ds = lasso_dataset()
    assert curve_variables(ds) == ("error", "n_nonzero", "alpha_index", "span_residual")
    # a shuffled path is drawn along increasing sparsity
    ds = ds.isel(alpha_index=np.random.default_rng(7).permutation(ds.sizes["alpha_index"]))
    fig = lasso_curves(ds, caption=CAPTION)
    check_figure(fig)
    assert len(fig.axes) == 3
    for ax, target in zip(fig.axes, ds.target.values, strict=True):
        lines = data_lines(ax)
        assert len(lines) == 4
        for ln, dictionary in zip(lines, ds.dictionary.values, strict=True):
            x = ds.n_nonzero.sel(dictionary=dictionary, target=target).values
            y = ds.error.sel(dictionary=dictionary, target=target).values
            ok = np.isfinite(x)
            order = np.argsort(x[ok])
            np.testing.assert_allclose(ln.get_xdata(), x[ok][order])
            np.testing.assert_allclose(ln.get_ydata(), y[ok][order])
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[1] == "clean features: 12 atoms at error 0.2"
        assert labels[0] == "random features: error 0.2 not reached"
        assert any(list(ln.get_ydata()) == [0.2, 0.2] for ln in ax.lines)  # reference error
    with pytest.raises(KeyError):
        curve_variables(ds.drop_vars("n_nonzero"))


# --------------------------------------------------------------------------------------
# A tiny real run: plot_run end to end
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    try:
        run = tmp_path_factory.mktemp("plots") / "run"
        assert main(["simulate", *TINY, "--out", str(run)]) == 0
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture(scope="module")
def analyzed_run(tiny_run, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the tiny run with every analysis that imports and runs; the others' reasons."""
    run = tmp_path_factory.mktemp("plots-analyzed") / "run"
    shutil.copytree(tiny_run, run)
    broken: dict[str, str] = {}
    for name in ANALYSES:
        if name == "transfer":  # needs a second run, and no figure draws it
            continue
        try:
            module(name)
        except ImportError as e:
            broken[name] = f"analysis module purify.analysis.{name} missing ({e})"
            continue
        try:
            analyze(run, names=[name])
        except Exception as e:  # another helper's module; the figure's own test is hand-built
            broken[name] = f"analysis module purify.analysis.{name} fails: {type(e).__name__}: {e}"
    return run, broken


def expected_figures(run: Path) -> list[str]:
    return [n for n, why in plots.plan(run).items() if why is None]


def check_png(path: Path) -> None:
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(raw) > MIN_PNG_BYTES, f"{path.name} is only {len(raw)} bytes"
    width, height = struct.unpack(">II", raw[16:24])  # IHDR
    assert width >= 600 and height >= 300


def test_plot_run_writes_every_figure_the_run_has_data_for(analyzed_run):
    run, _ = analyzed_run
    paths = plots.plot_run(run)
    expected = expected_figures(run)
    assert [p.name for p in paths] == [f"{n}.png" for n in expected]
    for p in paths:
        assert p.parent == run / "figures"
        check_png(p)
    assert sorted(q.name for q in (run / "figures").iterdir()) == sorted(p.name for p in paths)  # no temp files
    # figures 1, 2 and 6 plus one per analysis that imports and runs (reasons of the others in `broken`)
    assert {"training_curves", "robust_vs_tau", "coefficient_heatmap"} <= {p.stem for p in paths}


@pytest.mark.parametrize("name", [n for n in plots.FIGURES if plots.FIGURES.entry(n).analysis])
def test_figure_from_the_runs_analysis(analyzed_run, name):
    run, broken = analyzed_run
    need = plots.FIGURES.entry(name).analysis
    if need in broken:
        pytest.skip(broken[need])
    drawn = dict(plots.draw(run, [name]))
    assert list(drawn) == [name]
    cfg = RunData.open(run).config
    caption = plots.caption(cfg, run.name)
    for part in (f"d={cfg.data.d}", f"k={cfg.data.k}", f"m={cfg.net.width}", "dictionary=orthogonal",
                 "σ_x=0.1", "seed=1", "τ(ℓ₂)="):
        assert part in caption
    check_figure(drawn[name], caption)


def test_run_without_analyses_gets_the_training_figures_in_png_and_pdf(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert done(run) == []
    plan = plots.plan(run)
    # the training record, and the end-of-phase evaluation groups written at completion
    drawable = ["training_curves", "robust_vs_tau", "coefficient_heatmap", "threshold_frontier", "attack_strength"]
    assert [n for n, why in plan.items() if why is None] == drawable
    assert "purify analyze" in plan["lottery_trajectories"]
    paths = plots.plot_run(run, formats=("png", "pdf"))
    assert [p.name for p in paths] == [f"{n}.{fmt}" for n in drawable for fmt in ("png", "pdf")]
    for p in paths:
        if p.suffix == ".png":
            check_png(p)
        else:
            raw = p.read_bytes()
            assert raw[:5] == b"%PDF-" and raw.rstrip().endswith(b"%%EOF") and len(raw) > 5_000
    for _, fig in plots.draw(run):
        check_figure(fig, plots.caption(RunData.open(run).config, run.name))


def test_a_failed_write_leaves_the_old_figure_and_no_temp_file(tmp_path, monkeypatch):
    fig = training_curves(root_dataset(), caption=CAPTION)
    path = tmp_path / "training_curves.png"
    plots.save_figure(fig, path, "png")
    old = path.read_bytes()
    assert old[:8] == PNG_SIGNATURE

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, path, "png")
    assert path.read_bytes() == old
    assert [q.name for q in tmp_path.iterdir()] == ["training_curves.png"]


def test_unknown_names_and_formats_are_refused(tiny_run):
    with pytest.raises(ValueError, match="unknown figure 'nope'"):
        plots.plot_run(tiny_run, names=["nope"])
    with pytest.raises(ValueError, match="unknown figure format 'docx'"):
        plots.plot_run(tiny_run, formats=("docx",))
    assert not (tiny_run / "figures").exists()  # refused before anything was written

"""The figures of the end-of-phase evaluation, drawn from hand-built groups."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_rgba

from purify.plots import attack_strength, threshold_frontier
from purify.plots.evaluation import FRONTIER_MODELS

CAPTION = "d=16 k=3 seed=1"
R = np.round(np.arange(0.6, 2.05, 0.1), 1)


def groups() -> tuple[xr.Dataset, xr.Dataset]:
    g = np.random.default_rng(0)
    clean = np.linspace(0.9, 0.7, R.size)
    fast = np.stack([np.linspace(0.2, 0.5, R.size), np.linspace(0.3, 0.6, R.size)], axis=1)
    full = np.full_like(fast, np.nan)
    full[[8, 9, 10]] = fast[[8, 9, 10]] - 0.02
    threshold = xr.Dataset(
        {"clean_accuracy": ("r", clean), "robust_accuracy_fast": (("r", "norm"), fast),
         "robust_accuracy": (("r", "norm"), full)},
        coords={"r": R, "norm": ["l2", "linf"]}, attrs={"selected_r": 1.5})
    models = ["clean", "robust", "bias_only", "threshold", "ideal"]
    n = 80
    cc = (g.random((5, n)) < 0.85).astype(np.uint8)
    rc = (cc[:, None, :] & (g.random((5, 2, n)) < 0.5)).astype(np.uint8)
    evaluation = xr.Dataset({"clean_correct": (("model", "example"), cc),
                             "robust_correct": (("model", "norm", "example"), rc)},
                            coords={"model": models, "norm": ["l2", "linf"], "example": np.arange(n)},
                            attrs={"strength": "standard"})
    return threshold, evaluation


def test_threshold_frontier_draws_the_grid_candidates_and_models_with_se():
    threshold, evaluation = groups()
    fig = threshold_frontier(threshold, evaluation, caption=CAPTION)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and any(t.get_text() == CAPTION for t in fig.texts)
    for ax, norm in zip(axes, ["l2", "linf"], strict=True):
        assert ax.get_title() and ax.get_xlabel() == "clean accuracy"
        line = ax.lines[0]
        np.testing.assert_allclose(line.get_xdata(), threshold.clean_accuracy.values)
        np.testing.assert_allclose(line.get_ydata(), threshold.robust_accuracy_fast.sel(norm=norm).values)
        cand = ax.lines[1]
        np.testing.assert_allclose(cand.get_ydata(), threshold.robust_accuracy.sel(norm=norm).values[8:11])
        # one error-bar container per model point (the ideal model is not on the frontier)
        assert len(ax.containers) == 4
        for container in ax.containers:
            (x,), (y,) = container.lines[0].get_xdata(), container.lines[0].get_ydata()
            model = next(m for m, (c, _) in FRONTIER_MODELS.items()
                         if to_rgba(c) == to_rgba(container.lines[0].get_color()))
            rob = evaluation.robust_correct.sel(model=model, norm=norm).values
            assert x == pytest.approx(evaluation.clean_correct.sel(model=model).values.mean())
            assert y == pytest.approx(rob.mean())
            bar = container.lines[2][1].get_segments()[0]  # the vertical bar: ±1 SE
            assert bar[1][1] - bar[0][1] == pytest.approx(2 * rob.std(ddof=1) / np.sqrt(rob.size))
        assert ax.get_legend() is not None


def test_attack_strength_one_line_per_starts():
    acc = np.array([[0.6, 0.55, 0.5], [0.55, 0.5, 0.48], [0.5, 0.48, 0.47]])
    ds = xr.Dataset({"accuracy": (("steps", "starts"), acc)},
                    coords={"steps": [10, 30, 100], "starts": [1, 3, 10]}, attrs={"n_examples": 500, "norm": "l2"})
    fig = attack_strength(ds, caption=CAPTION)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and len(ax.containers) == 3
    for j, container in enumerate(ax.containers):
        np.testing.assert_allclose(container.lines[0].get_xdata(), [10, 30, 100])
        np.testing.assert_allclose(container.lines[0].get_ydata(), acc[:, j])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["1 start", "3 starts", "10 starts"]

"""`lazy-single-step` and `lazy-adversarial` (Wang et al. 2022 §5): data, helpers, quick modes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from purify import store as S
from purify.cli import main
from purify.experiments import digits as D
from purify.experiments import lazy_adversarial as LA
from purify.experiments import lazy_single_step as LSS
from purify.experiments.framework import Context
from purify.experiments.scaling import loglog_slope


def _ctx(tmp_path: Path, seed: int = 0) -> Context:
    return Context(name="lazy-test", out=tmp_path, quick=True, seed=seed, progress=False)


# ----------------------------------------------------------------------------- data


def test_bundled_digits_are_the_two_classes_with_signed_labels():
    images, y = D.digit_images((0, 1))
    assert images.shape == (360, 8, 8) and set(np.unique(y)) == {-1.0, 1.0}
    assert (y == 1).sum() == 178 and (y == -1).sum() == 182  # scikit-learn's counts of 0s and 1s
    with pytest.raises(ValueError, match="two different digits"):
        D.digit_images((3, 3))


def test_resample_area_is_block_mean_and_bilinear_keeps_constants():
    img = torch.arange(64, dtype=torch.float64).reshape(1, 8, 8)
    small = D.resample(img, 4)
    expected = img.reshape(1, 4, 2, 4, 2).mean(dim=(2, 4))
    torch.testing.assert_close(small, expected)
    assert float(D.resample(img, 5).mean()) == pytest.approx(float(img.mean()), rel=0.02)
    torch.testing.assert_close(D.resample(img, 8), img)
    const = torch.full((2, 8, 8), 3.0, dtype=torch.float64)
    torch.testing.assert_close(D.resample(const, 28), torch.full((2, 28, 28), 3.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        D.resample(img, 0)


@pytest.mark.parametrize("side", [4, 8, 14])
def test_digits_task_is_on_the_sphere_with_a_fixed_split(side):
    task = D.digits_task(side, seed=3)
    assert task.d == side * side
    assert task.x_train.shape == (240, side * side) and task.x_test.shape == (120, side * side)
    torch.testing.assert_close(task.x_train.norm(dim=1), torch.ones(240))
    torch.testing.assert_close(task.x_test.norm(dim=1), torch.ones(120))
    # Same seed, other side: same images in the same order (the labels say so).
    other = D.digits_task(8, seed=3)
    torch.testing.assert_close(task.y_train, other.y_train)
    torch.testing.assert_close(task.y_test, other.y_test)
    assert not torch.equal(D.digits_task(side, seed=4).y_test, task.y_test)
    # The two digits are easy to tell apart: the class-mean direction already separates them.
    mu = task.x_train[task.y_train > 0].mean(0) - task.x_train[task.y_train < 0].mean(0)
    assert float(((task.x_test @ mu > 0).float() * 2 - 1 == task.y_test).float().mean()) > 0.9


def test_to_sphere_centres_then_normalizes():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    out = D.to_sphere(x, torch.tensor([0.0, 1.0]))
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(out, torch.tensor([[r, r], [1.0, 0.0]]))


def test_sphere_mixture_concentrates_at_the_predicted_margin():
    g = torch.Generator().manual_seed(0)
    d, sigma = 2000, 0.5
    mean = torch.randn(d, generator=g)
    mean /= mean.norm()
    x, y = LSS.sphere_mixture(4000, mean=mean, sigma=sigma, generator=g)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(4000))
    assert abs(float(y.mean())) < 0.05
    margin = y * (x @ mean)
    # <x, yμ> = 1/‖yμ + σξ‖ → 1/√(1+σ²) as ‖ξ‖² → 1.
    assert float(margin.mean()) == pytest.approx(1 / math.sqrt(1 + sigma**2), abs=0.01)
    assert float(margin.std()) < 0.02


# ----------------------------------------------------------------------------- helpers


def test_loglog_slope_recovers_a_power_law_and_skips_nan():
    d = np.array([25.0, 100, 400, 784])
    assert loglog_slope(d, 3 * d**-0.5) == pytest.approx(-0.5)
    assert loglog_slope(d, np.array([2.0, np.nan, 8.0, np.nan])) == pytest.approx(0.5)
    assert math.isnan(loglog_slope(d, np.array([1.0, np.nan, np.nan, np.nan])))


def test_crossing_interpolates_in_log_scale_and_needs_a_bracket():
    x = np.array([0.1, 0.2, 0.4, 0.8])
    # Falls from 1 to 0 between 0.2 and 0.4: the half-way point in log scale is √(0.2·0.4).
    assert LA.crossing(x, np.array([1, 1, 0, 0.0]), falling=True) == pytest.approx(math.sqrt(0.08))
    assert LA.crossing(x, np.array([0, 0, 0.25, 1.0]), falling=False) == pytest.approx(
        math.exp(math.log(0.4) + (1 / 3) * math.log(2)))
    assert math.isnan(LA.crossing(x, np.ones(4), falling=True))
    assert math.isnan(LA.crossing(x, np.zeros(4), falling=False))


def test_single_step_grid_runs_fig2_and_fig3_cells_once():
    grid = LSS.FULL
    cells = grid.cells()
    assert len(cells) == len(set(cells))
    pairs = set(grid.pairs())
    assert {(m, 10.0) for m in (1000, 10_000, 100_000)} <= pairs
    assert {(1000, c) for c in (10.0, 20.0, 30.0, 40.0)} <= pairs and len(pairs) == 6
    wide = [c for c in cells if c[2] == 100_000]
    assert len(wide) == 2 * 7 and {c[4] for c in wide} == {0}  # 1 seed at m = 1e5, both data sets
    assert {c[4] for c in cells if c[2] == 1000} == {0, 1, 2}
    quick = LSS.QUICK.cells()
    assert {(c[2], c[3]) for c in quick if c[0] == "digits"} == {(200, 10.0)}


def test_lazy_training_stops_inside_the_ball_and_learns(tmp_path):
    ctx = _ctx(tmp_path)
    grid = LSS.QUICK
    task = LSS.make_task(ctx, "synthetic", 6, grid)
    m, c0 = 100, 10.0
    net, info = LSS.lazy_train(ctx, task, m, c0, 0, grid)
    assert info["left_ball"] == 1.0 and info["steps"] < grid.max_steps
    assert float(net.deviation().max()) <= c0 / math.sqrt(m) + 1e-6
    assert info["deviation_c0"] <= c0 + 1e-4
    assert info["train_accuracy"] > 0.9
    again, info2 = LSS.lazy_train(ctx, task, m, c0, 0, grid)
    torch.testing.assert_close(again.W, net.W, rtol=0, atol=0)  # reproducible from (seed, cell)
    assert info2 == info
    per = LSS.attack_cell(net, task)
    assert set(per) >= {"eta", "grad_norm", "delta_norm", "flipped"}
    ok = per["flipped"] > 0
    # ‖δ‖ = |η|·‖∇f‖ on every flipped input.
    np.testing.assert_allclose(per["delta_norm"][ok], per["eta"][ok] * per["grad_norm"][ok], rtol=1e-5)


def test_projected_adversarial_training_keeps_every_row_within_v(tmp_path):
    ctx = _ctx(tmp_path)
    grid = LA.AdversarialGrid(sides=(4,), radii=(0.1,), left_width=50, left_c0=1.0, right_side=4,
                              right_radius=0.1, widths=(50,), deviations=(0.2,), pgd_steps=3, max_epochs=3,
                              n_train=64, n_test=32)
    task = LA._task(ctx, 4, grid, {})
    net, info = LA.adversarial_train(ctx, task, 50, 0.05, 0.1, 0, grid)
    assert float(net.deviation().max()) <= 0.05 + 1e-6
    assert info["epochs"] in (1, 2, 3)  # the stopping rule never exceeds max_epochs
    res = LA.evaluate_cell(ctx, net, task, 0.1, grid, "eval")
    assert 0 <= res["robust_accuracy"] <= res["clean_accuracy"] <= 1


# ----------------------------------------------------------------------------- quick modes end to end


@pytest.mark.slow
def test_lazy_single_step_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(["experiment", "lazy-single-step", "--quick", "--quiet", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("fig2_vs_d_by_width", "fig3_vs_d_by_c0", "fig7_histograms"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "slope" in summary and "| claim |" in summary
    ds = S.load_run(out, require_complete=True)
    ran = np.isfinite(ds["test_accuracy"].values)
    assert ran.sum() == len(LSS.QUICK.cells())
    for v in ("grad_norm", "eta", "delta_norm"):
        vals = ds[v].values[ran]
        assert np.all(np.isfinite(vals)) and np.all(vals > 0)
    assert np.all((ds["test_accuracy"].values[ran] >= 0) & (ds["test_accuracy"].values[ran] <= 1))
    assert np.all(ds["flipped"].values[ran] == 1.0)
    assert np.all(ds["deviation_c0"].values[ran] <= ds["C0"].broadcast_like(ds["deviation_c0"]).values[ran] + 1e-3)
    sl = S.load_run(out, "slopes")
    for data in ("synthetic", "digits"):
        s = sl["slope"].sel(data=data, curve="m=200 C0=10")
        # The trend the paper claims, at quick size: the gradient grows with d, η and ‖δ‖ shrink.
        assert float(s.sel(quantity="grad_norm")) > 0.2
        assert float(s.sel(quantity="eta")) < -0.4
        assert float(s.sel(quantity="delta_norm")) < -0.1
    hist = S.load_run(out, "fig7")
    assert np.isfinite(hist["eta"].values).sum() > 100
    attrs = S.read_attrs(out)
    assert json.loads(attrs["params_json"])["lr"] == 0.1


@pytest.mark.slow
def test_lazy_adversarial_quick_end_to_end(tmp_path):
    out = tmp_path / "adv"
    from purify.experiments import run_experiment

    run_experiment("lazy-adversarial", out, quick=True, progress=False)
    assert (out / "figures" / "fig4_robust_accuracy.png").stat().st_size > 10_000
    left = S.load_run(out, require_complete=True)
    right = S.load_run(out, "by_deviation")
    for ds in (left, right):
        for v in ("robust_accuracy", "clean_accuracy"):
            assert np.all((ds[v].values >= 0) & (ds[v].values <= 1))
        assert np.all(ds["robust_accuracy"].values <= ds["clean_accuracy"].values)
    acc = left["robust_accuracy"].mean("seed")
    # Robust at the smallest budget in every d, and the collapse comes earlier in higher d.
    assert np.all(acc.sel(radius=0.1).values >= 0.9)
    assert float(acc.sel(d=400, radius=0.8)) <= 0.1
    th = S.load_run(out, "thresholds")
    r_star = th["radius_star"].values
    assert np.all(np.isfinite(r_star)) and r_star[-1] < r_star[0]
    # More allowed deviation, more robustness: not robust at the smallest V, robust at the largest.
    acc_r = right["robust_accuracy"].mean("seed")
    assert np.all(acc_r.isel(V=0).values <= 0.1) and np.all(acc_r.isel(V=-1).values >= 0.9)
    assert np.all(right["deviation_c0"].values <= np.sqrt(right["m"].values)[:, None, None]
                  * right["V"].values[None, :, None] + 1e-3)

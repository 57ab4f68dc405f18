"""`random-net` (Bubeck et al. 2021 §4) and `ntk-adversarial` (Gao et al. 2019): their parts and quick modes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from purify import store as S
from purify.attacks import single_step
from purify.cli import main
from purify.experiments import Context, run_experiment
from purify.experiments import ntk_adversarial as NA
from purify.experiments import random_net as RN
from purify.experiments.scaling import loglog_slope
from purify.learners.random_net import RandomNet

F64 = torch.float64


def _population(activation="relu", depth=2, count=4, d=7, k=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    nets = [RandomNet.init(d, k, depth, activation=activation, generator=g, dtype=F64) for _ in range(count)]
    x = RN.sphere_points(count, 5, d, generator=g, dtype=F64)
    return nets, RN.NetPopulation(nets), x


# ----------------------------------------------------------------------------- random-net parts


@pytest.mark.parametrize("activation, depth", [("relu", 1), ("relu", 3), ("tanh", 2)])
def test_population_is_its_members_on_any_subset_of_rows(activation, depth):
    nets, pop, x = _population(activation, depth)
    rows = pop.rows(x)
    assert rows.shape == (20, 8) and torch.equal(rows[:, -1], torch.arange(4, dtype=F64).repeat_interleave(5))
    # single_step bisects on a subset of rows in any mix of networks: keep a scrambled subset.
    pick = torch.randperm(20, generator=torch.Generator().manual_seed(1))[:11]
    out, grad = pop.forward_and_input_grad(rows[pick])
    want = [nets[i].forward_and_input_grad(x[i]) for i in range(4)]
    want_out = torch.cat([w[0] for w in want])[pick]
    want_grad = torch.cat([w[1] for w in want])[pick]
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pop.forward(rows[pick]), want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad[:, :-1], want_grad, rtol=1e-12, atol=1e-12)
    assert torch.all(grad[:, -1] == 0)  # the step never moves a row to another network


def test_population_input_gradient_matches_autograd():
    _, pop, x = _population("tanh", 3)
    rows = pop.rows(x)
    feats = rows[:, :-1].clone().requires_grad_(True)
    out = pop.forward(torch.cat([feats, rows[:, -1:]], dim=1))
    (auto,) = torch.autograd.grad(out.sum(), feats)
    _, grad = pop.forward_and_input_grad(rows)
    torch.testing.assert_close(grad[:, :-1], auto, rtol=1e-10, atol=1e-12)


def test_single_step_on_a_population_equals_single_step_per_network():
    nets, pop, x = _population("relu", 2, count=3, d=50, k=200)
    both = single_step(pop, pop.rows(x), eta_max=20.0, eta_min=0.01, grid=16, bisections=30)
    for i, net in enumerate(nets):
        alone = single_step(net, x[i], eta_max=20.0, eta_min=0.01, grid=16, bisections=30)
        sl = slice(5 * i, 5 * i + 5)
        assert torch.equal(both.flipped[sl], alone.flipped)
        torch.testing.assert_close(both.eta[sl], alone.eta, rtol=1e-8, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(both.grad_norm[sl], alone.grad_norm, rtol=1e-12, atol=1e-12)
    # The step found flips the sign, and just below it the sign holds (smallest |η|).
    rows = pop.rows(x)
    out, grad = pop.forward_and_input_grad(rows)
    ok = both.flipped
    assert ok.sum() >= 12
    at = pop.forward(rows[ok] + both.eta[ok, None] * grad[ok])
    below = pop.forward(rows[ok] + 0.999 * both.eta[ok, None] * grad[ok])
    assert torch.all(torch.sign(at) != torch.sign(out[ok])) and torch.all(torch.sign(below) == torch.sign(out[ok]))


def test_sphere_points_have_norm_sqrt_d():
    x = RN.sphere_points(3, 50, 17, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(x.norm(dim=2), torch.full((3, 50), math.sqrt(17), dtype=F64))


def test_gaussian_moments_and_linear_regime_values():
    assert RN.gaussian_moments("relu") == (0.5, 0.5)
    g = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    for act in ("tanh", "softplus", "gelu"):
        v, s = RN.activation_fn(act)(g)
        psi2, dpsi2 = RN.gaussian_moments(act)
        assert psi2 == pytest.approx(float((v**2).mean()), rel=3e-3)
        assert dpsi2 == pytest.approx(float((s**2).mean()), rel=3e-3)
    ref = RN.linear_regime("relu")
    assert ref["grad_norm"] == pytest.approx(math.sqrt(0.5))
    assert ref["f_abs"] == pytest.approx(math.sqrt(1 / math.pi))  # E|N(0, 1/2)|
    assert ref["eta"] == pytest.approx(ref["f_abs"] / 0.5) and ref["delta_norm"] == pytest.approx(math.sqrt(2 / math.pi))


def test_loglog_slope_recovers_a_power_law():
    x = np.array([10.0, 50.0, 200.0, 500.0])
    assert loglog_slope(x, 3 * x**-0.5) == pytest.approx(-0.5)
    assert loglog_slope(x, np.full(4, 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(loglog_slope([1.0, 2.0], [np.nan, 1.0]))


def test_cell_summary_counts_flips_under_both_caps():
    eta = np.array([[0.5, 30.0, np.nan], [1.5, np.nan, 2.5]])
    cell = RN.Cell(eta=eta, grad_norm=np.ones((2, 3)), delta_norm=eta * 2, f_abs=np.ones((2, 3)), eta_max=20.0,
                   seconds=0.0)
    s = RN.cell_summary(cell)
    assert s["frac_flipped"] == pytest.approx(0.5)  # 30 > 20: not flipped under the paper's cap
    assert s["frac_flipped_std"] == pytest.approx(np.std([1 / 3, 2 / 3]))
    assert s["frac_flipped_rescaled"] == pytest.approx(4 / 6)
    assert s["eta_mean"] == pytest.approx(np.mean([0.5, 30.0, 1.5, 2.5]))
    assert s["delta_norm_mean"] == pytest.approx(2 * s["eta_mean"])
    assert RN.search_cap("relu", 1, 20.0) == 20.0 and RN.search_cap("relu", 5, 20.0) == pytest.approx(80.0)
    assert RN.search_cap("tanh", 3, 20.0) == 20.0


def test_run_cell_is_reproducible_and_matches_the_two_layer_theory():
    s = RN.Settings(dims=(200,), widths=(400,), depths=(1,), deep_max_width=400, smooth="tanh", inits=4, inputs=50)
    a = RN.run_cell(200, 400, 1, activation="relu", settings=s, generator=torch.Generator().manual_seed(5))
    b = RN.run_cell(200, 400, 1, activation="relu", settings=s, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a.eta, b.eta)
    summary = RN.cell_summary(a)
    ref = RN.linear_regime("relu")
    # Bubeck et al.: at d, k in the hundreds every input flips with an O(1) step; ‖∇f‖ → √E ψ'² = 0.707.
    assert summary["frac_flipped"] == 1.0
    assert summary["grad_norm_mean"] == pytest.approx(ref["grad_norm"], rel=0.03)
    assert summary["delta_norm_mean"] == pytest.approx(ref["delta_norm"], rel=0.25)
    assert summary["f_abs_mean"] == pytest.approx(ref["f_abs"], rel=0.2)


def test_inits_per_chunk_bounds_the_buffers():
    assert RN.inits_per_chunk(10, 10, 1, 100, 1 << 22) > 100
    per = RN.inits_per_chunk(500, 10_000, 1, 100, 1 << 22)
    assert per >= 1
    assert per * 100 * 10_000 <= 1 << 22  # one chunk's (inits, inputs, k) buffer fits the budget
    assert RN.inits_per_chunk(500, 1000, 6, 100, 1 << 22) * (500 * 1000 + 5 * 1000**2) <= 16 << 22
    assert RN.inits_per_chunk(10, 10**6, 6, 100, 1 << 22) == 1


# ----------------------------------------------------------------------------- ntk-adversarial parts


def test_sphere_dataset_and_compatible_radius():
    x, y = NA.sphere_dataset(30, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.norm(dim=1), torch.ones(30))
    assert set(y.tolist()) == {-1.0, 1.0}
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([1.0, -1.0, 1.0])
    # Opposite labels are √2 apart; the two +1 points (2 apart) do not count.
    assert NA.compatible_radius(x, y) == pytest.approx(math.sqrt(2) / 2)


def test_projected_adversarial_training_starts_at_log2_and_stays_in_the_ball(tmp_path):
    s = NA.QUICK
    x, y = NA.sphere_dataset(24, 5, generator=torch.Generator().manual_seed(0))
    tau = 0.6 * NA.compatible_radius(x, y)
    gens = tuple(torch.Generator().manual_seed(i) for i in range(3))
    t = NA.train_and_measure(64, x, y, tau, s=s, adversarial=True, radius=2.0, generators=gens)
    # Paired init (eq. 4) makes f(W₀, ·) = 0 everywhere, so L_A(W₀) = log 2 whatever the attack.
    assert t.surrogate[0] == pytest.approx(math.log(2), abs=1e-6)
    assert t.surrogate.min() < math.log(2) - 0.02
    assert t.fro_deviation <= 2.0 * (1 + 1e-5)
    assert 0 <= t.clean_error <= 1 and 0 <= t.robust_error <= 1
    assert t.robust_loss >= t.clean_loss  # the strong attack never helps
    free = NA.train_and_measure(64, x, y, tau, s=s, adversarial=True, radius=None,
                                generators=tuple(torch.Generator().manual_seed(i) for i in range(3)))
    assert free.fro_deviation > 2.0  # without projection the same run leaves the ball


def test_spearman_and_first_fit():
    import xarray as xr

    assert NA.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert NA.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    err = xr.DataArray([[0.3, 0.2], [0.06, 0.03], [0.0, 0.0]], dims=("m", "seed"), coords={"m": [4, 16, 64]})
    assert NA.first_fit(err) == 16  # mean 0.045 ≤ 5%
    assert NA.first_fit(err + 0.5) == math.inf


@pytest.mark.parametrize("module", [NA, RN])
def test_experiments_run_on_one_thread_and_restore_the_callers(module, monkeypatch):
    torch.set_num_threads(2)
    try:
        with module.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        seen = []
        monkeypatch.setattr(module, "_run", lambda ctx, s: seen.append(torch.get_num_threads()) or "result")
        assert module.run(Context(name="x", out=None, quick=True)) == "result" and seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


# ----------------------------------------------------------------------------- quick modes end to end


@pytest.mark.slow
def test_random_net_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "rn"
    assert main(["experiment", "random-net", "--quick", "--quiet", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in ("fraction_flipped", "step_and_gradient", "deep_step_and_gradient"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    ds = S.load_run(out, require_complete=True)
    sm = S.load_run(out, "smooth")
    q = RN.QUICK
    assert dict(ds.sizes) == {"depth": len(q.depths), "k": len(q.widths), "d": len(q.dims)}
    for part in (ds, sm):
        frac = part.frac_flipped.values
        assert np.all((frac >= 0) & (frac <= 1)) and np.all(part.frac_flipped_rescaled.values >= frac)
        assert np.all(np.isfinite(part.grad_norm_mean.values)) and np.all(part.grad_norm_mean.values > 0)
        assert np.all(part.delta_norm_mean.values < np.sqrt(part.d.values) / 2)  # ‖δ‖ ≪ ‖x‖ = √d
    # At depth 1 the paper's picture, at quick size: all flipped for d, k ≥ 50, ‖∇f‖ ≈ 0.707 everywhere.
    big = ds.sel(depth=1, d=[50, 200], k=[100, 1000])
    assert float(big.frac_flipped.min()) == 1.0
    np.testing.assert_allclose(ds.grad_norm_mean.sel(depth=1, k=1000).values, np.sqrt(0.5), rtol=0.05)
    # Deeper nets need larger d, k: the mean fraction flipped falls with depth.
    mean = ds.frac_flipped.mean(["k", "d"]).values
    assert mean[0] > mean[-1]
    summary = (out / "summary.md").read_text()
    assert summary.count("| agrees |") >= 4 and "Fig. 1" in summary
    claims = json.loads(S.read_attrs(out)["claims_json"])
    assert claims[0]["agrees"] is True  # the headline: one step flips ~100% for d, k ≥ 50


@pytest.mark.slow
def test_ntk_adversarial_quick_end_to_end(tmp_path):
    out = tmp_path / "ntk"
    assert run_experiment("ntk-adversarial", out, quick=True, progress=False) == out
    for name in ("surrogate_loss_vs_width", "capacity"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    ds = S.load_run(out, require_complete=True)
    cu = S.load_run(out, "curves")
    cp = S.load_run(out, "capacity")
    q = NA.QUICK
    assert dict(ds.sizes) == {"R": len(q.radii), "m": len(q.widths), "seed": q.seeds}
    # Projection keeps every run in B(R); every run starts at L_A(W₀) = log 2 and goes below it.
    assert np.all(ds.fro_deviation.values <= ds.R.values[:, None, None] * (1 + 1e-5))
    np.testing.assert_allclose(cu.surrogate_loss.isel(step=0).values, math.log(2), atol=1e-6)
    assert np.all(ds.min_surrogate_loss.values < math.log(2))
    for part in (ds, cp):
        for v in ("clean_error", "robust_error"):
            assert np.all((part[v].values >= 0) & (part[v].values <= 1))
    # Thm 4.1 / 5.1 at quick size: at fixed R the surrogate loss falls with m; larger R, lower loss.
    best = ds.min_surrogate_loss.mean("seed")
    assert np.all(best.isel(m=-1).values < best.isel(m=0).values)
    assert np.all(np.diff(best.isel(m=-1).values) < 0)
    # §6: clean GD fits the data at a smaller width than adversarial training fits it robustly.
    assert NA.first_fit(cp.clean_error.sel(training="clean")) < NA.first_fit(cp.robust_error.sel(training="adversarial"))
    assert float(cp.robust_error.sel(training="clean").mean("seed").isel(m=-1)) > 0.05
    claims = json.loads(S.read_attrs(out)["claims_json"])
    assert [c["agrees"] for c in claims] == [True, True, None, True, None]


def test_context_streams_are_reproducible(tmp_path):
    ctx = Context(name="ntk-adversarial", out=tmp_path, quick=True, seed=3)
    a = NA._streams(ctx, "conv/R1", 16, 0)
    b = NA._streams(ctx, "conv/R4", 16, 0)
    # Same seed and width: same initialization stream for every R; attacks differ.
    assert torch.equal(torch.rand(3, generator=a[0]), torch.rand(3, generator=b[0]))
    assert not torch.equal(torch.rand(3, generator=a[1]), torch.rand(3, generator=b[1]))


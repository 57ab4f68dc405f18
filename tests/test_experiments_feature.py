"""`lazy-vs-feature` and `ntk-lower-bound`: helpers against closed forms, quick modes end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from purify import store as S
from purify.cli import main
from purify.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from purify.experiments import lazy_vs_feature as LVF
from purify.experiments import ntk_lower_bound as NLB
from purify.experiments import run_experiment
from purify.learners import LinearModel
from purify.simulate import simulate


def _no_bar(items, *, total=None, desc=""):
    return iter(items)


def test_in_memory_training_matches_purify_simulate(tmp_path):
    """The feature nets the experiments attack are the ones `purify simulate` stores, bit for bit."""
    config = RunConfig(data=DataConfig(d=20, k=2, n_test=50),
                       train=TrainConfig(clean_steps=30, adv_steps=10, batch_size=64, clean_snapshots=3,
                                         adv_snapshots=1, log_points=5),
                       eval=EvalConfig(n_eval=10, pgd_steps=2), seed=5)
    simulate(config, tmp_path / "run", progress=False)
    snaps = S.load_run(tmp_path / "run", "snapshots")
    nets = LVF.train_feature_nets(config, bar=_no_bar)
    clean = snaps.W.sel(step=30).values
    robust = snaps.W.sel(step=40).values
    np.testing.assert_array_equal(nets.clean.W.numpy(), clean)
    np.testing.assert_array_equal(nets.robust.W.numpy(), robust)
    np.testing.assert_array_equal(nets.init.W.numpy(), snaps.W.sel(step=0).values)
    # Algorithm 2 keeps the end-of-clean biases.
    np.testing.assert_array_equal(nets.robust.b.numpy(), snaps.b.sel(step=40).values)
    assert not np.array_equal(clean, robust)


def test_linear_exact_accuracy_is_the_margin_test():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 7, generator=g, dtype=torch.float64)
    v = torch.randn(7, generator=g, dtype=torch.float64)
    y = torch.where(x @ v + 0.3 >= 0, 1.0, -1.0).to(torch.float64)
    y[:50] *= -1  # some misclassified points: never robust
    model = LinearModel(v, 0.3)
    for norm, dual in (("l2", float(v.norm())), ("linf", float(v.abs().sum()))):
        for tau in (0.0, 0.1, 0.5):
            margin = (y * (x @ v + 0.3)).numpy()
            expected = float(np.mean(margin > tau * dual))
            assert LVF.linear_exact_accuracy(model, x, y, norm, tau) == expected
    # The worst ℓ∞ point −τ y sign(v) attains the bound: exactly the non-robust points flip.
    tau = 0.2
    flipped = torch.where((x - tau * y[:, None] * torch.sign(v)) @ v + 0.3 >= 0, 1.0, -1.0) != y
    n_robust = int((~flipped).sum())
    assert n_robust == round(LVF.linear_exact_accuracy(model, x, y, "linf", tau) * len(y))


def test_band_edges_and_thm54_exponent():
    taus = np.array([0.1, 0.2, 0.4, 0.8])
    assert LVF.band_edges(taus, np.array([False, True, True, False])) == (0.2, 0.4)
    assert LVF.band_edges(taus, np.zeros(4, bool)) is None
    e, c0 = NLB.thm54_exponent(100, 200)
    assert c0 == pytest.approx(math.log(2) / math.log(100))
    assert e == pytest.approx(1.75 + 2 * math.log(2) / math.log(100))
    assert NLB.thm54_exponent(100, 100) == (1.75, 0.0)


# ----------------------------------------------------------------------------------------
# Quick modes end to end (each ≈ 15–30 s on 2 shared cores)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lvf(tmp_path_factory):
    out = run_experiment("lazy-vs-feature", tmp_path_factory.mktemp("lvf") / "out", quick=True, progress=False)
    return out, S.load_run(out, require_complete=True), S.load_run(out, "lazy_ball"), S.read_attrs(out)


@pytest.fixture(scope="module")
def nlb(tmp_path_factory):
    out = tmp_path_factory.mktemp("nlb") / "out"
    assert main(["experiment", "ntk-lower-bound", "--quick", "--quiet", "--out", str(out)]) == 0
    return out, S.load_run(out, require_complete=True), S.read_attrs(out)


@pytest.mark.slow
def test_lazy_vs_feature_quick_files_and_sane_values(lvf):
    out, root, ball, attrs = lvf
    for name in ("robust_vs_tau", "weight_change"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "| a band of ℓ₂ radii" in summary and "| feature_adv |" in summary
    assert list(root.learner.values) == list(LVF.LEARNERS) and list(root.norm.values) == ["l2", "linf"]
    s = LVF.QUICK
    np.testing.assert_allclose(root.tau.sel(norm="l2").values, np.array(s.radii) / math.sqrt(s.k), rtol=1e-12)
    np.testing.assert_allclose(root.tau.sel(norm="linf").values, root.tau.sel(norm="l2").values / math.sqrt(s.d))
    for var in ("clean_accuracy", "robust_accuracy", "attack_accuracy"):
        v = root[var].values
        assert np.isfinite(v).all() and (v >= 0).all() and (v <= 1).all(), var
    # The strongest attacker is the per-example worst: never above any single attacker.
    assert (root.robust_accuracy <= root.attack_accuracy.min("attack") + 1e-6).all()
    # Bigger balls hurt every learner.
    r = root.robust_accuracy
    assert (r.isel(radius=-1) <= r.isel(radius=0)).all()
    # On linear models the strongest attacker (FGM is optimal there) finds the exact robust accuracy.
    for learner in ("linear_oracle", "logistic"):
        np.testing.assert_allclose(r.sel(learner=learner).values,
                                   root.exact_robust_accuracy.sel(learner=learner).values, atol=1.5 / s.n_eval)
    assert np.isnan(root.exact_robust_accuracy.sel(learner="feature_adv")).all()
    # Everyone learns the task; the NTK's features never move, the lazy nets stay in their ball.
    assert (root.clean_accuracy.sel(learner=["feature_clean", "lazy_clean", "ntk", "logistic", "ideal"]) > 0.8).all()
    change = root.weight_change.isel(seed=0)
    assert float(change.sel(learner="ntk")) == 0.0 and np.isnan(float(change.sel(learner="ideal")))
    assert float(change.sel(learner="feature_clean")) > 1.0
    bound = s.lazy_c0 / math.sqrt(s.lazy_width * s.d)
    assert 0 < float(change.sel(learner="lazy_clean")) <= 1.05 * bound
    assert (ball.max_deviation_clean <= ball.radius * (1 + 1e-5)).all()
    assert (ball.max_deviation_adv <= ball.radius * (1 + 1e-5)).all()
    # The headline at this seed: a band of ℓ₂ radii where only adversarial feature learning is robust,
    # and every low-complexity model is broken at twice the training radius.
    assert bool(root.in_band.sel(norm="l2").any())
    assert (r.sel(learner=list(LVF.LOW_COMPLEXITY), norm="l2", radius=2.0) <= 0.02).all()
    claims = json.loads(attrs["claims_json"])
    assert claims[0]["agrees"] is True and "band τ ∈" in claims[0]["measured"]
    params = json.loads(attrs["params_json"])
    assert params["setting"]["d"] == s.d and params["band_gap"] == LVF.BAND_GAP


@pytest.mark.slow
def test_ntk_lower_bound_quick_files_and_sane_values(nlb):
    out, root, attrs = nlb
    assert (out / "figures" / "robust_error_vs_tau.png").stat().st_size > 10_000
    assert "| ntk_b0.5 |" in (out / "summary.md").read_text()
    s = NLB.QUICK
    tau = root.tau.values
    assert (np.diff(tau) > 0).all()
    e54, _ = NLB.thm54_exponent(s.d, 2 * s.d)
    assert np.isclose(tau, s.k ** -e54).any() and np.isclose(tau, 1.0 / s.k).any()
    for var in ("clean_accuracy", "robust_accuracy", "attack_accuracy"):
        v = root[var].values
        assert np.isfinite(v).all() and (v >= 0).all() and (v <= 1).all(), var
    assert (root.robust_accuracy <= root.attack_accuracy.min("attack") + 1e-6).all()
    # M = I, σ_x = 0: the oracle <w*, x> is the labelling function itself.
    assert (root.clean_accuracy.sel(learner="linear_oracle") == 1.0).all()
    assert (0 < root.tie_fraction).all() and (root.tie_fraction < 0.2).all()
    ntks = [n for n in root.learner.values if str(n).startswith("ntk")]
    fitted = root.train_accuracy.sel(learner=[n for n in ntks if float(root.bias.sel(learner=n)) > 0])
    assert (fitted >= 0.99).all()
    err = 1.0 - root.robust_accuracy.isel(seed=0)
    at_1k = int(np.argmin(np.abs(tau - 1.0 / s.k)))
    at_54 = int(np.argmin(np.abs(tau - s.k ** -e54)))
    assert (err.sel(learner=ntks).isel(radius=at_1k) >= 0.45).all()  # Thm 5.6
    assert float(err.sel(learner="feature_adv").isel(radius=at_54)) < float(err.sel(learner=ntks).isel(radius=at_54).min())
    claims = json.loads(attrs["claims_json"])
    assert len(claims) == 5 and claims[1]["agrees"] is True
    assert attrs["experiment"] == "ntk-lower-bound" and attrs["quick"] is True

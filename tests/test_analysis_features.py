"""Tests of the lottery, mixture, purification and perturbation analyses.

One tiny real run is simulated once; each test copies it and overwrites its weight snapshots
(and, where needed, biases) with weights of known structure, e.g. ``w_i = α M_j(i) + ε M w*``,
then checks that the analysis recovers that structure exactly or matches a brute-force loop.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from purify import store as S
from purify.analysis import alignment, lottery, mixture, perturbations, purification
from purify.analysis.rundata import RunData
from purify.config import DataConfig, EvalConfig, NetConfig, RunConfig, TrainConfig
from purify.norms import sign
from purify.simulate import simulate
from purify.summary import format_summary, summarize

D_IN, K, WIDTH = 24, 3, 48


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    config = RunConfig(
        data=DataConfig(d=D_IN, k=K, n_test=80),
        net=NetConfig(width=WIDTH),
        train=TrainConfig(clean_steps=40, adv_steps=10, batch_size=64, clean_snapshots=4,
                          adv_snapshots=2, log_points=4),
        eval=EvalConfig(radii=(0.5, 1.0), norms=("l2",), attacks=("fgm", "pgd", "dense"), pgd_steps=2,
                        n_eval=60),
        seed=3,
        preset="boundary",  # biases raised to the radius floor: the bias-only control below
    )
    run = tmp_path_factory.mktemp("features") / "run"
    simulate(config, run, progress=False)
    return run


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A private copy of the tiny run, free to overwrite."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def write_step(run: Path, index: int, **arrays: np.ndarray) -> None:
    S.write_region(run, "snapshots", "step", index, {k: np.asarray(v, np.float32) for k, v in arrays.items()})


def structured(M: np.ndarray, w_star: np.ndarray, atoms: np.ndarray, alpha: float, eps: float) -> np.ndarray:
    """Rows ``w_i = α M_{atoms[i]} + ε M w*``."""
    return alpha * M[:, atoms].T + eps * (M @ w_star)[None, :]


# --------------------------------------------------------------------------------------
# lottery
# --------------------------------------------------------------------------------------


def brute_force_sets(W0, M, w_star, sigma0, d, pot, sure, require_sign):
    m, D = W0.shape[0], M.shape[1]
    potential = np.zeros((m, D), bool)
    sure_set = np.zeros((m, D), bool)
    for i in range(m):
        scores = [float(np.dot(M[:, j].astype(np.float64), W0[i].astype(np.float64))) ** 2
                  / (sigma0**2 * math.log(d)) for j in range(D)]
        for j in range(D):
            potential[i, j] = scores[j] >= pot
            others_ok = all(scores[jj] < pot for jj in range(D) if jj != j)
            coef = float(np.dot(M[:, j].astype(np.float64), W0[i].astype(np.float64)))
            sign_ok = (not require_sign) or np.sign(coef) == np.sign(w_star[j])
            sure_set[i, j] = scores[j] >= sure and others_ok and sign_ok
    return potential, sure_set


@pytest.mark.parametrize("pot, sure, require_sign", [(2.01, 2.02, True), (1.0, 1.3, True), (1.0, 1.3, False),
                                                      (1.3, 1.0, True)])
def test_lottery_sets_match_brute_force_on_real_init(base_run, pot, sure, require_sign):
    data = RunData.open(base_run)
    ds = lottery.compute(data, pot=pot, sure=sure, require_sign=require_sign)
    W0 = data.W(0)
    potential, sure_set = brute_force_sets(W0, data.M, data.w_star, data.config.net.sigma0, D_IN, pot, sure,
                                           require_sign)
    np.testing.assert_array_equal(ds.potential.values, potential)
    np.testing.assert_array_equal(ds.sure.values, sure_set)
    np.testing.assert_array_equal(ds.n_potential.values, potential.sum(axis=0))
    np.testing.assert_array_equal(ds.n_sure.values, sure_set.sum(axis=0))
    lucky = [int(np.flatnonzero(row)[0]) if row.any() else -1 for row in sure_set]
    np.testing.assert_array_equal(ds.lucky_feature.values, lucky)
    assert int(ds.n_sure_neurons) == sum(j >= 0 for j in lucky)
    if pot == 1.0:  # the relaxed thresholds give non-trivial sets, so the check has teeth
        assert 0 < sure_set.sum() < potential.sum()


def test_lottery_planted_tickets(run):
    data = RunData.open(run)
    M, w_star, sigma0 = data.M.astype(np.float64), data.w_star, data.config.net.sigma0
    unit = sigma0 * math.sqrt(math.log(D_IN))  # a coefficient of `unit * a` has score a²
    A = np.full((WIDTH, D_IN), 0.1)  # background score 0.01
    A[0, 3] = math.sqrt(2.05) * w_star[3]  # sure for 3
    A[1, 3] = -math.sqrt(2.05) * w_star[3]  # above sure, wrong sign
    A[2, 3], A[2, 5] = math.sqrt(2.05) * w_star[3], math.sqrt(2.012)  # two potentials: not sure
    A[3, 7] = math.sqrt(2.015) * w_star[7]  # potential only
    A[4, 9] = math.sqrt(2.05) * w_star[9]
    A[4, 10] = math.sqrt(2.005)  # below pot: 4 is still sure for 9
    write_step(run, 0, W=(unit * A) @ M.T)
    ds = lottery.compute(RunData.open(run))
    np.testing.assert_allclose(ds.score.values[0, 3], 2.05, rtol=1e-5)
    assert ds.lucky_feature.values[:6].tolist() == [3, -1, -1, -1, 9, -1]
    assert ds.potential.values[2, [3, 5]].all() and ds.potential.values[3, 7]
    assert int(ds.potential.values.sum()) == 6  # neurons 0, 1, 2 (twice), 3, 4 (not its 2.005)
    assert ds.n_sure.values[3] == 1 and ds.n_sure.values[9] == 1 and ds.n_sure.values.sum() == 2
    no_sign = lottery.compute(RunData.open(run), require_sign=False)
    assert no_sign.lucky_feature.values[:6].tolist() == [3, 3, -1, -1, 9, -1]


def test_lottery_trajectories_and_summaries(run):
    data = RunData.open(run)
    M, w_star = data.M.astype(np.float64), data.w_star.astype(np.float64)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    alpha, eps = 1.0, 0.01
    # neuron i's top feature is a(i) before snapshot index t(i) and b(i) from then on
    a = np.arange(WIDTH) % D_IN
    b = (a + 1) % D_IN
    t = np.arange(WIDTH) % (ic + 1)
    tops = np.empty((len(steps), WIDTH), int)
    for s in range(len(steps)):
        tops[s] = np.where(s < t, a, b)
        if s > ic:  # adversarial phase: half the neurons switch to a third feature
            tops[s] = np.where(np.arange(WIDTH) % 2 == 0, (a + 2) % D_IN, tops[s])
        write_step(run, s, W=structured(M, w_star, tops[s], alpha, eps))
    ds = lottery.compute(RunData.open(run), min_ratio=2.0)
    np.testing.assert_array_equal(ds.top_feature.values, tops)
    # top |c| = |α + ε w*_j|, second = |ε| (every other coordinate)
    expected_ratio = np.abs(alpha + eps * w_star[tops]) / eps
    np.testing.assert_allclose(ds.top_ratio.values, expected_ratio, rtol=1e-4)
    # brute-force winner-stable step
    for i in range(WIDTH):
        first = ic
        while first > 0 and tops[first - 1, i] == tops[ic, i]:
            first -= 1
        assert int(ds.winner_stable_step.values[i]) == steps[first]
    assert float(ds.kept_top_fraction) == pytest.approx(np.mean(tops[ic] == tops[0]))
    assert int(ds.features_learned) == len(np.unique(tops[ic]))
    assert int(ds.features_learned_final) == len(np.unique(tops[-1]))
    strict = lottery.compute(RunData.open(run), min_ratio=1e6)  # ratio ≈ 100: nothing is learned
    assert int(strict.features_learned) == 0


def test_lottery_sure_win_fraction_and_chance(run):
    data = RunData.open(run)
    M, w_star, sigma0 = data.M.astype(np.float64), data.w_star.astype(np.float64), data.config.net.sigma0
    unit = sigma0 * math.sqrt(math.log(D_IN))
    A = np.full((WIDTH, D_IN), 0.1)
    lucky = {0: 2, 1: 4, 2: 6, 3: 8}
    for i, j in lucky.items():
        A[i, j] = math.sqrt(2.1) * w_star[j]
    write_step(run, 0, W=(unit * A) @ M.T)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    final_top = np.arange(WIDTH) % D_IN  # neuron i wins feature i mod D ...
    final_top[[0, 1]] = [2, 4]  # ... the first two sure neurons win their lucky feature
    final_top[[2, 3]] = [7, 9]  # ... the next two do not
    for s in range(1, len(steps)):
        write_step(run, s, W=structured(M, w_star, final_top if s >= ic else np.zeros(WIDTH, int), 1.0, 0.01))
    ds = lottery.compute(RunData.open(run))
    assert ds.lucky_feature.values[:4].tolist() == [2, 4, 6, 8]
    assert float(ds.sure_win_fraction) == 0.5
    share = np.bincount(final_top, minlength=D_IN) / WIDTH
    assert float(ds.sure_win_chance) == pytest.approx(np.mean(share[[2, 4, 6, 8]]))


# --------------------------------------------------------------------------------------
# mixture
# --------------------------------------------------------------------------------------


def test_mixture_recovers_pure_plus_dense(run):
    data = RunData.open(run)
    M, w_star = data.M.astype(np.float64), data.w_star.astype(np.float64)
    steps = [int(s) for s in data.steps]
    ic, ifin = steps.index(data.clean_end), len(steps) - 1
    atoms = np.arange(WIDTH) % D_IN
    alphas = np.linspace(0.5, 2.0, len(steps))
    epsilons = np.linspace(0.05, 0.01, len(steps))  # the dense part shrinks over training
    for s in range(len(steps)):
        write_step(run, s, W=structured(M, w_star, atoms, alphas[s], epsilons[s]))
    ds = mixture.compute(RunData.open(run))
    D = D_IN
    for s in range(len(steps)):
        al, ep = alphas[s], epsilons[s]
        c_top = al + ep * w_star[atoms]  # <M_j, w_i> at j = atoms[i]
        np.testing.assert_array_equal(ds.n_pure.values[s], 1)
        np.testing.assert_allclose(ds.alpha_top.values[s], c_top * w_star[atoms], rtol=1e-5)
        np.testing.assert_allclose(ds.alpha_top.values[s], al * w_star[atoms] + ep, rtol=1e-5)
        np.testing.assert_allclose(ds.beta_mean.values[s], ep, rtol=1e-4)
        np.testing.assert_allclose(ds.dense_cos_mwstar.values[s], 1.0, rtol=1e-5)
        np.testing.assert_allclose(ds.dense_norm.values[s], ep * math.sqrt(D - 1), rtol=1e-5)
        np.testing.assert_allclose(ds.pure_norm.values[s], np.abs(c_top), rtol=1e-5)
        np.testing.assert_allclose(ds.beta_mean_over_kd.values[s], ep / ((K / D_IN) * np.abs(c_top)), rtol=1e-4)
        np.testing.assert_allclose(ds.beta_grand_mean.values[s], ep * (D - 1) / D, rtol=1e-4)
    ratio = epsilons[:, None] * math.sqrt(D - 1) / np.abs(alphas[:, None] + epsilons[:, None] * w_star[atoms])
    np.testing.assert_allclose(float(ds.dense_to_pure_clean), np.median(ratio[ic]), rtol=1e-5)
    np.testing.assert_allclose(float(ds.dense_to_pure_robust), np.median(ratio[ifin]), rtol=1e-5)
    np.testing.assert_allclose(float(ds.dense_norm_clean), epsilons[ic] * math.sqrt(D - 1), rtol=1e-5)
    np.testing.assert_allclose(float(ds.dense_norm_robust), epsilons[ifin] * math.sqrt(D - 1), rtol=1e-5)
    assert float(ds.dense_to_pure_robust) < float(ds.dense_to_pure_clean)


def test_mixture_dense_alignment_over_training(run):
    """``dense_alignment(step, neuron)`` is alignment.dense_alignment of every snapshot; on
    ``w_i = α M_j + ε M w*`` it is ``s_i ε (D−1)/(√D ‖w_i‖)`` with ``s_i = sign(w*_j)`` (the top
    coefficient ``α + ε w*_j > 0`` is oriented along ``w*``: where ``w*_j = −1`` the dense part
    points against the neuron's own feature), and its per-step median follows ε down."""
    data = RunData.open(run)
    M, w_star = data.M.astype(np.float64), data.w_star.astype(np.float64)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    atoms = np.arange(WIDTH) % D_IN
    epsilons = np.where(np.arange(len(steps)) <= ic, 0.05, 0.02)
    for s in range(len(steps)):
        write_step(run, s, W=structured(M, w_star, atoms, 1.0, epsilons[s]))
    data = RunData.open(run)
    ds = mixture.compute(data)
    for s, step in enumerate(steps):
        W = data.W(step).astype(np.float64)
        np.testing.assert_allclose(ds.dense_alignment.values[s], alignment.dense_alignment(W, M, w_star, K),
                                   rtol=1e-12)
        ep = epsilons[s]
        norm = np.sqrt((1 + ep * w_star[atoms]) ** 2 + ep**2 * (D_IN - 1))
        hand = np.sign(w_star[atoms]) * ep * (D_IN - 1) / (math.sqrt(D_IN) * norm)
        np.testing.assert_allclose(ds.dense_alignment.values[s], hand, rtol=1e-5)
        assert float(ds.median_dense_alignment[s]) == pytest.approx(np.median(hand), rel=1e-5)
    assert float(ds.dense_alignment_clean) == pytest.approx(float(ds.median_dense_alignment[ic]))
    assert float(ds.dense_alignment_robust) < float(ds.dense_alignment_clean)


def test_mixture_pure_set_rule():
    rng = np.random.default_rng(0)
    C = rng.uniform(-0.05, 0.05, (4, 30))
    C[0, 3] = 1.0
    C[1, 3], C[1, 8] = 1.0, -0.5  # second coordinate above the 0.3 threshold
    C[2, 3], C[2, 8] = 1.0, 0.29  # second coordinate just below it
    C[3, :10] = 1.0  # ten equal coordinates: capped at max_pure
    mask = mixture.pure_mask(C, 0.3, 5)
    assert mask.sum(axis=1).tolist() == [1, 2, 1, 5]
    assert mask[1, [3, 8]].all() and mask[3, :10].sum() == 5
    # brute force against the stated rule without a cap
    loose = mixture.pure_mask(C, 0.3, 30)
    for i in range(4):
        top = max(abs(v) for v in C[i])
        assert loose[i].tolist() == [abs(v) >= 0.3 * top for v in C[i]]


def test_mixture_decompose_with_gram_matches_explicit_vectors():
    """For a non-orthonormal dictionary the norms and the cosine are those of the actual vectors."""
    rng = np.random.default_rng(1)
    d, D, m = 10, 16, 5
    M = rng.standard_normal((d, D))
    M /= np.linalg.norm(M, axis=0)
    w_star = rng.choice([-1.0, 1.0], D)
    C = rng.standard_normal((m, D))
    mask = mixture.pure_mask(C, 0.5, 3)
    parts = mixture.decompose(C, w_star, mask, gram=M.T @ M)
    for i in range(m):
        pure = sum(C[i, j] * M[:, j] for j in range(D) if mask[i, j])
        dense = sum(C[i, j] * M[:, j] for j in range(D) if not mask[i, j])
        ref = sum(w_star[j] * M[:, j] for j in range(D) if not mask[i, j])
        assert parts["pure_norm"][i] == pytest.approx(np.linalg.norm(pure))
        assert parts["dense_norm"][i] == pytest.approx(np.linalg.norm(dense))
        cos = dense @ ref / (np.linalg.norm(dense) * np.linalg.norm(ref))
        assert parts["dense_cos_mwstar"][i] == pytest.approx(cos)


# --------------------------------------------------------------------------------------
# purification
# --------------------------------------------------------------------------------------


def test_theta_and_relative_change_identical_and_scaled(run):
    data = RunData.open(run)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    Wc = data.W(data.clean_end)
    scales = {s: 0.5 ** (s - ic) for s in range(ic, len(steps))}  # 1, 0.5, 0.25
    for s, scale in scales.items():
        write_step(run, s, W=Wc * scale)
    ds = purification.compute(RunData.open(run), control=False)
    np.testing.assert_allclose(ds.theta_clean_robust.values, 1.0, rtol=1e-6)
    assert np.isnan(ds.relative_change.values[:ic]).all()
    for s, scale in scales.items():
        assert float(ds.relative_change.values[s]) == pytest.approx((scale - 1) ** 2, rel=1e-6)
    assert float(ds.relative_change.values[ic]) == 0.0
    np.testing.assert_allclose(ds.theta_init_robust.values, ds.theta_init_clean.values, rtol=1e-6)
    np.testing.assert_allclose(ds.theta_pairs_robust.values, ds.theta_pairs_clean.values, rtol=1e-6)


def test_theta_values_and_pairs_brute_force(base_run):
    data = RunData.open(base_run)
    ds = purification.compute(data, control=False)
    W0, Wc, Wr = (data.W(s).astype(np.float64) for s in (0, data.clean_end, data.final))

    def theta(u, v):
        return abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))

    for i in range(WIDTH):
        assert ds.theta_init_clean.values[i] == pytest.approx(theta(W0[i], Wc[i]))
        assert ds.theta_clean_robust.values[i] == pytest.approx(theta(Wc[i], Wr[i]))
    # m(m-1)/2 = 1128 ≤ n_pairs: every unordered pair exactly once
    pairs = set(zip(ds.pair_i.values.tolist(), ds.pair_j.values.tolist(), strict=True))
    assert len(pairs) == ds.sizes["pair"] == WIDTH * (WIDTH - 1) // 2
    for p in range(0, ds.sizes["pair"], 97):
        i, j = int(ds.pair_i[p]), int(ds.pair_j[p])
        assert ds.theta_pairs_clean.values[p] == pytest.approx(theta(Wc[i], Wc[j]))
    overlap = sum(float(Wc[i] @ Wc[j]) ** 2 for i in range(WIDTH) for j in range(WIDTH))
    assert float(ds.pair_overlap_clean) == pytest.approx(overlap / float((Wc**2).sum()) ** 2)
    # sampled pairs: i ≠ j, reproducible from the run's seed
    few = purification.compute(data, n_pairs=200, control=False)
    assert few.sizes["pair"] == 200 and (few.pair_i.values < few.pair_j.values).all()
    again = purification.compute(data, n_pairs=200, control=False)
    np.testing.assert_array_equal(few.pair_i.values, again.pair_i.values)
    np.testing.assert_array_equal(few.pair_j.values, again.pair_j.values)


def bias_only_accuracies(data: RunData) -> dict[str, float]:
    """FGM / dense accuracy at ``τ`` on the first ``n_eval`` held-out examples of the bias-only
    network built by hand: the clean weights, their biases raised to the training radius's floor
    (``b_i ≥ τ ‖w_i‖₂``) as adversarial training does when it begins."""
    import torch

    from purify import rng
    from purify.evaluate import evaluate, make_attacks
    from purify.learners.symmetric import SymmetricReLUNet
    from purify.schedules import radius_floor

    cfg = data.config
    snap = data.snapshots.sel(step=data.clean_end)
    W = torch.from_numpy(data.W(data.clean_end))
    b, s = radius_floor(W, torch.from_numpy(snap.b.values), torch.from_numpy(snap.sigma_rho.values),
                        cfg.train.adv_tau, "l2")
    np.testing.assert_allclose(b.numpy(), data.snapshots.b.sel(step=data.final).values, rtol=1e-6)
    ev = dataclasses.replace(cfg.eval, norms=("l2",), radii=(1.0,))
    attacks = make_attacks(dataclasses.replace(cfg, eval=ev), data.problem)["l2"]
    n = ev.n_eval
    with torch.no_grad():
        e = evaluate(SymmetricReLUNet(W, b, s), data.test.x[:n], data.test.y[:n], attacks={"l2": attacks},
                     taus={"l2": ev.taus("l2")}, generator=rng.generator(int(cfg.seed), "analysis/purification"))
    return {name: float(e.robust["l2"][a, 0]) for a, name in enumerate(attacks)}


def test_control_matches_the_runs_own_deterministic_evaluations(base_run, tmp_path):
    """FGM and the dense attack are deterministic: the control's variants must reproduce the
    accuracies the run itself measured on the same examples with the same biases.  Under
    ``adv_bias = "radius"`` (the run's boundary preset) the ``clean`` variant (clean weights, final biases) is the
    bias-only control (rebuilt by hand); with ``adv_bias = "clean"`` it is the stored clean model."""
    data = RunData.open(base_run)
    ds = purification.compute(data)
    assert not bool(ds.biases_frozen)  # raised to the radius floor when adversarial training began
    stored = data.root.robust_accuracy.sel(norm="l2")
    radii = ds.radius.values  # the control's grid (default: radius 1 only)
    assert radii.tolist() == [1.0]
    bias_only = bias_only_accuracies(data)
    for attack in ("fgm", "dense"):
        assert float(ds.control_robust_accuracy.sel(variant="clean", attack=attack, radius=1.0)) == \
            pytest.approx(bias_only[attack], abs=1e-6)
        np.testing.assert_allclose(ds.control_robust_accuracy.sel(variant="robust", attack=attack).values,
                                   stored.sel(step=data.final, attack=attack, radius=radii).values, atol=1e-6)
    total = float(ds.gain_total)
    assert total == pytest.approx(float(ds.control_accuracy.sel(variant="robust", radius=1.0)
                                        - ds.control_accuracy.sel(variant="clean", radius=1.0)))
    assert (ds.control_accuracy.values <= ds.control_clean_accuracy.values[:, None] + 1e-9).all()

    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, adv_bias="clean"))
    simulate(config, tmp_path / "clean-bias", progress=False)
    assert "bias_only_model" not in summarize(tmp_path / "clean-bias")
    other = RunData.open(tmp_path / "clean-bias")
    ds = purification.compute(other)
    assert bool(ds.biases_frozen)
    stored = other.root.robust_accuracy.sel(norm="l2")
    for variant, step in (("clean", other.clean_end), ("robust", other.final)):
        for attack in ("fgm", "dense"):
            np.testing.assert_allclose(ds.control_robust_accuracy.sel(variant=variant, attack=attack).values,
                                       stored.sel(step=step, attack=attack, radius=radii).values, atol=1e-6)


def test_control_pure_norm_change_has_no_direction_gain(run):
    data = RunData.open(run)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    Wc = data.W(data.clean_end)
    for s in range(ic + 1, len(steps)):
        write_step(run, s, W=Wc * 0.5)  # adversarial training only halved every norm
    ds = purification.compute(RunData.open(run))
    acc = ds.control_accuracy
    np.testing.assert_array_equal(acc.sel(variant="robust_dir_clean_norm").values, acc.sel(variant="clean").values)
    np.testing.assert_array_equal(acc.sel(variant="clean_dir_robust_norm").values, acc.sel(variant="robust").values)
    np.testing.assert_array_equal(ds.control_clean_accuracy.sel(variant="robust_dir_clean_norm"),
                                  ds.control_clean_accuracy.sel(variant="clean"))
    assert float(ds.gain_from_direction) == 0.0
    assert float(ds.gain_from_norm) == float(ds.gain_total)
    if float(ds.gain_total) != 0:
        assert float(ds.gain_fraction_norm) == 1.0 and float(ds.gain_fraction_direction) == 0.0
    np.testing.assert_allclose(ds.control_mean_norm.sel(variant="robust"),
                               0.5 * ds.control_mean_norm.sel(variant="clean"), rtol=1e-6)
    # a reduced grid: the deterministic attackers give the same numbers at the radius it keeps
    one = purification.compute(RunData.open(run), control_radii=(1.0,))
    assert one.radius.values.tolist() == [1.0]
    for attack in ("fgm", "dense"):
        np.testing.assert_array_equal(one.control_robust_accuracy.sel(attack=attack, radius=1.0),
                                      ds.control_robust_accuracy.sel(attack=attack, radius=1.0))


def test_surgery_reproduces_the_stored_models_and_the_control(base_run):
    """FGM and the dense attack are deterministic: the unmodified variants under their own
    biases are the run's stored clean and robust models, the clean weights under the robust
    biases are the control's ``clean`` variant; every variant's accuracy ≤ its clean accuracy."""
    data = RunData.open(base_run)
    ds = purification.compute(data)
    stored = data.root.robust_accuracy.sel(norm="l2", radius=1.0)
    for attack in ("fgm", "dense"):
        acc = ds.surgery_robust_accuracy.sel(attack=attack)
        assert float(acc.sel(surgery="clean", biases="clean")) == pytest.approx(
            float(stored.sel(step=data.clean_end, attack=attack)), abs=1e-6)
        assert float(acc.sel(surgery="robust", biases="robust")) == pytest.approx(
            float(stored.sel(step=data.final, attack=attack)), abs=1e-6)
        assert float(acc.sel(surgery="clean", biases="robust")) == pytest.approx(
            float(ds.control_robust_accuracy.sel(variant="clean", attack=attack, radius=1.0)), abs=1e-6)
    # the run's own clean accuracy is over all n_test held-out examples; the surgery's over the first n_eval
    n = data.config.eval.n_eval
    with torch.no_grad():
        f = data.network(data.clean_end)(data.test.x[:n])
    assert float(ds.surgery_clean_accuracy.sel(surgery="clean", biases="clean")) == pytest.approx(
        float((sign(f) == data.test.y[:n]).double().mean()), abs=1e-6)  # float32 store; 1/n is 0.017
    assert (ds.surgery_accuracy.values <= ds.surgery_clean_accuracy.values + 1e-9).all()
    assert ds.surgery.values.tolist() == list(alignment.SURGERY) and ds.biases.values.tolist() == ["clean", "robust"]


def test_surgery_on_planted_weights(run):
    """With ``w_i = α M_j + ε M w*`` the pure variant is ``(α + ε w*_j) M_j``, evaluated under the
    clean biases: the same accuracies as the network built by hand and attacked directly."""
    import torch

    from purify import rng
    from purify.evaluate import evaluate, make_attacks

    data = RunData.open(run)
    M, w_star = data.M.astype(np.float64), data.w_star.astype(np.float64)
    steps = [int(s) for s in data.steps]
    ic = steps.index(data.clean_end)
    atoms = np.arange(WIDTH) % D_IN
    write_step(run, ic, W=structured(M, w_star, atoms, 1.0, 0.05))
    write_step(run, len(steps) - 1, W=structured(M, w_star, atoms, 0.8, 0.01))
    data = RunData.open(run)
    ds = purification.compute(data, control=False)
    pure = ((1.0 + 0.05 * w_star[atoms])[:, None] * M[:, atoms].T).astype(np.float32)  # c_ij on N_i = {j}
    cfg = dataclasses.replace(data.config, eval=dataclasses.replace(data.config.eval, norms=("l2",), radii=(1.0,)))
    attacks = make_attacks(cfg, data.problem)["l2"]
    n = cfg.eval.n_eval
    with torch.no_grad():
        e = evaluate(data.network(data.clean_end, W=pure), data.test.x[:n], data.test.y[:n],
                     attacks={"l2": attacks}, taus={"l2": cfg.eval.taus("l2")},
                     generator=rng.generator(int(cfg.seed), "analysis/purification"))
    got = ds.sel(surgery="clean_pure", biases="clean")
    assert float(got.surgery_accuracy) == pytest.approx(float(e.strongest["l2"][0]), abs=1e-6)
    assert float(got.surgery_clean_accuracy) == pytest.approx(e.clean, abs=1e-6)
    # pure atoms are what a dense attack cannot move much: the pure part is at least as robust
    # to it as the clean neurons with their dense M w* part
    dense = ds.surgery_robust_accuracy.sel(attack="dense", biases="clean")
    assert float(dense.sel(surgery="clean_pure")) >= float(dense.sel(surgery="clean"))


def test_summary_reports_purification(base_run):
    data = RunData.open(base_run)
    summary = summarize(base_run)
    got = summary["purification"]
    snaps = data.snapshots
    want = alignment.purification_summary(
        data.W(data.clean_end), snaps.b.sel(step=data.clean_end).values, data.W(data.final),
        snaps.b.sel(step=data.final).values, data.M, data.w_star, K, "l2")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    mix = mixture.compute(data)  # the same neurons, the same N_i rule, the same medians
    assert got["dense_alignment_clean"] == pytest.approx(float(mix.dense_alignment_clean), rel=1e-9)
    assert got["dense_alignment_robust"] == pytest.approx(float(mix.dense_alignment_robust), rel=1e-9)
    # the raised biases of adversarial training (adv_bias = "radius") raise the effective threshold
    assert got["effective_r_robust"] > got["effective_r_clean"]
    line = [ln for ln in format_summary(summary).splitlines() if ln.startswith("dense alignment")]
    assert len(line) == 1 and "effective r" in line[0] and "norm share" in line[0]


# --------------------------------------------------------------------------------------
# perturbations
# --------------------------------------------------------------------------------------


def test_anatomy_dense_and_single_atom():
    rng = np.random.default_rng(2)
    d = 20
    M = np.linalg.qr(rng.standard_normal((d, d)))[0]
    w_star = rng.choice([-1.0, 1.0], d)
    atom = 3.0 * M[:, 5]
    res = perturbations.anatomy(np.stack([M @ w_star, atom, np.zeros(d)]), M, w_star, k=4)
    assert res["participation_ratio"][0] == pytest.approx(1.0)
    assert res["cos_mwstar"][0] == pytest.approx(1.0)
    assert res["topk_mass"][0] == pytest.approx(4 / d)
    assert res["participation_ratio"][1] == pytest.approx(1 / d)
    assert res["topk_mass"][1] == pytest.approx(1.0)
    assert res["cos_mwstar"][1] == pytest.approx(1 / math.sqrt(d))
    assert np.isnan(res["participation_ratio"][2]) and np.isnan(res["cos_mwstar"][2])
    # a generic δ against the definitions written out
    delta = rng.standard_normal((1, d))
    c = M.T @ delta[0]
    got = perturbations.anatomy(delta, M, w_star, k=4)
    assert got["participation_ratio"][0] == pytest.approx((c**2).sum() ** 2 / (d * (c**4).sum()))
    assert got["topk_mass"][0] == pytest.approx(np.sort(c**2)[-4:].sum() / (c**2).sum())


def test_dictionary_coefficients_overcomplete_is_least_squares():
    rng = np.random.default_rng(3)
    M = rng.standard_normal((6, 12))
    M /= np.linalg.norm(M, axis=0)
    delta = rng.standard_normal((3, 6))
    c = perturbations.dictionary_coefficients(delta, M)
    np.testing.assert_allclose(c @ M.T, delta, atol=1e-10)  # exact reconstruction ...
    np.testing.assert_allclose(c, delta @ np.linalg.pinv(M).T, atol=1e-10)  # ... of minimum norm


def test_perturbations_of_known_linear_networks(run):
    """With b = 0 the network is linear, f(x) = Σ_i <w_i, x>, so the FGM perturbation is
    ``−τ y Σ_i w_i / ‖Σ_i w_i‖``: all-``M w*`` neurons give the dense δ, all-``M_j`` a single atom."""
    data = RunData.open(run)
    M, w_star = data.M.astype(np.float64), data.w_star.astype(np.float64)
    zeros, smooth = np.zeros(WIDTH), np.full(WIDTH, 0.05)
    dense_rows = np.tile(M @ w_star, (WIDTH, 1))
    atom_rows = np.tile(M[:, 6], (WIDTH, 1))
    steps = [int(s) for s in data.steps]
    write_step(run, steps.index(data.clean_end), W=dense_rows, b=zeros, sigma_rho=smooth)
    write_step(run, len(steps) - 1, W=atom_rows, b=zeros, sigma_rho=smooth)
    ds = perturbations.compute(RunData.open(run))
    tau = data.config.eval.tau
    fgm = ds.sel(attack="fgm")
    np.testing.assert_allclose(fgm.delta_norm.values, tau, rtol=1e-5)
    np.testing.assert_allclose(fgm.sel(model="clean").cos_mwstar.values, 1.0, rtol=1e-5)
    np.testing.assert_allclose(fgm.sel(model="clean").participation_ratio.values,
                               float(ds.participation_ratio_mwstar), rtol=1e-4)
    np.testing.assert_allclose(float(ds.participation_ratio_mwstar), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fgm.sel(model="robust").participation_ratio.values, 1 / D_IN, rtol=1e-4)
    np.testing.assert_allclose(fgm.sel(model="robust").topk_mass.values, 1.0, rtol=1e-5)
    np.testing.assert_allclose(fgm.sel(model="robust").cos_mwstar.values, 1 / math.sqrt(D_IN), rtol=1e-4)
    # PGD (random start, two steps) ends near the same directions: ordered the same way
    pgd = ds.participation_ratio_mean.sel(attack="pgd")
    assert float(pgd.sel(model="clean")) > 2 * float(pgd.sel(model="robust"))
    assert (ds.delta_norm.values <= tau * (1 + 1e-5)).all()
    np.testing.assert_allclose(ds.participation_ratio_mean.values,
                               ds.participation_ratio.mean(dim="example").values, rtol=1e-12)


def test_datasets_follow_the_interface(base_run, tmp_path):
    """Named dims, a long_name on every variable, flat scalar attrs, and storable as a group."""
    data = RunData.open(base_run)
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    for module in (lottery, mixture, purification, perturbations):
        ds = module.compute(data)
        assert module.NAME == ds.attrs["analysis"]
        for name, var in ds.data_vars.items():
            assert var.attrs.get("long_name"), name
        for value in ds.attrs.values():
            assert isinstance(value, (str, int, float)), value
        S.write_group(dst, f"analysis/{module.NAME}", ds)
        back = S.load_run(dst, f"analysis/{module.NAME}")
        assert set(back.data_vars) == set(ds.data_vars)

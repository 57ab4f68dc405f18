"""Tests of purify.analysis.alignment: dense alignment, effective thresholds, norm share, surgery.

The synthetic network is eq. (5.1) written out by hand in an orthonormal dictionary: neuron
``i`` is ``α_i w*_{j_i} M_{j_i}`` (one pure feature) plus a dense part ``Σ_{j≠j_i} (β_i w*_j + ε_ij)
M_j`` whose ``M w*`` component (``β_i``) and remainder (``ε_i ⟂ w*`` off ``j_i``) are known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from purify.analysis import alignment as A
from purify.analysis.mixture import pure_mask

D, K, M_NEURONS = 40, 4, 12  # f = √(k/d) ≈ 0.32: the pure feature is the only coordinate above it


def setup(seed: int = 0):
    g = np.random.default_rng(seed)
    M = np.linalg.qr(g.standard_normal((D, D)))[0]
    w_star = g.choice([-1.0, 1.0], D)
    return g, M, w_star


def build(g, M, w_star, alpha, beta, eps_scale=0.0, signs=None):
    """Coefficients and weights of the synthetic network; returns (W, atoms, pure_coef, mw_coef, eps_coef)."""
    m = len(alpha)
    atoms = g.permutation(D)[:m] if m <= D else g.integers(0, D, m)
    signs = np.ones(m) if signs is None else np.asarray(signs, float)
    pure = np.zeros((m, D))
    mw = np.zeros((m, D))
    eps = np.zeros((m, D))
    for i, j in enumerate(atoms):
        off = np.arange(D) != j
        pure[i, j] = alpha[i] * w_star[j]
        mw[i, off] = beta[i] * w_star[off]
        e = g.standard_normal(D) * off
        e -= (e @ (w_star * off)) / (D - 1) * (w_star * off)  # ε_i ⟂ w* on the dense coordinates
        eps[i] = eps_scale * e
    C = signs[:, None] * (pure + mw + eps)
    return C @ M.T, atoms, signs[:, None] * pure, signs[:, None] * mw, signs[:, None] * eps


def hand_alignment(alpha, beta, eps_sq=0.0):
    """``a_i = β (D−1) / (√D ‖w_i‖)`` with ``‖w_i‖² = α² + β²(D−1) + ‖ε_i‖²``."""
    return beta * (D - 1) / (math.sqrt(D) * np.sqrt(alpha**2 + beta**2 * (D - 1) + eps_sq))


def test_dense_alignment_equals_the_hand_value():
    g, M, w_star = setup()
    alpha = np.linspace(0.5, 2.0, M_NEURONS)
    beta = np.linspace(-0.03, 0.06, M_NEURONS)  # some anti-aligned dense parts: a_i < 0
    W, *_ = build(g, M, w_star, alpha, beta)
    assert pure_mask(W @ M, math.sqrt(K / D), 5).sum(axis=1).tolist() == [1] * M_NEURONS  # N_i = {j_i}
    a = A.dense_alignment(W, M, w_star, K)
    np.testing.assert_allclose(a, hand_alignment(alpha, beta), rtol=1e-10, atol=1e-14)
    assert (a[beta < 0] < 0).all() and (a[beta > 0] > 0).all()
    # a noise part orthogonal to w* adds norm but no alignment
    W2, _, _, _, eps = build(g, M, w_star, alpha, beta, eps_scale=0.01)
    np.testing.assert_allclose(A.dense_alignment(W2, M, w_star, K),
                               hand_alignment(alpha, beta, (eps**2).sum(axis=1)), rtol=1e-10, atol=1e-14)
    # accepts tensors
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(A.dense_alignment(torch.from_numpy(W), torch.from_numpy(M), torch.from_numpy(w_star),
                                                 K), a, rtol=1e-12)


def test_dense_alignment_is_oriented_and_scale_free():
    g, M, w_star = setup(1)
    alpha, beta = np.full(M_NEURONS, 1.0), np.full(M_NEURONS, 0.04)
    signs = np.where(np.arange(M_NEURONS) % 2 == 0, 1.0, -1.0)
    W, *_ = build(g, M, w_star, alpha, beta, eps_scale=0.02, signs=signs)
    a = A.dense_alignment(W, M, w_star, K)
    np.testing.assert_allclose(A.dense_alignment(-W, M, w_star, K), a, rtol=1e-12)
    np.testing.assert_allclose(A.dense_alignment(0.3 * W, M, w_star, K), a, rtol=1e-12)
    # the orientation follows the top coefficient: flipped neurons have the same alignment
    same_eps = build(np.random.default_rng(5), M, w_star, alpha, beta, 0.0, signs)[0]
    b = A.dense_alignment(same_eps, M, w_star, K)
    np.testing.assert_allclose(b, hand_alignment(alpha, beta), rtol=1e-10)
    # without the orientation half of them would read negative: the check has teeth
    raw = (np.where(pure_mask(same_eps @ M, math.sqrt(K / D), 5), 0, same_eps @ M) @ w_star) / (
        math.sqrt(D) * np.linalg.norm(same_eps, axis=1))
    assert (raw[signs < 0] < 0).all()
    assert np.isnan(A.dense_alignment(np.zeros((2, D)), M, w_star, K)).all()


def test_dense_alignment_brute_force_overcomplete():
    """Against the definition written out neuron by neuron, for an over-complete dictionary."""
    g = np.random.default_rng(2)
    d, Dn, m, k = 10, 20, 6, 3
    M = g.standard_normal((d, Dn))
    M /= np.linalg.norm(M, axis=0)
    w_star = g.choice([-1.0, 1.0], Dn)
    W = g.standard_normal((m, d))
    a = A.dense_alignment(W, M, w_star, k)
    f = math.sqrt(k / d)
    for i in range(m):
        c = M.T @ W[i]
        top = int(np.argmax(np.abs(c)))
        keep = sorted(range(Dn), key=lambda j: -abs(c[j]))[:5]
        pure = [j for j in keep if abs(c[j]) >= f * abs(c[top])]
        s = 1.0 if c[top] * w_star[top] >= 0 else -1.0
        dense = sum(c[j] * w_star[j] for j in range(Dn) if j not in pure)
        assert a[i] == pytest.approx(s * dense / (np.linalg.norm(w_star) * np.linalg.norm(W[i])))


def test_effective_r_by_hand():
    W = np.array([[3.0, 4.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    b = np.array([2.0, 0.5, 1.0])
    r2 = A.effective_r(W, b, 4, "l2")
    np.testing.assert_allclose(r2[:2], [2 * 2 / 5, 0.5 * 2 / math.sqrt(2)])
    r1 = A.effective_r(W, b, 4, "linf")  # ‖w‖₁, the dual of ℓ∞
    np.testing.assert_allclose(r1[:2], [4 / 7, 1 / 2])
    assert np.isnan(r2[2]) and np.isnan(r1[2])
    with pytest.raises(ValueError, match="l2"):
        A.effective_r(W, b, 4, "l1")


def test_norm_share_of_change():
    g = np.random.default_rng(3)
    W = g.standard_normal((5, 7))
    assert A.norm_share_of_change(W, 0.8 * W) == pytest.approx(1.0)  # pure rescaling
    scaled = W * g.uniform(0.5, 1.5, (5, 1))
    assert A.norm_share_of_change(W, scaled) == pytest.approx(1.0)
    Q = np.linalg.qr(g.standard_normal((7, 7)))[0]
    assert A.norm_share_of_change(W, W @ Q) == pytest.approx(0.0, abs=1e-12)  # rotation at equal norm
    # one neuron halved, another rotated by 90° at equal norm: (1/2)² / ((1/2)² + 2)
    W2 = np.array([[1.0, 0.0], [0.0, 1.0]])
    Wr = np.array([[0.5, 0.0], [1.0, 0.0]])
    assert A.norm_share_of_change(W2, Wr) == pytest.approx(0.25 / 2.25)
    assert math.isnan(A.norm_share_of_change(W, W))


def test_purification_summary_on_hand_pairs():
    g, M, w_star = setup(4)
    alpha = np.linspace(0.8, 1.2, M_NEURONS)
    beta_c, beta_r = np.full(M_NEURONS, 0.05), np.full(M_NEURONS, 0.02)
    Wc, _, pure, mw, _ = build(g, M, w_star, alpha, beta_c)
    Cr = 0.7 * (pure + (beta_r / beta_c)[:, None] * mw)  # same features, smaller dense part, shrunk
    Wr = Cr @ M.T
    bc = np.linalg.norm(Wc, axis=1) / math.sqrt(K)  # r = 1 at the clean end
    s = A.purification_summary(Wc, bc, Wr, bc, M, w_star, K, "l2")
    ac, ar = hand_alignment(alpha, beta_c), hand_alignment(alpha, beta_r)
    assert s["dense_alignment_clean"] == pytest.approx(np.median(ac))
    assert s["dense_alignment_robust"] == pytest.approx(np.median(ar))
    assert s["dense_alignment_reduction"] == pytest.approx(1 - np.median(ar) / np.median(ac))
    assert s["effective_r_clean"] == pytest.approx(1.0)
    norm_c = np.sqrt(alpha**2 + beta_c**2 * (D - 1))
    norm_r = 0.7 * np.sqrt(alpha**2 + beta_r**2 * (D - 1))
    assert s["effective_r_robust"] == pytest.approx(np.median(norm_c / norm_r))
    change = (alpha * 0.3) ** 2 + (beta_c - 0.7 * beta_r) ** 2 * (D - 1)  # ‖w − w'‖², coefficient by coefficient
    assert s["norm_share_of_change"] == pytest.approx(((norm_c - norm_r) ** 2).sum() / change.sum())
    # pure shrinking under frozen biases: the alignment does not move, r rises by 1/0.7, all norm
    s2 = A.purification_summary(Wc, bc, 0.7 * Wc, bc, M, w_star, K, "l2")
    assert s2["dense_alignment_reduction"] == pytest.approx(0.0, abs=1e-12)
    assert s2["effective_r_robust"] == pytest.approx(1 / 0.7)
    assert s2["norm_share_of_change"] == pytest.approx(1.0)


def test_surgery_variants_are_the_built_parts():
    g, M, w_star = setup(6)
    alpha = np.linspace(0.6, 1.5, M_NEURONS)
    Wc, atoms, pure_c, mw_c, eps_c = build(g, M, w_star, alpha, np.full(M_NEURONS, 0.05), eps_scale=0.01)
    # the robust network: same features (same atoms), smaller pure and dense parts
    g2 = np.random.default_rng(7)
    pure_r = 0.9 * pure_c
    mw_r = 0.3 * mw_c
    eps_r = np.zeros_like(eps_c)
    for i, j in enumerate(atoms):
        off = np.arange(D) != j
        e = g2.standard_normal(D) * off
        eps_r[i] = 0.005 * (e - (e @ (w_star * off)) / (D - 1) * (w_star * off))
    Wr = (pure_r + mw_r + eps_r) @ M.T
    v = A.surgery_weights(Wc, Wr, M, w_star, K)
    assert tuple(v) == A.SURGERY
    np.testing.assert_allclose(v["clean"], Wc)
    np.testing.assert_allclose(v["robust"], Wr)
    np.testing.assert_allclose(v["clean_minus_dense_mwstar"], (pure_c + eps_c) @ M.T, atol=1e-12)
    np.testing.assert_allclose(v["clean_pure"], pure_c @ M.T, atol=1e-12)
    np.testing.assert_allclose(v["clean_pure_robust_dense"], (pure_c + mw_r + eps_r) @ M.T, atol=1e-12)
    np.testing.assert_allclose(v["robust_pure_clean_dense"], (pure_r + mw_c + eps_c) @ M.T, atol=1e-12)
    # removing the dense M w* component zeroes the alignment; removing nothing keeps it
    np.testing.assert_allclose(A.dense_alignment(v["clean_minus_dense_mwstar"], M, w_star, K), 0.0, atol=1e-12)
    assert (A.dense_alignment(v["clean"], M, w_star, K) > 0.1).all()


def test_split_neurons_overcomplete_is_a_projection():
    g = np.random.default_rng(8)
    d, Dn, m = 12, 24, 5
    M = g.standard_normal((d, Dn))
    M /= np.linalg.norm(M, axis=0)
    w_star = g.choice([-1.0, 1.0], Dn)
    W = g.standard_normal((m, d))
    mask = pure_mask(W @ M, 0.6, 3)
    pure, dense, dense_mw = A.split_neurons(W, M, w_star, mask)
    np.testing.assert_allclose(pure + dense, W, atol=1e-12)
    for i in range(m):
        atoms = M[:, mask[i]]
        np.testing.assert_allclose(atoms.T @ dense[i], 0.0, atol=1e-10)  # dense ⟂ span of the pure atoms
        u = M @ np.where(mask[i], 0.0, w_star)
        np.testing.assert_allclose(dense_mw[i], (dense[i] @ u) / (u @ u) * u, atol=1e-12)

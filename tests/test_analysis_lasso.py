"""Tests of the Lasso reconstruction (§8.3, Figure 12, Remark 8.2) and transfer (§6.2) analyses.

The Lasso building blocks are checked against closed forms (soft-thresholding for an orthonormal
dictionary, projections for the span residual) and against theory (noiseless support recovery
under the irrepresentable condition, the monotone residual along the path); the analyses are run
on one tiny real run simulated once.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.linear_model import Lasso

from purify import rng
from purify import store as S
from purify.analysis import lasso, transfer
from purify.analysis.rundata import RunData
from purify.attacks import make_attack
from purify.config import DataConfig, EvalConfig, NetConfig, RunConfig, TrainConfig
from purify.evaluate import robust_correct, sign_correct
from purify.simulate import simulate


def orthonormal(d: int, seed: int) -> np.ndarray:
    """A Haar-ish orthonormal ``(d, d)`` matrix (rows = atoms)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).T


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------
# Lasso building blocks
# --------------------------------------------------------------------------------------


def test_codes_are_the_same_bit_for_bit_on_any_number_of_threads():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((120, 60))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    T = rng.standard_normal((17, 60))
    T[4] = 0.0  # a zero target keeps its exact zero code
    alphas = np.geomspace(lasso.alpha_max(A, T), 1e-2 * lasso.alpha_max(A, T), 8)
    serial, gap = lasso.lasso_codes(A, T, alphas, workers=1, max_atoms=40)
    assert np.isnan(serial[:, :, -1]).all() and not np.isnan(serial[:, :, 1]).any()  # the path stopped
    assert (serial[4, :, :2] == 0).all()
    for workers in (2, 5):
        codes, g = lasso.lasso_codes(A, T, alphas, workers=workers, max_atoms=40)
        np.testing.assert_array_equal(codes, serial)
        assert g == gap


def test_orthonormal_dictionary_gives_soft_thresholding_exactly():
    # sklearn: ||x - A^T y||^2/(2d) + alpha ||y||_1; with A A^T = I this is separable in
    # c = A x: y = sign(c) max(|c| - d alpha, 0).
    d, n = 30, 5
    A = orthonormal(d, 0)
    T = np.random.default_rng(1).standard_normal((n, d))
    alphas = np.geomspace(lasso.alpha_max(A, T), 1e-3 * lasso.alpha_max(A, T), 9)
    codes, gap = lasso.lasso_codes(A, T, alphas, tol=1e-12)
    c = T @ A.T  # (n, p)
    expected = np.sign(c)[:, :, None] * np.clip(np.abs(c)[:, :, None] - d * alphas, 0, None)
    np.testing.assert_allclose(codes, expected, rtol=0, atol=1e-10)
    assert gap <= 1e-12
    assert (codes[:, :, 0] == 0).all()  # alpha_max: every code zero
    assert (codes[:, :, 1] != 0).sum() >= 1  # and just below it, the largest coordinate enters


def test_noiseless_support_recovery_under_the_irrepresentable_condition():
    # Over-complete dictionary (p > d); x = A^T c with c 3-sparse.  When the irrepresentable
    # condition holds, the Lasso recovers supp(c) and its signs for every small enough alpha
    # (Wainwright 2009; noiseless case).  The fixture is checked to satisfy the condition.
    d, p, k = 80, 120, 3
    gen = np.random.default_rng(5)
    A = unit_rows(gen.standard_normal((p, d)))
    support = np.array([7, 40, 101])
    c = np.zeros(p)
    c[support] = [1.5, -1.0, 2.0]
    G = A @ A.T
    off = np.setdiff1d(np.arange(p), support)
    irrep = np.abs(G[np.ix_(off, support)] @ np.linalg.solve(G[np.ix_(support, support)], np.sign(c[support])))
    assert irrep.max() < 1, "fixture: irrepresentable condition"
    x = (c @ A)[None, :]
    alphas = np.geomspace(lasso.alpha_max(A, x), 1e-4 * lasso.alpha_max(A, x), 30)
    codes, _ = lasso.lasso_codes(A, x, alphas, tol=1e-12, max_iter=100_000)
    active = [set(np.flatnonzero(codes[0, :, j])) for j in range(len(alphas))]
    assert active[0] == set()
    assert active[-1] == set(support.tolist())
    np.testing.assert_array_equal(np.sign(codes[0, support, -1]), np.sign(c[support]))
    # At small alpha the code is the debiased truth minus the l1 shrinkage: close to c.
    np.testing.assert_allclose(codes[0, :, -1], c, atol=1e-2)
    # The active set never exceeds the support on the way down (sign consistency along the path).
    assert all(a <= set(support.tolist()) for a in active)
    assert len(active[-1]) == k


def test_error_decreases_monotonically_along_the_path():
    # The Lasso residual norm is non-increasing as the l1 weight decreases.
    d, p, n = 40, 90, 6
    gen = np.random.default_rng(2)
    A = unit_rows(gen.standard_normal((p, d)))
    T = unit_rows(gen.standard_normal((n, d)))
    alphas = np.geomspace(lasso.alpha_max(A, T), 1e-3 * lasso.alpha_max(A, T), 20)
    codes, _ = lasso.lasso_codes(A, T, alphas, tol=1e-12, max_iter=100_000)
    err = lasso.relative_errors(A, T, codes)
    assert np.all(np.diff(err, axis=1) <= 1e-9)
    np.testing.assert_allclose(err[:, 0], 1.0)
    assert err[:, -1].max() < 0.05  # p > d random atoms: near-exact at the end of the path
    # brute force: the relative error from the dense product
    i, j = 3, 11
    r = codes[i, :, j] @ A - T[i]
    assert err[i, j] == pytest.approx(r @ r / (T[i] @ T[i]), rel=1e-12)


def test_lasso_codes_agree_with_sklearn_lasso_estimator():
    d, p = 25, 50
    gen = np.random.default_rng(4)
    A = unit_rows(gen.standard_normal((p, d)))
    x = gen.standard_normal((1, d))
    alphas = np.geomspace(lasso.alpha_max(A, x), 0.05 * lasso.alpha_max(A, x), 6)
    codes, _ = lasso.lasso_codes(A, x, alphas, tol=1e-12, max_iter=100_000)
    for j in (2, 5):
        est = Lasso(alpha=alphas[j], fit_intercept=False, tol=1e-12, max_iter=100_000).fit(A.T, x[0])
        np.testing.assert_allclose(codes[0, :, j], est.coef_, atol=1e-8)


def test_max_atoms_stops_the_path_for_all_targets():
    d, p, n = 30, 60, 4
    gen = np.random.default_rng(3)
    A = unit_rows(gen.standard_normal((p, d)))
    T = unit_rows(gen.standard_normal((n, d)))
    alphas = np.geomspace(lasso.alpha_max(A, T), 1e-3 * lasso.alpha_max(A, T), 12)
    full, _ = lasso.lasso_codes(A, T, alphas, tol=1e-10)
    mean_nnz = (full != 0).sum(axis=1).mean(axis=0)
    stop = int(np.flatnonzero(mean_nnz > 10)[0])
    capped, _ = lasso.lasso_codes(A, T, alphas, tol=1e-10, max_atoms=10)
    np.testing.assert_array_equal(capped[:, :, : stop + 1], full[:, :, : stop + 1])
    assert np.isnan(capped[:, :, stop + 1 :]).all()


def test_span_residual_inside_orthogonal_and_mixed():
    d = 20
    gen = np.random.default_rng(6)
    atoms = gen.standard_normal((3, d))  # a 3-dimensional span, atoms not orthogonal
    inside = gen.standard_normal(3) @ atoms
    q, _ = np.linalg.qr(atoms.T)
    v = gen.standard_normal(d)
    orth = v - q @ (q.T @ v)
    mixed = inside + 0.5 * orth
    T = np.stack([inside, orth, mixed, np.zeros(d)])
    res = lasso.span_residual(atoms, T)
    assert res[0] == pytest.approx(0.0, abs=1e-12)
    assert res[1] == pytest.approx(1.0, abs=1e-12)
    assert res[2] == pytest.approx(0.25 * orth @ orth / (mixed @ mixed), rel=1e-10)
    assert np.isnan(res[3])
    # cross-check: ordinary least squares residual
    y, *_ = np.linalg.lstsq(atoms.T, mixed, rcond=None)
    r = atoms.T @ y - mixed
    assert res[2] == pytest.approx(r @ r / (mixed @ mixed), rel=1e-8)
    # a full-rank dictionary (p >= d generic atoms) spans everything: the Remark 8.2 check is ~0
    full = gen.standard_normal((2 * d, d))
    assert lasso.span_residual(full, T[:3]).max() < 1e-12


def test_atoms_at_error_interpolates_in_log_error():
    err = np.array([1.0, 0.5, 0.05, 0.01])
    nnz = np.array([0.0, 10.0, 30.0, 50.0])
    t = math.log(0.5 / 0.1) / math.log(0.5 / 0.05)
    assert lasso.atoms_at_error(err, nnz, 0.1) == pytest.approx(10 + t * 20)
    assert lasso.atoms_at_error(err, nnz, 0.5) == pytest.approx(10.0)
    assert lasso.atoms_at_error(err, nnz, 1.0) == 0.0
    assert math.isnan(lasso.atoms_at_error(err, nnz, 0.001))
    assert math.isnan(lasso.atoms_at_error(np.array([1.0, 0.3, np.nan]), nnz[:3], 0.1))  # path stopped


def test_unit_atoms_drop_zero_rows():
    W = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    atoms, index = lasso.unit_atoms(W)
    np.testing.assert_array_equal(index, [0, 2])
    np.testing.assert_allclose(atoms, [[0.6, 0.8], [0.0, -1.0]])


# --------------------------------------------------------------------------------------
# The analyses on a tiny real run
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    config = RunConfig(
        data=DataConfig(d=24, k=3, n_test=120),
        net=NetConfig(width=48),
        train=TrainConfig(clean_steps=40, adv_steps=10, batch_size=64, clean_snapshots=3,
                          adv_snapshots=1, log_points=4),
        eval=EvalConfig(radii=(0.5, 1.0), norms=("l2",), attacks=("fgm", "pgd"), pgd_steps=2, n_eval=60),
        seed=4,
    )
    run = tmp_path_factory.mktemp("lasso") / "run"
    simulate(config, run, progress=False)
    return run


@pytest.fixture(scope="module")
def data(base_run) -> RunData:
    return RunData.open(base_run)


@pytest.fixture(scope="module")
def lasso_ds(data) -> xr.Dataset:
    return lasso.compute(data, n_examples=8, n_alphas=10, alpha_min_ratio=1e-2, tol=1e-10,
                         max_iter=100_000, max_atoms=None, n_show=2, n_top=5)


def check_schema(ds: xr.Dataset) -> None:
    for name, var in ds.variables.items():
        if name not in ds.dims:
            assert var.attrs.get("long_name"), f"{name} has no long_name"
    for key, value in ds.attrs.items():
        assert isinstance(value, (str, int, float)), f"attr {key} is not a flat scalar"


def test_lasso_schema_and_path_invariants(lasso_ds, data):
    ds = lasso_ds
    check_schema(ds)
    assert list(ds.dictionary.values) == ["random", "clean", "robust", "true"]
    assert list(ds.target.values) == ["input", "clean_delta", "robust_delta"]
    assert ds.error.dims == ("dictionary", "target", "alpha_index")
    np.testing.assert_allclose(ds.error.isel(alpha_index=0), 1.0)  # alpha_max: all codes zero
    np.testing.assert_array_equal(ds.n_nonzero.isel(alpha_index=0), 0.0)
    assert (ds.example_error.diff("alpha_index") <= 1e-8).all()  # monotone along every path
    np.testing.assert_allclose(ds.lam, 2 * data.config.data.d * ds.alpha)
    np.testing.assert_array_equal(ds.n_atoms, [48, 48, 48, 24])
    np.testing.assert_allclose(ds.nonzero_fraction, ds.n_nonzero / ds.n_atoms)
    # The true dictionary is M (orthonormal) and inputs are M z + noise: near-exact at the end.
    assert float(ds.error.sel(dictionary="true", target="input").isel(alpha_index=-1)) < 0.01
    # m = 2d generic atoms and M both span R^d: Remark 8.2's regression error vanishes.
    assert float(ds.span_residual_max.max()) < 1e-10
    assert float(ds.max_dual_gap) < 1e-6  # tol=1e-10 is not always reached, but nearly
    # the examples: first held-out points the robust model gets right (footnote 18)
    net = data.network(data.final)
    idx = ds.test_index.values
    ok = sign_correct(net.forward(data.test.x), data.test.y).numpy()
    assert ds.attrs["n_robust_correct"] == 8
    np.testing.assert_array_equal(idx, np.flatnonzero(ok)[:8])


def test_lasso_example_codes_match_a_direct_sklearn_fit(lasso_ds, data):
    ds = lasso_ds
    e = 1
    x = data.test.x[int(ds.test_index[e])].numpy().astype(np.float64)
    x = x / np.linalg.norm(x)
    for dictionary, W in (("clean", data.W(data.clean_end)), ("true", data.M.T)):
        sel = ds.sel(dictionary=dictionary, target="input")
        j = int(sel.example_alpha_index)
        atoms, _ = lasso.unit_atoms(W)
        est = Lasso(alpha=float(sel.alpha[j]), fit_intercept=False, tol=1e-12, max_iter=100_000).fit(atoms.T, x)
        top = np.argsort(-np.abs(est.coef_), kind="stable")[:5]
        np.testing.assert_allclose(sel.example_code.isel(example_small=e), est.coef_[top], atol=1e-6)
        # the recorded atoms carry the largest codes (ties aside)
        np.testing.assert_allclose(np.abs(est.coef_[sel.example_atom.isel(example_small=e).values]),
                                   np.abs(est.coef_[top]), atol=1e-6)
        r = est.coef_ @ atoms - x
        assert float(sel.example_error.isel(example=e, alpha_index=j)) == pytest.approx(r @ r, abs=1e-6)


def test_lasso_targets_are_the_run_perturbations(lasso_ds, data):
    # clean_delta / robust_delta: PGD l2 at tau on the clean / robust model, in that order, on
    # the selected examples, with the analysis's own random stream.
    ds = lasso_ds
    ev = data.config.eval
    tau = ev.tau_for("l2")
    assert ds.attrs["tau"] == pytest.approx(tau)
    idx = ds.test_index.values
    x, y = data.test.x[idx], data.test.y[idx]
    attack = make_attack("pgd", "l2", pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                         pgd_restarts=ev.pgd_restarts)
    g = rng.generator(int(data.config.seed), "analysis/lasso")
    for target, step in (("clean_delta", data.clean_end), ("robust_delta", data.final)):
        norms = attack(data.network(step), x, y, tau, generator=g).double().norm(dim=1).numpy()
        assert float(ds.target_norm.sel(target=target)) == pytest.approx(norms.mean(), rel=1e-12)
        assert norms.max() <= tau * (1 + 1e-6)
    assert float(ds.target_norm.sel(target="input")) == pytest.approx(
        x.double().norm(dim=1).mean().item(), rel=1e-12)


def test_max_dual_gap_reports_an_unconverged_path():
    d, p = 20, 40
    gen = np.random.default_rng(8)
    A = unit_rows(gen.standard_normal((p, d)))
    T = unit_rows(gen.standard_normal((3, d)))
    alphas = np.geomspace(lasso.alpha_max(A, T), 1e-3 * lasso.alpha_max(A, T), 5)
    _, converged = lasso.lasso_codes(A, T, alphas, tol=1e-6, max_iter=100_000)
    _, stopped = lasso.lasso_codes(A, T, alphas, tol=1e-6, max_iter=1)
    assert converged <= 1e-6 < stopped


def test_lasso_is_reproducible_and_round_trips_through_the_store(base_run, data, lasso_ds, tmp_path):
    again = lasso.compute(data, n_examples=8, n_alphas=10, alpha_min_ratio=1e-2, tol=1e-10,
                          max_iter=100_000, max_atoms=None, n_show=2, n_top=5)
    xr.testing.assert_identical(again, lasso_ds)
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    S.write_group(run, "analysis/lasso", lasso_ds)
    back = S.open_run(run, "analysis/lasso").load()
    xr.testing.assert_allclose(back, lasso_ds)


# --------------------------------------------------------------------------------------
# Transfer
# --------------------------------------------------------------------------------------


def test_transfer_diagonal_reproduces_the_stored_robust_accuracy(data):
    ds = transfer.compute(data)
    check_schema(ds)
    assert list(ds.source.values) == ["run0:clean", "run0:robust"]
    stored = data.root.robust_accuracy.sel(norm="l2", attack="fgm", radius=1.0)
    for label, step in (("run0:clean", data.clean_end), ("run0:robust", data.final)):
        own = float(ds.accuracy.sel(source=label, target_model=label, attack="fgm"))
        assert own == pytest.approx(float(stored.sel(step=step)), abs=1e-7)  # FGM is deterministic
    # PGD: the same random starts through evaluate.robust_correct give the same diagonal.
    ev = data.config.eval
    attack = make_attack("pgd", "l2", pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                         pgd_restarts=ev.pgd_restarts)
    g = rng.generator(int(data.config.seed), "analysis/transfer/pgd")
    x, y = data.test.x[: ev.n_eval], data.test.y[: ev.n_eval]
    tau = ev.tau_for("l2")
    for label, step in (("run0:clean", data.clean_end), ("run0:robust", data.final)):
        net = data.network(step)
        ok = robust_correct(net, x, y, attack, tau, generator=g) & sign_correct(net.forward(x), y)
        assert float(ds.accuracy.sel(source=label, target_model=label, attack="pgd")) == float(ok.double().mean())
    assert (ds.accuracy <= ds.clean_accuracy + 1e-12).all()  # a wrong clean point is never robust


class Linear:
    """``f(x) = <w, x>``: FGM's perturbation is ``−τ y w/‖w‖`` in closed form."""

    def __init__(self, w: list[float]) -> None:
        self.w = torch.tensor(w, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    def forward_and_input_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.w, self.w.expand_as(x)


def test_transfer_matrix_closed_form_on_linear_models():
    # f1 = <e1, x>, f2 = −f1.  FGM (τ = 0.5) on f1 moves x by (−0.5, 0), on f2 by (+0.5, 0).
    # x = (2, 0), (0.1, 0) with y = +1: f1 is right on both, f2 wrong on both.
    #   δ1 → f1 right on (1.5, 0), wrong on (−0.4, 0): 0.5.   δ2 → f1 right on both: 1.
    #   f2 is wrong on every clean x, so it scores 0 even where x + δ1 fools it into being right.
    models = [Linear([1.0, 0.0]), Linear([-1.0, 0.0])]
    x = torch.tensor([[2.0, 0.0], [0.1, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0], dtype=torch.float64)
    acc = transfer.transfer_matrix(models, x, y, attack=make_attack("fgm", "l2"), tau=0.5,
                                   generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(acc, [[0.5, 0.0], [1.0, 0.0]])


def test_transfer_to_an_identical_run_gives_identical_blocks(base_run, data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base_run, copy)
    ds = transfer.compute(data, RunData.open(copy), attacks=("fgm",))
    assert ds.sizes["source"] == ds.sizes["target_model"] == 4
    acc = ds.accuracy.sel(attack="fgm").values
    # FGM is deterministic and run1 is a copy of run0: all four 2x2 blocks coincide.
    for bs in (0, 2):
        for bt in (0, 2):
            np.testing.assert_array_equal(acc[bs : bs + 2, bt : bt + 2], acc[:2, :2])
    np.testing.assert_array_equal(ds.source_run.values, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.target_model_kind.values, ["clean", "robust", "clean", "robust"])


def test_transfer_refuses_another_problem(base_run, data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(base_run, copy)
    other = RunData.open(copy)
    prob = other.problem
    other.__dict__["problem"] = dataclasses.replace(prob, M=prob.M.flip(1))  # permuted atoms
    with pytest.raises(ValueError, match="dictionary M"):
        transfer.compute(data, other)
    other.__dict__["problem"] = dataclasses.replace(prob, w_star=-prob.w_star)
    with pytest.raises(ValueError, match="teacher w"):
        transfer.compute(data, [other])
    other.__dict__["problem"] = dataclasses.replace(prob, sigma_x=prob.sigma_x * 2)
    with pytest.raises(ValueError, match="sigma_x"):
        transfer.check_same_problem(data, other)

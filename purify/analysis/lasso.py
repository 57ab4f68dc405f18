"""Sparse reconstruction of inputs and perturbations from the learned features (§8.3, Figure 12).

Allen-Zhu & Li (2020), §8.3: reconstruct held-out inputs, and the adversarial perturbations of
the clean model (``clean_delta``) and of the robust model (``robust_delta``), by Lasso over a
dictionary of features, sweeping the ℓ₁ weight (footnote 18)::

    min_y ‖W y − x‖₂² + λ ‖y‖₁ .

Robust features should reach a given error with fewer atoms than clean features (first row of
Figure 12); ``clean_delta`` should be dense — badly reconstructed by few atoms of any
dictionary — and ``robust_delta`` sparser, closer to real inputs (second row).

Choices made here (the paper works with images and convolutions; this is the sparse-coding
analogue):

* **Dictionaries** (``dictionary`` dim): ``random`` = the neurons at initialization (step 0),
  ``clean`` = the neurons at the end of clean training, ``robust`` = the neurons at the end of
  adversarial training, ``true`` = the columns of ``M`` (the reference: inputs are sparse in it
  by construction).  Neuron atoms are the unit-normalised rows ``w_i/‖w_i‖`` (zero rows are
  dropped): Lasso's penalty is not scale invariant, and the network's per-neuron scales are not
  part of what "feature" means here.
* **Examples** (footnote 18): the first ``n_examples`` held-out points that the robust model
  classifies correctly (completed in order by the others if there are too few).
* **Perturbations**: ℓ₂ PGD at the run's ``τ`` with the run's evaluation PGD settings, on the
  clean model (``clean_delta``) and on the robust model (``robust_delta``).
* **Rescaling** (footnote 19: perturbations rescaled "to have similar mean and standard deviation
  as real inputs"): every target — input or perturbation — is scaled to unit ℓ₂ norm.  Inputs and
  perturbations both have mean ≈ 0 by the symmetry of the data, so this matches mean and
  standard deviation exactly, per example, and puts every target's ``α`` on one scale
  (``α ≤ 1/d`` always).  The mean raw norms are kept in ``target_norm``.
* **Solver**: scikit-learn's coordinate descent along the path (:func:`sklearn.linear_model.lasso_path`,
  warm starts, Gram matrix precomputed once per dictionary, gap-safe screening), whose objective
  is ``‖x − W y‖²/(2d) + α‖y‖₁``: the paper's ``λ = 2 d α``.  Both are stored.  Each
  (dictionary, target) curve has its own grid of ``n_alphas`` log-spaced values, from the
  smallest ``α`` at which every code is zero (error 1) down to ``alpha_min_ratio`` times it, so
  no dictionary spends its points on all-zero codes; a curve stops early once its mean number
  of atoms exceeds ``max_atoms`` (dense reconstructions cost the most and are not the
  question), and its later points are NaN.
* **Error** is the relative squared error ``‖W y − x‖²/‖x‖²`` (1 at the all-zero code);
  sparsity is the number of non-zero codes (and its fraction of the dictionary's atoms).
* **Remark 8.2** ("we did not cheat"): the paper checks that ``clean_delta`` lies in the span of
  the robust features, reporting the *regression error* (< 5·10⁻⁵ and < 10⁻⁹).  That is the
  residual of the ordinary (unpenalised) least-squares regression of the target on the
  dictionary, ``‖(I − P) x‖²/‖x‖²`` with ``P`` the orthogonal projector onto the span of the
  atoms (numerical rank: singular values above ``span_rcond`` times the largest).  With at least
  ``d`` generic atoms (the default width ``m = 2d``) it is ≈ 0 for every dictionary — which *is*
  the paper's finding that the comparison is fair; it becomes informative for narrow networks.

Cost at the default size (d = 1000, m = 2000, 16 examples per target kind, 16 path points, at
most 256 atoms): ≈ 18 s on a busy 2-core machine, linear in ``n_examples``; the
clean-feature reconstructions of ``clean_delta`` dominate (near-duplicate neurons make
coordinate descent slow).  BLAS runs single-threaded here (see :func:`lasso_codes`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import xarray as xr
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lasso_path
from threadpoolctl import threadpool_limits

from purify import rng
from purify.analysis.rundata import RunData
from purify.attacks import make_attack
from purify.evaluate import sign_correct

NAME = "lasso"
DICTIONARIES = ("random", "clean", "robust", "true")
TARGETS = ("input", "clean_delta", "robust_delta")


# -- building blocks (pure numpy) -------------------------------------------------------


def unit_atoms(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-normalised rows of ``W`` ``(m, d)`` without its zero rows, and their row indices.

    Returns
    -------
    atoms : (p, d) float64, ``‖atoms[a]‖₂ = 1``.
    index : (p,) the row of ``W`` each atom comes from.
    """
    W = np.asarray(W, np.float64)
    norms = np.linalg.norm(W, axis=1)
    index = np.flatnonzero(norms > 0)
    return W[index] / norms[index, None], index


def alpha_max(atoms: np.ndarray, targets: np.ndarray) -> float:
    """Smallest scikit-learn ``α`` at which every Lasso code of every target is zero.

    KKT at ``y = 0``: ``‖Wᵀx‖_∞ / d ≤ α`` (objective ``‖x − W y‖²/(2d) + α‖y‖₁``).
    ``atoms (p, d)``, ``targets (n, d)``.
    """
    d = atoms.shape[1]
    return float(np.abs(np.asarray(targets, np.float64) @ atoms.T).max() / d)


def gram_matrix(atoms: np.ndarray) -> np.ndarray:
    """``A Aᵀ`` ``(p, p)`` float64 of the atoms ``A (p, d)``: the precomputed Gram matrix of the
    Lasso over them (about 0.1 s at ``p = 2000``, ``d = 1000``; once per dictionary)."""
    X = np.asfortranarray(np.asarray(atoms, np.float64).T)
    return np.ascontiguousarray(X.T @ X)


def lasso_codes(
    atoms: np.ndarray,
    targets: np.ndarray,
    alphas: Sequence[float],
    *,
    tol: float = 1e-4,
    max_iter: int = 2000,
    max_atoms: float | None = None,
    workers: int | None = None,
    gram: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Lasso codes of every target along a path of ℓ₁ weights (§8.3, footnote 18).

    Solves ``min_y ‖x − Aᵀy‖²/(2d) + α‖y‖₁`` (scikit-learn's scaling; the paper's
    ``‖Wy − x‖² + λ‖y‖₁`` with ``W = Aᵀ`` and ``λ = 2dα``) for each target ``x`` and each
    ``α`` by scikit-learn's coordinate descent, warm-started from the previous ``α``.

    Parameters
    ----------
    atoms : (p, d) dictionary atoms as rows.
    targets : (n, d) signals to reconstruct.
    alphas : (n_alphas,) decreasing ℓ₁ weights (scikit-learn ``α``).
    tol : scikit-learn's duality-gap tolerance, relative to ``‖x‖²``.
    max_iter : coordinate-descent sweeps per ``α``.
    max_atoms : stop the path after the first ``α`` at which the mean number of non-zero
        codes over the targets exceeds this (the cost grows with the active set); the
        remaining points are NaN.  ``None``: the whole path.
    workers : threads solving targets side by side (default: torch's thread count, the run's
        budget).  The targets' problems are independent and scikit-learn's coordinate descent
        runs without the GIL, so the codes are the same bit for bit whatever the count.
    gram : ``atoms @ atoms.T`` as :func:`gram_matrix` computes it, if already known (one per
        dictionary, shared by its targets).

    Returns
    -------
    codes : (n, p, n_alphas) float64, NaN beyond the stopping point.
    max_gap : the largest final duality gap of ``‖x − Aᵀy‖²/2 + dα‖y‖₁`` relative to ``‖x‖²``
        (≤ ``tol`` when converged; larger values flag an inexact point of the path).
    """
    X = np.asfortranarray(np.asarray(atoms, np.float64).T)  # (d, p): the design of the regression
    if gram is None:
        gram = gram_matrix(atoms)  # coordinate descent then costs O(p) per update
    T = np.ascontiguousarray(targets, np.float64)
    Xy = np.ascontiguousarray(T @ X)  # (n, p)
    alphas = np.asarray(alphas, np.float64)
    d, p = X.shape
    n = T.shape[0]
    sq = (T**2).sum(axis=1)
    codes = np.full((n, p, len(alphas)), np.nan)
    w = np.zeros((n, p))
    max_gap = 0.0
    rows = np.flatnonzero(sq > 0)  # the zero code is exact for x = 0

    def solve(i: int, alpha: float) -> float:
        _, coef, gaps = lasso_path(X, T[i], alphas=[alpha], precompute=gram, Xy=Xy[i],
                                   coef_init=w[i], check_input=False, tol=tol, max_iter=max_iter)
        w[i] = coef[:, 0]
        # lasso_path returns gaps of the 1/(2d)-scaled objective; sklearn's criterion is gap·d ≤ tol·‖x‖².
        return float(gaps[0]) * d / sq[i]

    # Coordinate descent calls BLAS level-1 routines on short vectors: BLAS threads only add
    # synchronisation (10x slower on a busy 2-core machine), so BLAS runs single-threaded and
    # the targets are spread over threads instead.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(), \
            ThreadPoolExecutor(max(1, workers or torch.get_num_threads())) as pool:
        # Non-convergence is reported through max_gap instead of a warning per target.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j, alpha in enumerate(alphas):  # alpha-major, so the path can stop for all targets at once
            max_gap = max([max_gap, *pool.map(solve, rows, [alpha] * len(rows))])
            codes[:, :, j] = w
            if max_atoms is not None and (w != 0).sum(axis=1).mean() > max_atoms:
                break
    return codes, max_gap


def relative_errors(atoms: np.ndarray, targets: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``‖Aᵀ c − x‖² / ‖x‖²`` for every target and path point: ``(n, n_alphas)``.

    NaN for ``x = 0`` and for path points not computed (NaN codes, see :func:`lasso_codes`).
    """
    A = np.asarray(atoms, np.float64)
    out = np.full(codes.shape[::2], np.nan)
    for i, x in enumerate(np.asarray(targets, np.float64)):
        sq = float(x @ x)
        if sq == 0:
            continue
        done = ~np.isnan(codes[i]).any(axis=0)  # path points that were computed
        c = codes[i][:, done]
        used = np.flatnonzero(np.any(c != 0, axis=1))  # sparse: only atoms used somewhere on the path
        recon = c[used].T @ A[used]  # (n_done, d)
        out[i, done] = ((recon - x) ** 2).sum(axis=1) / sq
    return out


def span_basis(atoms: np.ndarray, *, rcond: float = 1e-6) -> np.ndarray:
    """Orthonormal basis ``(d, r)`` of the span of the rows of ``atoms`` ``(p, d)``.

    Eigenvectors of ``AᵀA`` (a ``d × d`` problem, cheaper than an SVD of ``A`` when ``p > d``)
    whose eigenvalue exceeds ``rcond²`` times the largest: the numerical span at relative
    singular-value cut-off ``rcond``.
    """
    A = np.asarray(atoms, np.float64)
    if A.shape[0] == 0:
        return np.zeros((A.shape[1], 0))
    evals, evecs = np.linalg.eigh(A.T @ A)
    return evecs[:, evals > (rcond**2) * evals.max()]


def span_residual(
    atoms: np.ndarray, targets: np.ndarray, *, rcond: float = 1e-6, basis: np.ndarray | None = None
) -> np.ndarray:
    """Remark 8.2's regression error of each target onto the span of the atoms: ``(n,)``.

    ``‖x − P x‖² / ‖x‖²`` with ``P`` the orthogonal projector onto the span of the rows of
    ``atoms`` — the residual of the unpenalised least-squares regression ``min_y ‖Aᵀy − x‖²``.
    The span is the numerical one of :func:`span_basis` (pass ``basis`` to reuse it).
    NaN for ``x = 0``.
    """
    U = span_basis(atoms, rcond=rcond) if basis is None else basis
    T = np.asarray(targets, np.float64)
    sq = (T**2).sum(axis=1)
    resid = sq - ((T @ U) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sq > 0, np.clip(resid, 0.0, None) / sq, np.nan)


def atoms_at_error(error: np.ndarray, n_nonzero: np.ndarray, reference: float) -> float:
    """Atoms needed to reach ``reference`` error on a mean error-vs-sparsity curve (Figure 12).

    ``error`` and ``n_nonzero`` are ``(n_alphas,)`` means along a decreasing-``α`` path.  At the
    first path point whose error is ``≤ reference`` the count is interpolated linearly in
    ``log(error)`` from the point before; NaN if the path never gets there.
    """
    error = np.asarray(error, np.float64)
    n_nonzero = np.asarray(n_nonzero, np.float64)
    hit = np.flatnonzero(error <= reference)
    if len(hit) == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(n_nonzero[0])
    e0, e1 = np.log(error[i - 1]), np.log(max(error[i], 1e-300))
    t = (e0 - np.log(reference)) / (e0 - e1) if e0 != e1 else 1.0
    return float(n_nonzero[i - 1] + t * (n_nonzero[i] - n_nonzero[i - 1]))


# -- the analysis ----------------------------------------------------------------------


def select_examples(data: RunData, n: int) -> tuple[np.ndarray, int]:
    """Indices of the first ``n`` held-out points the robust model gets right (footnote 18).

    Completed, in held-out order, by points it gets wrong if fewer than ``n`` are right.
    Returns the indices and how many of them are correctly classified.
    """
    test = data.test
    net = data.network(data.final)
    chosen: list[int] = []
    wrong: list[int] = []
    n_test = test.x.shape[0]
    chunk = max(4 * n, 256)
    with torch.no_grad():
        for start in range(0, n_test, chunk):
            sl = slice(start, min(start + chunk, n_test))
            out = net.forward(test.x[sl])
            ok = sign_correct(out, test.y[sl]).numpy()
            idx = np.arange(sl.start, sl.stop)
            chosen += idx[ok].tolist()
            wrong += idx[~ok].tolist()
            if len(chosen) >= n:
                break
    n_right = min(len(chosen), n)
    return np.array((chosen + wrong)[:n], np.int64), n_right


def _unit_rows(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit ℓ₂ norm (zero rows stay zero) and the original norms."""
    T = np.asarray(T, np.float64)
    norms = np.linalg.norm(T, axis=1)
    return np.where(norms[:, None] > 0, T / np.where(norms > 0, norms, 1.0)[:, None], 0.0), norms


def reconstruct(
    atoms: np.ndarray,
    targets: np.ndarray,
    *,
    n_alphas: int = 16,
    alpha_min_ratio: float = 1e-2,
    reference_error: float = 0.2,
    tol: float = 1e-4,
    max_iter: int = 2000,
    max_atoms: float | None = None,
    basis: np.ndarray | None = None,
    gram: np.ndarray | None = None,
    n_show: int = 3,
    n_top: int = 30,
) -> dict[str, np.ndarray | float]:
    """One Figure-12 curve: Lasso paths of ``targets`` over ``atoms`` and their summaries.

    The path has ``n_alphas`` log-spaced ``α`` from :func:`alpha_max` (every code zero) down
    to ``alpha_min_ratio`` times it.  Returns ``alpha (n_alphas,)``, ``error`` and
    ``n_nonzero`` ``(n, n_alphas)`` (NaN beyond a ``max_atoms`` stop), ``span (n,)``
    (:func:`span_residual`), ``atoms_at_error`` (on the mean curves), ``show_index`` (the path
    point of the example codes: the first whose mean error is ``≤ reference_error``, else the
    last computed), ``show_code``/``show_atom`` ``(n_show, n_top)`` (the largest codes of the
    first ``n_show`` targets there, by decreasing ``|code|``; atom −1 pads) and ``max_gap``.
    """
    n = targets.shape[0]
    a_hi = alpha_max(atoms, targets)
    if a_hi > 0:
        alphas = np.geomspace(a_hi, a_hi * alpha_min_ratio, n_alphas)
        codes, gap = lasso_codes(atoms, targets, alphas, tol=tol, max_iter=max_iter, max_atoms=max_atoms,
                                 gram=gram)
    else:  # every target is orthogonal to every atom: the zero code is optimal for any α
        alphas, gap = np.zeros(n_alphas), 0.0
        codes = np.zeros((n, atoms.shape[0], n_alphas))
    done = ~np.isnan(codes).any(axis=(0, 1))  # the path stops for all targets at once
    error = relative_errors(atoms, targets, codes)
    n_nonzero = np.where(done, (codes != 0).sum(axis=1), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: not computed, or every x = 0
        mean_error = np.nanmean(error, axis=0)
    reached = np.flatnonzero(mean_error <= reference_error)
    show = int(reached[0]) if len(reached) else int(np.flatnonzero(done)[-1])
    n_show = min(n_show, n)
    show_code = np.zeros((n_show, n_top))
    show_atom = np.full((n_show, n_top), -1, np.int64)
    for e in range(n_show):
        c = codes[e, :, show]
        top = np.argsort(-np.abs(c), kind="stable")[:n_top]
        show_code[e, : len(top)] = c[top]
        show_atom[e, : len(top)] = top
    return {
        "alpha": alphas, "error": error, "n_nonzero": n_nonzero,
        "span": span_residual(atoms, targets, basis=basis),
        "atoms_at_error": atoms_at_error(mean_error, n_nonzero.mean(axis=0), reference_error),
        "show_index": show, "show_code": show_code, "show_atom": show_atom, "max_gap": gap,
    }


def compute(
    data: RunData,
    *,
    n_examples: int = 16,
    n_alphas: int = 16,
    alpha_min_ratio: float = 1e-2,
    reference_error: float = 0.2,
    tol: float = 1e-4,
    max_iter: int = 2000,
    max_atoms: int | None = 256,
    span_rcond: float = 1e-6,
    n_show: int = 3,
    n_top: int = 30,
) -> xr.Dataset:
    """Lasso error-vs-sparsity paths for each dictionary and target (§8.3, Figure 12, Remark 8.2).

    Parameters
    ----------
    data : the run.
    n_examples : targets per kind (held-out inputs, and their perturbations).  The cost is
        linear in it; see the module docstring for how they are chosen.
    n_alphas : points of each ℓ₁ path, log-spaced.
    alpha_min_ratio : smallest ``α`` of a path relative to its largest (all-zero) one.
    reference_error : error level at which ``atoms_at_error`` reads the atom count.
    tol, max_iter : coordinate-descent tolerance (duality gap relative to ``‖x‖²``) and sweeps.
    max_atoms : the path of a (dictionary, target) stops after the first ``α`` where its mean
        number of atoms exceeds this; later points are NaN (``None``: the whole path).  Dense
        reconstructions are the expensive part, and the question is about sparse ones.
    span_rcond : relative singular-value cut-off defining the span in ``span_residual``.
    n_show, n_top : the example codes kept for plotting: ``n_show`` examples, their ``n_top``
        largest codes, at the first path point where the mean error reaches ``reference_error``.

    Returns
    -------
    xr.Dataset
        Dims ``dictionary``, ``target``, ``alpha_index`` (the path), ``example``,
        ``example_small``, ``atom``; see the variables' ``long_name``.
    """
    if n_examples < 1 or n_alphas < 2 or not 0 < alpha_min_ratio < 1:
        raise ValueError(f"need n_examples >= 1, n_alphas >= 2 and 0 < alpha_min_ratio < 1; got "
                         f"{n_examples}, {n_alphas}, {alpha_min_ratio}")
    cfg = data.config
    ev = cfg.eval
    d = cfg.data.d
    tau = float(ev.tau_for("l2"))
    steps = {"random": int(data.steps[0]), "clean": data.clean_end, "robust": data.final}

    # Targets: held-out inputs and the PGD perturbations of the clean and the robust model.
    n_examples = min(int(n_examples), cfg.data.n_test)
    idx, n_right = select_examples(data, n_examples)
    x, y = data.test.x[idx], data.test.y[idx]
    attack = make_attack("pgd", "l2", pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                         pgd_restarts=ev.pgd_restarts)
    g = rng.generator(int(cfg.seed), "analysis/lasso")
    raw = {"input": x.numpy()}
    with torch.no_grad():
        raw["clean_delta"] = attack(data.network(steps["clean"]), x, y, tau, generator=g).numpy()
        raw["robust_delta"] = attack(data.network(steps["robust"]), x, y, tau, generator=g).numpy()
    targets, target_norm = {}, {}
    for name in TARGETS:
        targets[name], norms = _unit_rows(raw[name])  # footnote 19, see the module docstring
        target_norm[name] = float(norms.mean())

    # Dictionaries: unit neuron directions, and M's columns.
    atoms, origin = {}, {}
    for name in DICTIONARIES:
        W = data.M.T if name == "true" else data.W(steps[name])
        atoms[name], origin[name] = unit_atoms(W)

    # Single-threaded BLAS: the work is many small products, and OpenBLAS threads on a busy
    # 2-core machine made them (and eigh) 10-20x slower.
    with threadpool_limits(limits=1, user_api="blas"):
        curves = {}
        for dn in DICTIONARIES:
            basis, gram = span_basis(atoms[dn], rcond=span_rcond), gram_matrix(atoms[dn])
            for tn in TARGETS:
                curves[dn, tn] = reconstruct(
                    atoms[dn], targets[tn], n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio,
                    reference_error=reference_error, tol=tol, max_iter=max_iter, max_atoms=max_atoms,
                    basis=basis, gram=gram, n_show=n_show, n_top=n_top)

    def grid(key: str) -> np.ndarray:
        return np.array([[curves[dn, tn][key] for tn in TARGETS] for dn in DICTIONARIES])

    err_ex, nnz_ex, span = grid("error"), grid("n_nonzero"), grid("span")  # (4, 3, n[, n_alphas])
    show_atom = grid("show_atom")
    for di, dn in enumerate(DICTIONARIES):  # atom positions -> neuron (or feature) indices
        show_atom[di] = np.where(show_atom[di] >= 0, origin[dn][np.clip(show_atom[di], 0, None)], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN means: not computed, or x = 0
        err = np.nanmean(err_ex, axis=2)
        span_mean = np.nanmean(span, axis=2)
        span_max = np.nanmax(span, axis=2)
    nnz = nnz_ex.mean(axis=2)
    n_atoms = np.array([atoms[dn].shape[0] for dn in DICTIONARIES], np.int64)
    alphas = grid("alpha")

    DT, DTA = ("dictionary", "target"), ("dictionary", "target", "alpha_index")
    DTEA = ("dictionary", "target", "example", "alpha_index")
    show_dims = ("dictionary", "target", "example_small", "atom")
    ds = xr.Dataset(
        {
            "error": (DTA, err, {"long_name": "mean relative reconstruction error ||W y - x||^2/||x||^2"}),
            "n_nonzero": (DTA, nnz, {"long_name": "mean number of non-zero codes (atoms used)"}),
            "nonzero_fraction": (DTA, nnz / n_atoms[:, None, None], {
                "long_name": "mean fraction of the dictionary's atoms used"}),
            "example_error": (DTEA, err_ex, {"long_name": "relative reconstruction error per example"}),
            "example_n_nonzero": (DTEA, nnz_ex, {"long_name": "non-zero codes per example"}),
            "atoms_at_error": (DT, grid("atoms_at_error"), {
                "long_name": f"atoms used where the mean error curve reaches {reference_error} "
                             "(interpolated; NaN if not reached before the path stops)"}),
            "span_residual": (DT, span_mean, {
                "long_name": "mean least-squares regression error onto the dictionary's span (Remark 8.2)"}),
            "span_residual_max": (DT, span_max, {
                "long_name": "largest least-squares regression error onto the span over examples"}),
            "n_atoms": ("dictionary", n_atoms, {"long_name": "atoms in the dictionary (non-zero neurons)"}),
            "target_norm": ("target", np.array([target_norm[t] for t in TARGETS]), {
                "long_name": "mean l2 norm of the targets before rescaling to unit norm"}),
            "example_alpha_index": (DT, grid("show_index").astype(np.int64), {
                "long_name": "path index of the example codes: first with mean error <= reference_error"}),
            "example_code": (show_dims, grid("show_code"), {
                "long_name": "largest Lasso codes of a few examples, by decreasing |code|"}),
            "example_atom": (show_dims, show_atom, {
                "long_name": "atom of each example code: neuron index (random/clean/robust), "
                             "feature index (true); -1 pads"}),
            "max_dual_gap": ((), max(c["max_gap"] for c in curves.values()), {
                "long_name": "largest final duality gap of ||x - W y||^2/2 + d alpha ||y||_1 "
                             "relative to ||x||^2 (converged if <= tol)"}),
        },
        coords={
            "dictionary": np.array(DICTIONARIES),
            "target": np.array(TARGETS),
            "alpha_index": np.arange(n_alphas),
            "alpha": (DTA, alphas, {"long_name": "l1 weight alpha of ||x - W y||^2/(2d) + alpha ||y||_1"}),
            "lam": (DTA, 2 * d * alphas, {"long_name": "l1 weight lambda of ||W y - x||^2 + lambda ||y||_1"}),
            "example": np.arange(n_examples),
            "test_index": ("example", idx, {"long_name": "held-out index of the example"}),
            "example_small": np.arange(show_atom.shape[2]),
            "atom": np.arange(n_top),
            "dictionary_step": ("dictionary", np.array([steps.get(dn, -1) for dn in DICTIONARIES], np.int64), {
                "long_name": "snapshot step of the neuron dictionary (-1: the true dictionary M)"}),
        },
    )
    ds.attrs.update(
        analysis=NAME, n_examples=int(n_examples), n_alphas=int(n_alphas), alpha_min_ratio=float(alpha_min_ratio),
        reference_error=float(reference_error), tol=float(tol), max_iter=int(max_iter),
        max_atoms=-1 if max_atoms is None else int(max_atoms), span_rcond=float(span_rcond),
        n_show=int(show_atom.shape[2]), n_top=int(n_top), tau=tau, n_robust_correct=int(n_right),
        attack="pgd l2", pgd_steps=int(ev.pgd_steps), pgd_restarts=int(ev.pgd_restarts),
        atoms="unit-normalised neuron rows w_i/||w_i|| (zero rows dropped); columns of M for 'true'",
        rescaling="every target scaled to unit l2 norm (footnote 19)",
        solver="sklearn.linear_model.lasso_path (coordinate descent, warm starts, precomputed Gram)",
        paper="Allen-Zhu & Li 2020, Sec. 8.3, Figure 12, footnotes 18-19, Remark 8.2",
    )
    return ds

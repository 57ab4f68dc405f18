"""Purification measured in direction: the dense mixture's alignment with ``M w*``, not its size.

Allen-Zhu & Li (2020), Theorem 5.2 and eq. (5.1)/(6.1): after clean training each neuron is

    w_i ≈ Σ_{j∈N_i} α_ij w*_j M_j  +  Σ_{j∉N_i} β_ij w*_j M_j,

a few pure features plus a dense mixture whose coefficients ``β_ij`` are positive on average,
so that it points along ``M w*``; Theorem 5.3 says adversarial training removes the dense part.
Adversarial training here keeps (or raises) the biases, so a neuron can also become more
robust by *shrinking* — a higher effective threshold silences its dense part together with
everything else, without changing its direction.  The functions below separate the two.

**Dense alignment** ``a_i = s_i <P_{¬N_i} Mᵀw_i, ŵ*> / ‖w_i‖`` with ``ŵ* = w*/‖w*‖``,
``P_{¬N_i}`` zeroing the coordinates of ``N_i`` (the rule of :mod:`purify.analysis.mixture`:
``|c_ij| ≥ √(k/d)·max_j |c_ij|``, at most 5) and ``s_i = ±1`` orienting the neuron so its top
coefficient agrees with ``w*``.  It is scale-free: a neuron that only shrinks keeps its
``a_i``.  For eq. (5.1) with ``|N_i| = 1``, ``w_i = α M_j + β Σ_{j'≠j} w*_j' M_j'`` (orthonormal
``M``, ``D`` features): ``a_i = β(D−1) / (√D √(α² + β²(D−1)))``.

**Effective threshold** ``r_i = b_i √k / ‖w_i‖_q`` (``q`` the dual of the attack norm): the
bias in units of a pure neuron's response ``‖w_i‖_q/√k`` to a small (``1/√k``) coordinate.
The default (``norm``) bias schedule sets ``b_i = r ‖w_i‖/√k`` in clean training; frozen (or
raised) biases over neurons that shrink in adversarial training raise it.

**Norm share of the change** ``Σ_i (‖w_i‖ − ‖w'_i‖)² / Σ_i ‖w_i − w'_i‖²`` ∈ [0, 1] (reverse
triangle inequality): 1 when adversarial training only rescaled the neurons, 0 when it only
rotated them at equal norm.

**Dictionary surgery** (:func:`surgery_weights`).  Each neuron is split into its pure part
``p_i`` (the orthogonal projection of ``w_i`` on ``span{M_j : j ∈ N_i}``; for an orthonormal
``M`` exactly ``Σ_{j∈N_i} c_ij M_j``) and its dense part ``v_i = w_i − p_i``; the dense ``M w*``
component of ``v_i`` is its projection on ``u_i = M (w* restricted to ¬N_i) = Σ_{j∉N_i} w*_j M_j``.
For an orthonormal ``M``, ``<w_i, u_i> = <P_{¬N_i} c_i, w*>``, so removing that component sets
``a_i`` to 0 exactly.  ``N_i`` is the clean neuron's, for the robust neuron too, so that in
every variant pure and dense parts split the same coordinates.
"""

from __future__ import annotations

import numpy as np
import torch

from purify.analysis.mixture import (
    active_neurons,
    default_pure_fraction,
    dense_alignment_of,
    pure_mask,
)
from purify.attacks import Norm

#: Surgery variants in the order they are stored (:func:`surgery_weights`).
SURGERY = ("clean", "clean_minus_dense_mwstar", "clean_pure", "clean_pure_robust_dense",
           "robust_pure_clean_dense", "robust")


def _f64(a) -> np.ndarray:
    """A numpy float64 copy of an array or (any-device) tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, np.float64)


def pure_sets(W, M, k: int, *, pure_fraction: float | None = None, max_pure: int = 5) -> np.ndarray:
    """Boolean ``(m, D)``: ``j ∈ N_i`` for the neurons ``W (m, d)`` in the dictionary ``M (d, D)``,
    by :func:`purify.analysis.mixture.pure_mask` with ``f = √(k/d)`` unless given."""
    W, M = _f64(W), _f64(M)
    f = default_pure_fraction(k, W.shape[1]) if pure_fraction is None else float(pure_fraction)
    return pure_mask(W @ M, f, max_pure)


def dense_alignment(W, M, w_star, k: int, *, pure_fraction: float | None = None, max_pure: int = 5) -> np.ndarray:
    """Per-neuron dense alignment ``a_i`` (module docstring; Thm 5.2, eq. (5.1)).

    Parameters
    ----------
    W : (m, d) neurons.
    M : (d, D) dictionary.
    w_star : (D,) teacher.
    k : sparsity (sets ``f = √(k/d)`` of the ``N_i`` rule).
    pure_fraction, max_pure : the ``N_i`` rule's ``f`` and cap (:func:`purify.analysis.mixture.pure_mask`).

    Returns
    -------
    (m,) float64 ``a_i`` (in ``[−1, 1]`` for an orthonormal ``M``); NaN for a zero neuron.
    """
    W, M, w_star = _f64(W), _f64(M), _f64(w_star)
    C = W @ M
    f = default_pure_fraction(k, W.shape[1]) if pure_fraction is None else float(pure_fraction)
    return dense_alignment_of(C, w_star, pure_mask(C, f, max_pure), np.linalg.norm(W, axis=1))


def effective_r(W, b, k: int, norm: str = "l2") -> np.ndarray:
    """Effective thresholds ``r_i = b_i √k / ‖w_i‖_q`` ``(m,)``, ``q`` dual of ``norm`` (NaN for a zero neuron).

    Parameters
    ----------
    W : (m, d) neurons.
    b : (m,) biases.
    k : sparsity.
    norm : attack norm, ``"l2"`` or ``"linf"``.
    """
    W, b = _f64(W), _f64(b)
    wq = Norm(norm).dual_norm(torch.from_numpy(W)).numpy()
    return np.divide(b * np.sqrt(k), wq, out=np.full(wq.shape, np.nan), where=wq > 0)


def norm_share_of_change(W_clean, W_robust) -> float:
    """``Σ_i (‖w_i‖ − ‖w'_i‖)² / Σ_i ‖w_i − w'_i‖²``: the share of the change that is norm (module
    docstring); NaN when nothing changed."""
    Wc, Wr = _f64(W_clean), _f64(W_robust)
    total = float(((Wc - Wr) ** 2).sum())
    norm_part = float(((np.linalg.norm(Wc, axis=1) - np.linalg.norm(Wr, axis=1)) ** 2).sum())
    return norm_part / total if total > 0 else float("nan")


def _median(values: np.ndarray, active: np.ndarray) -> float:
    v = values[active & np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def purification_summary(W_clean, b_clean, W_robust, b_robust, M, w_star, k: int, norm: str = "l2",
                         *, min_norm_fraction: float = 0.1) -> dict[str, float]:
    """Medians over neurons of the direction and threshold measures, clean vs robust model.

    Medians are over each model's *active* neurons (``‖w_i‖ ≥ min_norm_fraction ·
    median ‖w_i‖``, as in :mod:`purify.analysis.mixture`), NaNs skipped.

    Parameters
    ----------
    W_clean, W_robust : (m, d) neurons at the end of clean and of adversarial training.
    b_clean, b_robust : (m,) their biases.
    M : (d, D) dictionary;  w_star : (D,) teacher;  k : sparsity.
    norm : attack norm of adversarial training (``"l2"`` or ``"linf"``) for ``r_i``.

    Returns
    -------
    dict with ``dense_alignment_clean``, ``dense_alignment_robust``,
    ``dense_alignment_reduction`` (``1 − robust/clean``), ``effective_r_clean``,
    ``effective_r_robust`` and ``norm_share_of_change``.
    """
    Wc, Wr = _f64(W_clean), _f64(W_robust)
    ac, ar = active_neurons(Wc, min_norm_fraction), active_neurons(Wr, min_norm_fraction)
    a_clean = _median(dense_alignment(Wc, M, w_star, k), ac)
    a_robust = _median(dense_alignment(Wr, M, w_star, k), ar)
    return {
        "dense_alignment_clean": a_clean,
        "dense_alignment_robust": a_robust,
        "dense_alignment_reduction": 1.0 - a_robust / a_clean if a_clean != 0 else float("nan"),
        "effective_r_clean": _median(effective_r(Wc, b_clean, k, norm), ac),
        "effective_r_robust": _median(effective_r(Wr, b_robust, k, norm), ar),
        "norm_share_of_change": norm_share_of_change(Wc, Wr),
    }


def split_neurons(W, M, w_star, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pure part, dense part and the dense part's ``M w*`` component of every neuron (module docstring).

    Parameters
    ----------
    W : (m, d) neurons;  M : (d, D) dictionary;  w_star : (D,) teacher.
    mask : (m, D) ``j ∈ N_i``.

    Returns
    -------
    pure, dense, dense_mwstar : (m, d) each; ``pure + dense = W``; ``dense_mwstar`` is the
    projection of ``dense`` on ``u_i = Σ_{j∉N_i} w*_j M_j`` (zero where ``u_i = 0``).
    """
    W, M, w_star = _f64(W), _f64(M), _f64(w_star)
    pure = np.zeros_like(W)
    for i in range(W.shape[0]):
        atoms = M[:, mask[i]]  # (d, |N_i|), at most max_pure columns
        if atoms.shape[1]:
            coef = np.linalg.lstsq(atoms, W[i], rcond=None)[0]
            pure[i] = atoms @ coef
    dense = W - pure
    U = np.where(mask, 0.0, w_star[None, :]) @ M.T  # (m, d): u_i = M (w* off N_i)
    uu = (U * U).sum(axis=1)
    scale = np.divide((dense * U).sum(axis=1), uu, out=np.zeros_like(uu), where=uu > 0)
    return pure, dense, scale[:, None] * U


def surgery_weights(W_clean, W_robust, M, w_star, k: int, *, pure_fraction: float | None = None,
                    max_pure: int = 5) -> dict[str, np.ndarray]:
    """The weights of the dictionary-surgery variants, float64 ``(m, d)`` each, keyed by :data:`SURGERY`.

    With ``p, v`` the pure and dense parts of the clean neurons and ``p', v'`` those of the
    robust neurons (both split on the *clean* ``N_i``, :func:`split_neurons`):

    * ``clean``: ``w = p + v``;  ``robust``: ``w' = p' + v'``;
    * ``clean_minus_dense_mwstar``: ``w`` without the dense part's ``M w*`` component (the
      direction eq. (5.1) says clean training adds; its ``a_i`` is 0 for orthonormal ``M``);
    * ``clean_pure``: ``p`` (the whole dense part removed);
    * ``clean_pure_robust_dense``: ``p + v'`` (the clean features, robust dense part);
    * ``robust_pure_clean_dense``: ``p' + v`` (the robust features, clean dense part).
    """
    Wc, Wr = _f64(W_clean), _f64(W_robust)
    mask = pure_sets(Wc, M, k, pure_fraction=pure_fraction, max_pure=max_pure)
    pc, vc, vc_mw = split_neurons(Wc, M, w_star, mask)
    pr, vr, _ = split_neurons(Wr, M, w_star, mask)
    return {
        "clean": Wc,
        "clean_minus_dense_mwstar": Wc - vc_mw,
        "clean_pure": pc,
        "clean_pure_robust_dense": pc + vr,
        "robust_pure_clean_dense": pr + vc,
        "robust": Wr,
    }

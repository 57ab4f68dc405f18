"""Pure features plus a dense mixture: Theorem 5.2's decomposition of every neuron.

Allen-Zhu & Li (2020), Theorem 5.2, eq. (5.1) and (6.1): after clean training each neuron is

    w_i = Σ_{j∈N_i} α_ij w*_j M_j + Σ_{j∉N_i} β_ij w*_j M_j,

with ``|N_i| = O(1)``, ``α_ij = Θ̃(1)`` on the few *pure* coordinates and ``|β_ij| < k/d^{1−c}``
off them, the ``β`` positive on average (``≈ k/d``): a small *dense mixture* aligned with
``M w* = Σ_j w*_j M_j``.  Adversarial training (Theorem 5.3) removes that dense part.

**Coefficients.**  ``c_ij = <M_j, w_i>``.  For an orthonormal dictionary this is exactly the
expansion ``w_i = Σ_j c_ij M_j``; for an over-complete one it is the correlation with each atom,
and the norms of the parts below are computed with the Gram matrix ``MᵀM``.  Since
``w*_j = ±1``, ``α_ij = c_ij / w*_j`` on ``N_i`` and ``β_ij = c_ij / w*_j`` off it.

**The rule for N_i** (stated, parameterised).  ``N_i = {j : |c_ij| ≥ f · max_j' |c_ij'|}``, keeping
at most ``max_pure`` of the largest.  A threshold relative to the neuron's own largest
coefficient is scale-free, as it must be because eq. (6.1) is stated up to the growing scale
``α_t``.  The default ``f = sqrt(k/d)`` is the geometric midpoint of the two scales the theorem
separates, ``|β|/α ≲ k/d`` and ``α/α = 1``: a coordinate is called pure when it is closer (on a
log scale) to the pure size than to the dense size.  At the default size (d=1000, k=60) this is
``f ≈ 0.245``.  The cap reflects ``|N_i| = O(1)``: a neuron that has not separated from its
random init has many coordinates near its maximum and would otherwise get a huge ``N_i``; with
the cap ``n_pure = max_pure`` flags it.

**Dense alignment** (:mod:`purify.analysis.alignment`).  ``a_i = s_i <P_{¬N_i} c_i, ŵ*> / ‖w_i‖``
with ``ŵ* = w*/‖w*‖`` and ``s_i`` the sign that makes the neuron's top coefficient agree with
``w*``: the share of the neuron, in norm, that points along ``M w*`` outside its own pure
coordinates — eq. (5.1)'s dense mixture measured in direction, not in size.  Stored per
``(step, neuron)`` so its course over clean and then adversarial training can be followed.

**Summaries** are medians over *active* neurons, ``‖w_i‖ ≥ min_norm_fraction · median_i ‖w_i‖``
at that step, so a few neurons that never grew do not dominate ratios.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from purify.analysis.rundata import RunData

NAME = "mixture"


def default_pure_fraction(k: int, d: int) -> float:
    """The default ``f = sqrt(k/d)`` of the ``N_i`` rule (module docstring)."""
    return math.sqrt(k / d)


def active_neurons(W: np.ndarray, min_norm_fraction: float = 0.1) -> np.ndarray:
    """Boolean ``(m,)``: ``‖w_i‖ ≥ min_norm_fraction · median_i ‖w_i‖`` (the neurons the medians use)."""
    norms = np.linalg.norm(W, axis=1)
    return norms >= min_norm_fraction * np.median(norms)


def dense_alignment_of(C: np.ndarray, w_star: np.ndarray, mask: np.ndarray, w_norm: np.ndarray) -> np.ndarray:
    """``a_i = s_i Σ_{j∉N_i} c_ij w*_j / (‖w*‖ ‖w_i‖)`` ``(m,)`` from coefficients (module docstring).

    Parameters
    ----------
    C : (m, D) coefficients ``c_ij = <M_j, w_i>``.
    w_star : (D,) teacher.
    mask : (m, D) ``j ∈ N_i`` (:func:`pure_mask`).
    w_norm : (m,) ``‖w_i‖`` (of the weights themselves: for an over-complete dictionary it is
        not a function of ``C``).

    Returns
    -------
    (m,) ``a_i``; ``s_i = sign(c_{i,top} w*_top)`` at ``top = argmax_j |c_ij|`` (``+1`` on a tie
    at 0), so the dense part is measured against the neuron's own top feature and ``a_i`` is
    unchanged when the neuron flips sign (``−w_i`` detects the same features, voting the other
    way).  NaN for a zero neuron.
    """
    m = C.shape[0]
    top = np.abs(C).argmax(axis=1)
    s = np.where(C[np.arange(m), top] * w_star[top] < 0, -1.0, 1.0)
    dense_dot = np.where(mask, 0.0, C) @ w_star  # <P_{¬N_i} c_i, w*>
    den = np.linalg.norm(w_star) * np.asarray(w_norm, np.float64)
    return np.divide(s * dense_dot, den, out=np.full(m, np.nan), where=den > 0)


def pure_mask(C: np.ndarray, pure_fraction: float, max_pure: int) -> np.ndarray:
    """Boolean ``(m, D)``: ``j ∈ N_i`` (the module docstring's rule for Theorem 5.2's ``N_i``).

    ``N_i`` holds the coordinates with ``|c_ij| ≥ pure_fraction · max_j |c_ij|``, at most
    ``max_pure`` of them (the largest); it always holds the largest coordinate.
    """
    A = np.abs(C)
    m, D = A.shape
    mask = A >= pure_fraction * A.max(axis=1, keepdims=True)
    if max_pure < D:
        # The max_pure largest coordinates of each row (unordered): the only ones N_i may keep.
        order = np.argpartition(-A, max_pure - 1, axis=1)[:, :max_pure]
        keep = np.zeros_like(mask)
        np.put_along_axis(keep, order, True, axis=1)
        mask &= keep
    return mask


def is_orthonormal(M: np.ndarray, atol: float = 1e-4) -> bool:
    """``MᵀM = I`` up to the float32 round-off of a stored orthogonal dictionary."""
    return M.shape[0] == M.shape[1] and bool(np.allclose(M.T @ M, np.eye(M.shape[1]), atol=atol))


def decompose(
    C: np.ndarray,
    w_star: np.ndarray,
    mask: np.ndarray,
    *,
    gram: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-neuron pieces of Theorem 5.2's decomposition, from coefficients ``C = W M`` ``(m, D)``.

    Parameters
    ----------
    C : (m, D) coefficients ``c_ij = <M_j, w_i>``.
    w_star : (D,) teacher (nonzero entries).
    mask : (m, D) ``j ∈ N_i`` (:func:`pure_mask`).
    gram : ``MᵀM`` for a non-orthonormal dictionary; ``None`` means ``MᵀM = I``.

    Returns
    -------
    dict of (m,) arrays: ``n_pure``, ``alpha_top`` (``α`` of the largest coordinate),
    ``pure_norm`` ``‖Σ_{N_i} c_ij M_j‖``, ``dense_norm`` ``‖Σ_{j∉N_i} c_ij M_j‖``,
    ``beta_mean`` (mean ``β_ij`` over ``j ∉ N_i``) and ``dense_cos_mwstar``, the cosine between the
    dense part and ``Σ_{j∉N_i} w*_j M_j`` — ``M w*`` restricted to the same coordinates, so a
    dense part exactly proportional to Theorem 5.2's ``Σ_{j∉N_i} w*_j M_j`` has cosine 1 whatever
    ``N_i`` is.
    """
    ratio = C / w_star[None, :]  # α on N_i, β off it (w*_j factored out)
    P = np.where(mask, C, 0.0)
    V = C - P
    R = np.where(mask, 0.0, w_star[None, :])  # M w* restricted to the dense coordinates

    def inner(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return (A * B).sum(axis=1) if gram is None else ((A @ gram) * B).sum(axis=1)

    n_dense = (~mask).sum(axis=1)
    pure_norm = np.sqrt(np.maximum(inner(P, P), 0.0))
    dense_norm = np.sqrt(np.maximum(inner(V, V), 0.0))
    ref_norm = np.sqrt(np.maximum(inner(R, R), 0.0))
    top = np.abs(C).argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_mean = np.where(n_dense > 0, np.where(mask, 0.0, ratio).sum(axis=1) / n_dense, np.nan)
        cos = np.where(dense_norm * ref_norm > 0, inner(V, R) / (dense_norm * ref_norm), np.nan)
    return {
        "n_pure": mask.sum(axis=1),
        "alpha_top": ratio[np.arange(C.shape[0]), top],
        "pure_norm": pure_norm,
        "dense_norm": dense_norm,
        "beta_mean": beta_mean,
        "dense_cos_mwstar": cos,
    }


def _median(values: np.ndarray, active: np.ndarray) -> float:
    v = values[active]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def compute(
    data: RunData,
    *,
    pure_fraction: float | None = None,
    max_pure: int = 5,
    min_norm_fraction: float = 0.1,
) -> xr.Dataset:
    """Theorem 5.2's pure + dense decomposition of every neuron at every snapshot.

    Parameters
    ----------
    data : the run.
    pure_fraction : ``f`` of the ``N_i`` rule (module docstring); ``None`` → ``sqrt(k/d)``.
    max_pure : cap on ``|N_i|`` (Theorem 5.2: ``|N_i| = O(1)``).
    min_norm_fraction : a neuron enters the per-step medians when
        ``‖w_i‖ ≥ min_norm_fraction · median_i ‖w_i‖``.

    Returns
    -------
    xr.Dataset
        Per ``(step, neuron)`` reductions, per-step medians and 0-d clean/robust comparisons.
    """
    cfg = data.config
    d, k = cfg.data.d, cfg.data.k
    f = default_pure_fraction(k, d) if pure_fraction is None else float(pure_fraction)
    if not 0 < f <= 1:
        raise ValueError(f"pure_fraction must be in (0, 1], got {f}")
    if max_pure < 1:
        raise ValueError(f"max_pure must be >= 1, got {max_pure}")
    M = data.M.astype(np.float64)
    w_star = data.w_star.astype(np.float64)
    gram = None if is_orthonormal(M) else M.T @ M
    steps = np.asarray(data.steps)
    step_list = [int(s) for s in steps]
    m = cfg.net.width
    names = ("n_pure", "alpha_top", "pure_norm", "dense_norm", "beta_mean", "dense_cos_mwstar")
    per = {name: np.empty((len(steps), m)) for name in names}
    align = np.empty((len(steps), m))
    active = np.empty((len(steps), m), bool)
    beta_grand = np.empty(len(steps))
    for s, step in enumerate(step_list):
        W = data.W(step).astype(np.float64)
        C = W @ M
        mask = pure_mask(C, f, max_pure)
        parts = decompose(C, w_star, mask, gram=gram)
        for name in names:
            per[name][s] = parts[name]
        align[s] = dense_alignment_of(C, w_star, mask, np.linalg.norm(W, axis=1))
        active[s] = active_neurons(W, min_norm_fraction)
        # Theorem 5.2's averaged statement: (1/(mD)) Σ_i Σ_{j∉N_i} β_ij.
        beta_grand[s] = float(np.where(mask, 0.0, C / w_star[None, :]).sum() / (m * C.shape[1]))

    with np.errstate(invalid="ignore", divide="ignore"):
        dense_to_pure = per["dense_norm"] / per["pure_norm"]
        # β/α ≈ k/d in eq. (6.1); divide by the neuron's own α scale (its largest |α|).
        beta_over_kd = per["beta_mean"] / ((k / d) * np.abs(per["alpha_top"]))

    def medians(values: np.ndarray) -> np.ndarray:
        return np.array([_median(values[s], active[s]) for s in range(len(steps))])

    i_clean, i_final = step_list.index(data.clean_end), step_list.index(data.final)

    def at_ends(name: str, values: np.ndarray, what: str) -> dict:
        """``{name}_clean`` and ``{name}_robust``: the per-step ``values`` at the end of each phase."""
        return {f"{name}_{end}": ((), values[i], {"long_name": f"{what} at the end of {phase} training"})
                for end, i, phase in (("clean", i_clean, "clean"), ("robust", i_final, "adversarial"))}

    sn = ("step", "neuron")
    ds = xr.Dataset(
        {
            "n_pure": (sn, per["n_pure"].astype(np.int64), {"long_name": "|N_i|: number of pure coordinates"}),
            "alpha_top": (sn, per["alpha_top"],
                          {"long_name": "alpha of the largest coordinate: c_ij / w*_j at j = argmax |c_ij|"}),
            "pure_norm": (sn, per["pure_norm"], {"long_name": "||sum_{j in N_i} c_ij M_j||"}),
            "dense_norm": (sn, per["dense_norm"], {"long_name": "||sum_{j not in N_i} c_ij M_j|| (dense mixture)"}),
            "dense_to_pure": (sn, dense_to_pure, {"long_name": "dense_norm / pure_norm"}),
            "beta_mean": (sn, per["beta_mean"],
                          {"long_name": "mean of beta_ij = c_ij / w*_j over j not in N_i (signed)"}),
            "beta_mean_over_kd": (sn, beta_over_kd,
                                  {"long_name": "beta_mean / ((k/d) max_j |alpha_ij|): 1 = eq. (6.1)'s scale"}),
            "dense_cos_mwstar": (sn, per["dense_cos_mwstar"],
                                 {"long_name": "cosine (signed) of the dense part with sum_{j not in N_i} w*_j M_j"}),
            "dense_alignment": (sn, align, {
                "long_name": "a_i = s_i <P_{not N_i} M^T w_i, w*/||w*||> / ||w_i||, s_i orienting the top "
                             "coefficient along w* (Thm 5.2, eq. (5.1))"}),
            "active": (sn, active, {"long_name": "neuron enters the per-step medians "
                                                       "(norm >= min_norm_fraction x median norm)"}),
            "n_active": ("step", active.sum(axis=1).astype(np.int64), {"long_name": "active neurons"}),
            "median_n_pure": ("step", medians(per["n_pure"]), {"long_name": "median |N_i| over active neurons"}),
            "median_pure_norm": ("step", medians(per["pure_norm"]), {"long_name": "median pure_norm over active neurons"}),
            "median_dense_norm": ("step", medians(per["dense_norm"]),
                                  {"long_name": "median dense_norm over active neurons"}),
            "median_dense_to_pure": ("step", medians(dense_to_pure),
                                     {"long_name": "median dense_norm / pure_norm over active neurons"}),
            "median_beta_mean_over_kd": ("step", medians(beta_over_kd),
                                         {"long_name": "median beta_mean_over_kd over active neurons"}),
            "median_dense_cos_mwstar": ("step", medians(per["dense_cos_mwstar"]),
                                        {"long_name": "median dense_cos_mwstar over active neurons"}),
            "median_dense_alignment": ("step", medians(align),
                                       {"long_name": "median dense_alignment over active neurons"}),
            "beta_grand_mean": ("step", beta_grand,
                                {"long_name": "(1/(m D)) sum_i sum_{j not in N_i} beta_ij (Theorem 5.2, Lemma E.2)"}),
            **at_ends("dense_to_pure", medians(dense_to_pure), "median dense_norm / pure_norm"),
            **at_ends("dense_norm", medians(per["dense_norm"]), "median dense_norm"),
            **at_ends("dense_alignment", medians(align), "median dense_alignment"),
            **at_ends("pure_norm", medians(per["pure_norm"]), "median pure_norm"),
        },
        coords={"step": steps, "neuron": np.arange(m)},
    )
    ds.attrs.update(analysis=NAME, pure_fraction=f, max_pure=int(max_pure),
                    min_norm_fraction=float(min_norm_fraction), orthonormal_dictionary=int(gram is None),
                    clean_end=int(data.clean_end), final=int(data.final),
                    n_pure_rule="N_i = {j : |c_ij| >= pure_fraction * max_j |c_ij|}, at most max_pure largest",
                    paper="Allen-Zhu & Li 2020, Theorem 5.2, eq. (5.1), (6.1)")
    return ds

"""A certified lower bound on the margin over the whole ``τ``-ball: examples no attack can break.

Robust accuracy under attacks is an upper bound on the truth ``Pr[∀ ‖δ‖_p ≤ τ: sign f(x + δ) = y]``
(Allen-Zhu & Li, Def. 4.1); an example whose margin is *proven* positive everywhere in the ball
counts toward a lower bound.  For the smoothed symmetric network (§4),

    y f(x + δ) = Σ_i g_i(ũ_i + ṽ_i),   g_i(w) = P_i(w) + N_i(w),
    P_i(w) = s_i h((w − b_i)/s_i),   N_i(w) = −s_i h((−w − b_i)/s_i),   h(a) = aΦ(a) + φ(a),

with ``ũ_i = y<w_i, x>`` and ``ṽ_i = y<w_i, δ> ∈ [−t_i, t_i]``, ``t_i = τ‖w_i‖_q`` (Hölder,
``q`` dual to ``p``).  ``P_i`` is convex and ``N_i`` concave, both increasing, so on
``[l, h] = [ũ_i − t_i, ũ_i + t_i]`` the tangent of ``P_i`` at any ``p`` and the chord of
``N_i`` are lines below ``g_i``: ``g_i(ũ_i + ṽ) ≥ α_i + β_i ṽ``.  Summed,

    y f(x + δ) ≥ Σ α_i + y<Σ β_i w_i, δ> ≥ Σ α_i − τ ‖Σ β_i w_i‖_q,

a linear relaxation of each neuron (as in CROWN, Zhang et al. 2018) that keeps the shared
budget of ``δ`` through the last norm: a neuron that cannot wake up inside the ball has
``α_i ≈ β_i ≈ 0`` and costs nothing.  The bound is the best of three tangent points (the
ball's low end, its centre, and half-way); any of them is valid.

An example is **certified** when that bound exceeds a bound on the float error of the
attacks' own evaluation of ``f`` (:func:`float_error`), so that no attack, evaluating ``f``
in the network's dtype, can find a flipped sign there: skipping the attacks on certified
examples changes no robust verdict.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from purify.attacks.base import Norm
from purify.learners.base import Learner
from purify.learners.symmetric import SymmetricReLUNet, smooth_relu

#: Rows per chunk: the bound holds a few ``(rows, m)`` float64 buffers.
CHUNK = 512


def margin_lower_bound(net: SymmetricReLUNet, x: Tensor, y: Tensor, tau: float, norm: str) -> Tensor:
    """``(n,)`` float64: a lower bound on ``min_{‖δ‖_p ≤ τ} y f(x + δ)`` in exact arithmetic
    (the module docstring's relaxation, the best of three tangent points)."""
    nrm = Norm(norm)
    W = net.W.double()
    b = net.b.double()
    s = net.sigma_rho.double().clamp_min(1e-30)
    t = tau * nrm.dual_norm(W)  # (m,) the most a δ of the ball moves <w_i, x>
    out = []
    for i in range(0, x.shape[0], CHUNK):
        xi, yi = x[i : i + CHUNK].double(), y[i : i + CHUNK].double()
        u = yi[:, None] * (xi @ W.T)
        lo, hi = u - t, u + t
        n_lo, _ = smooth_relu(-lo - b, s)
        n_hi, _ = smooth_relu(-hi - b, s)
        # the chord of N over [lo, hi]: slope (N(hi) − N(lo))/(hi − lo), N = −s h(−w − b)
        chord = torch.where(t > 0, (n_lo - n_hi) / (2 * t).clamp_min(1e-300), torch.zeros_like(u))
        alpha_neg = chord * t - n_lo  # the chord's value at the centre u
        best = torch.full((xi.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for p in (lo, u, 0.5 * (lo + u)):
            value, slope = smooth_relu(p - b, s)
            alpha = (value + slope * (u - p) + alpha_neg).sum(dim=1)
            g = (slope + chord) @ W  # Σ β_i w_i
            best = torch.maximum(best, alpha - tau * nrm.dual_norm(g))
        out.append(best)
    return torch.cat(out)


def float_error(net: SymmetricReLUNet, x: Tensor, tau: float, norm: str, dtype: torch.dtype) -> Tensor:
    """``(n,)`` float64: how far the network's ``forward`` in ``dtype`` can be from the exact
    ``f(x + δ)`` anywhere in the ball (a worst-case bound, Higham's ``γ_n = nu/(1 − nu)``), plus
    the same for a float64 evaluation, which covers the rounding of :func:`margin_lower_bound`
    itself (``γ`` is superadditive in ``u``, so one pass with the two units added bounds both).

    Per neuron, ``<w_i, x + δ>`` carries the rounding of ``x + δ`` and of the product
    (``(u + γ_d) Σ_j |w_ij||x_j + δ_j|``, or bfloat16's unit where float32 products may take
    it), scaled by the largest slope the neuron can have in the ball; the elementwise terms a
    few units each of the neuron's largest value there; the sum over neurons ``γ_m`` of their
    absolute values; and the one-sided pass's dropped half and flushed ``exp`` (below
    ``1e-24 s_i`` each, :meth:`SymmetricReLUNet._smoothed_one_sided`).
    """
    unit = torch.finfo(dtype).eps / 2 + torch.finfo(torch.float64).eps / 2
    gemm_unit = unit
    if dtype == torch.float32 and (torch.get_float32_matmul_precision() != "highest"
                                   or (x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)):
        gemm_unit = 2.0**-8  # TF32 / bfloat16 products: a 10-bit (or 8-bit) mantissa
    W, b = net.W.double(), net.b.double()
    s = net.sigma_rho.double().clamp_min(1e-30)
    m, d = W.shape
    gamma = lambda k, e: k * e / (1 - k * e) if k * e < 1 else math.inf  # noqa: E731  (no bound past that)
    # ‖δ‖_p may exceed τ by the projection's own rounding
    tau = tau * (1 + 2 * gamma(d, unit))
    t = tau * Norm(norm).dual_norm(W)
    out = []
    for i in range(0, x.shape[0], CHUNK):
        xi = x[i : i + CHUNK].double()
        reach = xi.abs() @ W.abs().T + t  # ≥ Σ_j |w_ij||x_j + δ_j|
        top = (xi @ W.T).abs() + t  # ≥ |<w_i, x + δ>|
        value, slope = smooth_relu(top - b, s)  # the largest |term| and slope of each neuron in the ball
        per_neuron = 2 * slope * ((unit + gamma(d, gemm_unit)) * reach + 16 * unit * (top + b + s))
        per_neuron = per_neuron + 16 * unit * value + 1e-22 * s
        out.append(per_neuron.sum(dim=1) + gamma(m, unit) * 2 * value.sum(dim=1))
    return torch.cat(out)


def certified(model: Learner, x: Tensor, y: Tensor, tau: float, norm: str) -> Tensor | None:
    """Boolean ``(n,)``: ``sign f(x + δ) = y`` for every ``‖δ‖_p ≤ τ``, proven (module docstring),
    with the float error of the network's own evaluation of ``f`` taken off.

    ``None`` for a learner without a certificate (only :class:`SymmetricReLUNet` has one).
    """
    if not isinstance(model, SymmetricReLUNet):
        return None
    with torch.no_grad():
        bound = margin_lower_bound(model, x, y, tau, norm)
        return bound > float_error(model, x, tau, norm, model.W.dtype)

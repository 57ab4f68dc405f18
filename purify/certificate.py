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

The ideal model of §3 has its own bound (:func:`ideal_margin_lower_bound`): per feature a line
or, across a threshold's jump, the smallest value, and in ℓ₂ a Lagrangian bound that keeps the
budget the features share.

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
from purify.learners.ideal import IdealRobustModel
from purify.learners.symmetric import SymmetricReLUNet, smooth_relu

#: Rows per chunk: the bound holds a few ``(rows, m)`` float64 buffers.
CHUNK = 512


def _gamma(k: int, e: float) -> float:
    """Higham's ``γ_k = ku/(1 − ku)``, the relative error of a sum of ``k`` terms (no bound past ``ku = 1``)."""
    return k * e / (1 - k * e) if k * e < 1 else math.inf


def _units(dtype: torch.dtype, device: torch.device) -> tuple[float, float]:
    """``(u, u_products)``: the unit roundoff of ``dtype`` plus float64's (the bounds' own rounding;
    ``γ`` is superadditive in ``u``), and that of the products: bfloat16's where float32 products
    may run in TF32 or bfloat16 (a 10- or 8-bit mantissa)."""
    unit = torch.finfo(dtype).eps / 2 + torch.finfo(torch.float64).eps / 2
    if dtype == torch.float32 and (torch.get_float32_matmul_precision() != "highest"
                                   or (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)):
        return unit, 2.0**-8
    return unit, unit


def _rounded_radius(tau: float, d: int, unit: float) -> float:
    """``τ`` widened by the projection's own rounding: a projected ``δ`` may have ``‖δ‖_p`` above ``τ``."""
    return tau * (1 + 2 * _gamma(d, unit))


def preactivations(net: SymmetricReLUNet, x: Tensor) -> list[Tensor]:
    """``<w_i, x>`` in float64, one ``(rows, m)`` block per :data:`CHUNK` rows of ``x``: what
    :func:`margin_lower_bound` and :func:`float_error` both start from (pass it to skip the
    product; it is the same product, block by block, either way)."""
    W = net.W.double()
    return [x[i : i + CHUNK].double() @ W.T for i in range(0, x.shape[0], CHUNK)]


def margin_lower_bound(net: SymmetricReLUNet, x: Tensor, y: Tensor, tau: float, norm: str,
                       xw: list[Tensor] | None = None) -> Tensor:
    """``(n,)`` float64: a lower bound on ``min_{‖δ‖_p ≤ τ} y f(x + δ)`` in exact arithmetic
    (the module docstring's relaxation, the best of three tangent points); ``xw`` is
    :func:`preactivations` if already computed."""
    nrm = Norm(norm)
    W = net.W.double()
    b = net.b.double()
    s = net.sigma_rho.double().clamp_min(1e-30)
    t = tau * nrm.dual_norm(W)  # (m,) the most a δ of the ball moves <w_i, x>
    xw = preactivations(net, x) if xw is None else xw
    out = []
    for j, i in enumerate(range(0, x.shape[0], CHUNK)):
        yi = y[i : i + CHUNK].double()
        u = yi[:, None] * xw[j]
        lo, hi = u - t, u + t
        n_lo, _ = smooth_relu(-lo - b, s)
        n_hi, _ = smooth_relu(-hi - b, s)
        # the chord of N over [lo, hi]: slope (N(hi) − N(lo))/(hi − lo), N = −s h(−w − b)
        chord = torch.where(t > 0, (n_lo - n_hi) / (2 * t).clamp_min(1e-300), torch.zeros_like(u))
        alpha_neg = chord * t - n_lo  # the chord's value at the centre u
        best = torch.full((yi.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for p in (lo, u, 0.5 * (lo + u)):
            value, slope = smooth_relu(p - b, s)
            alpha = (value + slope * (u - p) + alpha_neg).sum(dim=1)
            g = (slope + chord) @ W  # Σ β_i w_i
            best = torch.maximum(best, alpha - tau * nrm.dual_norm(g))
        out.append(best)
    return torch.cat(out)


def float_error(net: SymmetricReLUNet, x: Tensor, tau: float, norm: str, dtype: torch.dtype,
                xw: list[Tensor] | None = None) -> Tensor:
    """``(n,)`` float64: how far the network's ``forward`` in ``dtype`` can be from the exact
    ``f(x + δ)`` anywhere in the ball (a worst-case bound, Higham's ``γ_n = nu/(1 − nu)``), plus
    the same for a float64 evaluation, which covers the rounding of :func:`margin_lower_bound`
    itself (``γ`` is superadditive in ``u``, so one pass with the two units added bounds both).

    Per neuron, ``<w_i, x + δ>`` carries the rounding of ``x + δ`` and of the product
    (``(u + γ_d) Σ_j |w_ij||x_j + δ_j|``, or bfloat16's unit where float32 products may take
    it), scaled by the largest slope the neuron can have in the ball; the elementwise terms a
    few units each of the neuron's largest value there; the sum over neurons ``γ_m`` of their
    absolute values; and the one-sided pass's dropped half and flushed ``exp`` (below
    ``1e-24 s_i`` each, :meth:`SymmetricReLUNet._smoothed_one_sided`).  ``xw`` is
    :func:`preactivations` if already computed.
    """
    unit, gemm_unit = _units(dtype, x.device)
    W, b = net.W.double(), net.b.double()
    s = net.sigma_rho.double().clamp_min(1e-30)
    m, d = W.shape
    tau = _rounded_radius(tau, d, unit)
    t = tau * Norm(norm).dual_norm(W)
    xw = preactivations(net, x) if xw is None else xw
    out = []
    for j, i in enumerate(range(0, x.shape[0], CHUNK)):
        xi = x[i : i + CHUNK].double()
        reach = xi.abs() @ W.abs().T + t  # ≥ Σ_j |w_ij||x_j + δ_j|
        top = xw[j].abs() + t  # ≥ |<w_i, x + δ>|
        value, slope = smooth_relu(top - b, s)  # the largest |term| and slope of each neuron in the ball
        per_neuron = 2 * slope * ((unit + _gamma(d, gemm_unit)) * reach + 16 * unit * (top + b + s))
        per_neuron = per_neuron + 16 * unit * value + 1e-22 * s
        out.append(per_neuron.sum(dim=1) + _gamma(m, unit) * 2 * value.sum(dim=1))
    return torch.cat(out)


def ideal_margin_lower_bound(model: IdealRobustModel, x: Tensor, y: Tensor, tau: float, norm: str) -> Tensor:
    """``(n,)`` float64: a lower bound on ``min_{‖δ‖_p ≤ τ} y f*(x + δ)`` for the ideal model's
    ``f*(x) = Σ_j w*_j c_j 1[|c_j| ≥ θ]``, ``c = Mᵀx`` (§3), float error of its evaluation included.

    Each term ``y w*_j c 1[|c| ≥ θ]`` over ``c ∈ [c_j − t_j, c_j + t_j]`` (``t_j = τ‖M_j‖_q``,
    widened by the worst-case rounding ``e_j`` of the computed ``c_j``) is linear where the
    interval stays on one side of both thresholds (``y w*_j c``, or 0 between them) and is
    bounded by its minimum over the interval where it crosses one (a jump: no line helps).
    Summed as in :func:`margin_lower_bound`: ``Σ α_j − τ ‖Σ_j β_j M_j‖_q``.
    """
    nrm = Norm(norm)
    M, w = model.M.double(), model.w_star.double()
    d, D = M.shape
    unit, gemm_unit = _units(model.M.dtype, x.device)
    tau = _rounded_radius(tau, d, unit)
    t = tau * nrm.dual_norm(M.T)  # (D,)
    theta = model.threshold
    radius = float(torch.linalg.matrix_norm(M, ord=2)) * (1 + 1e-12)  # σ_max(M): ‖Mᵀδ‖₂ ≤ σ_max τ
    out = []
    for i in range(0, x.shape[0], CHUNK):
        xi, yi = x[i : i + CHUNK].double(), y[i : i + CHUNK].double()
        c = xi @ M
        # how far the computed c_j can be from <M_j, x + δ>, and the threshold's own rounding
        e = (unit + _gamma(d, gemm_unit)) * (xi.abs() @ M.abs() + t) + unit * theta
        lo, hi = c - t - e, c + t + e
        a = yi[:, None] * w  # the term is a · c where the feature is on
        above, below = lo >= theta, hi <= -theta
        off = (lo > -theta) & (hi < theta)
        linear = above | below
        # crossing intervals: the smallest a·c over the parts where the feature is on, and 0
        ends = torch.stack([a * lo, a * hi, a * theta, -a * theta])
        on = torch.stack([lo.abs() >= theta, hi.abs() >= theta, (lo <= theta) & (theta <= hi),
                          (lo <= -theta) & (-theta <= hi)])
        crossing = torch.where(on, ends, torch.full_like(ends, math.inf)).amin(dim=0).clamp(max=0.0)
        alpha = torch.where(linear, a * c - a.abs() * e, torch.where(off, torch.zeros_like(c), crossing))
        beta = torch.where(linear, a, torch.zeros_like(c))
        bound = alpha.sum(dim=1) - tau * nrm.dual_norm(beta @ M.T)
        if norm == "l2":
            bound = torch.maximum(bound, _ideal_l2_dual(c, a, t, e, theta, tau * radius))
        # the sum over features in the dtype: γ_D of the largest |term| each can reach
        reach = torch.where(off, torch.zeros_like(c), w.abs() * torch.maximum(lo.abs(), hi.abs()))
        out.append(bound - _gamma(D, unit) * reach.sum(dim=1))
    return torch.cat(out)


#: Multipliers λ of :func:`_ideal_l2_dual`, in units of 1/radius: each gives a valid bound and
#: the best is kept (on the default run every certified example took 4).
LAMBDAS = tuple(2.0**k for k in range(-1, 6))


def _ideal_l2_dual(c: Tensor, a: Tensor, t: Tensor, e: Tensor, theta: float, radius: float) -> Tensor:
    """The ideal model's ℓ₂ bound with the budget shared: ``v = Mᵀδ`` has ``‖v‖₂ ≤ σ_max(M) τ =
    radius``, so for every ``λ ≥ 0`` (weak Lagrangian duality)

        min_v Σ_j φ_j(v_j)  ≥  Σ_j min_{|v_j| ≤ t_j} [φ_j(v_j) + λ v_j²] − λ radius²,

    with ``φ_j(v) = a_j (c_j + v) 1[|c_j + v| ≥ θ]`` taken at its worst within the rounding ``e_j``
    of the computed coefficient: ``min_s φ_j(s) + λ (|s| − e_j)₊²`` over ``|s| ≤ t_j + e_j``.  Each
    inner minimum is over a few pieces (feature on below, off, on above; inside or outside the
    rounding's dead zone), each convex, so it is at a piece's end or stationary point.  Without
    the shared budget each feature could jump by the full ``t_j``, and nothing is provable
    once ``τ`` reaches ``θ`` (the default preset's radius).
    """
    reach = t + e
    best = torch.full((c.shape[0],), -math.inf, dtype=c.dtype, device=c.device)
    for scale in LAMBDAS:
        lam = scale / radius
        candidates = [-reach, reach, -e, e, theta - c,
                      -theta - c, e - a / (2 * lam), -e - a / (2 * lam), torch.zeros_like(c)]
        s = torch.stack(candidates).clamp(-reach, reach)  # (K, n, D)
        z = c + s
        value = torch.minimum(torch.where(z.abs() >= theta, a * z, math.inf), torch.where(z.abs() <= theta, 0.0, math.inf))
        value = value + lam * (s.abs() - e).clamp_min(0.0).square()
        best = torch.maximum(best, value.amin(dim=0).sum(dim=1) - lam * radius**2)
    return best


def certified(model: Learner, x: Tensor, y: Tensor, tau: float, norm: str) -> Tensor | None:
    """Boolean ``(n,)``: ``sign f(x + δ) = y`` for every ``‖δ‖_p ≤ τ``, proven (module docstring),
    with the float error of the network's own evaluation of ``f`` taken off.

    :class:`SymmetricReLUNet` and :class:`IdealRobustModel` have a certificate; ``None`` for
    any other learner.
    """
    if isinstance(model, IdealRobustModel):
        with torch.no_grad():
            return ideal_margin_lower_bound(model, x, y, tau, norm) > 0
    if not isinstance(model, SymmetricReLUNet):
        return None
    with torch.no_grad():
        xw = preactivations(model, x)  # one product for both bounds
        bound = margin_lower_bound(model, x, y, tau, norm, xw)
        return bound > float_error(model, x, tau, norm, model.W.dtype, xw)

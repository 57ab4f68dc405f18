"""The symmetric bias-ReLU network of Allen-Zhu & Li (2020), §4.

    f(x; ρ) = Σ_i [ReLU(<w_i,x> − b_i + ρ_i) − ReLU(−<w_i,x> − b_i + ρ_i)],   ρ_i ~ N(0, σ_ρ,i²)

Gradients are written by hand (Fact A.1): with ``u = X Wᵀ`` the whole step costs the three
matrix products ``X Wᵀ``, ``Cᵀ X`` (weights) or ``C W`` (inputs), which autograd would match
but with more memory traffic.  ``tests/test_learners.py`` checks them against autograd.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from purify.matmul import Reused, matmul
from purify.norms import sign

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
#: b/σ_ρ from which the half of a neuron facing away from u is negligible (see _smoothed_one_sided).
_ONE_SIDED = 10.0


def smooth_relu(v: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """``E_ρ ReLU(v + ρ)`` for ``ρ ~ N(0, s²)`` and its derivative ``Φ(v/s)`` (docs/theory.md §2).

    ``E ReLU(v + ρ) = v Φ(v/s) + s φ(v/s)``.  ``s = 0`` gives the plain ReLU (and its
    right-continuous derivative ``1[v ≥ 0]``) because ``v/s`` saturates.
    """
    s = s.clamp_min(1e-30)
    a = v / s
    cdf = torch.special.ndtr(a)
    # a = ±inf when s underflows: then φ(a) = 0 exactly, and v * cdf is the ReLU.
    pdf = torch.exp(-0.5 * a * a) * _INV_SQRT_2PI
    return v * cdf + s * pdf, cdf


@functools.cache
def _ndtr_in_place_exact(dtype: torch.dtype) -> bool:
    """Whether :func:`_ndtr`'s in-place steps give ``torch.special.ndtr``'s values bit for bit
    on this torch build (checked once per dtype, from −40 to 40 and at ±0, ±inf, NaN)."""
    noise = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=dtype)
    a = torch.cat([torch.linspace(-40.0, 40.0, 40001, dtype=dtype), 8 * noise,
                   torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan], dtype=dtype)])
    return torch.equal(torch.special.ndtr(a).nan_to_num(7.0), _ndtr_steps(a).nan_to_num(7.0))


def _ndtr_steps(a: Tensor) -> Tensor:
    return a.mul(_SQRT_HALF).erf_().add_(1.0).mul_(0.5)


def _ndtr(a: Tensor) -> Tensor:
    """``Φ(a)``, the values of ``torch.special.ndtr`` in one new buffer instead of four.

    torch computes ``ndtr`` as ``(1 + erf(a/√2)) / 2``, four passes each writing a new tensor;
    the same four operations in place give the same numbers (checked on this build by
    :func:`_ndtr_in_place_exact`, else ``torch.special.ndtr`` is used) in about 80 % of the time
    (1.9–2.4 against 2.4–3.0 ms per ``512 × 2000`` block of the default run's networks, 2 threads
    on an AVX2 machine; 0–3 % of a training step or an attack).
    """
    if a.device.type != "cpu" or not _ndtr_in_place_exact(a.dtype):
        return torch.special.ndtr(a)
    return _ndtr_steps(a)


def _gauss_(a: Tensor) -> Tensor:
    """``exp(−a²/2)`` in place, with results below the dtype's smallest normal number set to 0.

    float32 ``exp`` leaves its vector path for arguments below ``log(tiny) ≈ −87.3`` (results
    that are denormal or 0, and ``−inf``) and runs 10–50× slower there.  Most entries of a
    training step land there — a neuron is off for most inputs, at ``a ≈ −b/σ_ρ = −20`` — so
    this one ``exp`` cost about as much as a matrix product.  Clamping the argument at that
    floor keeps every entry on the vector path; the clamped entries (and the few just above,
    up to twice the floor's value) are then set to exactly 0, which they already were or
    within ``7e-38`` of (float32), so exact zeros stay exact (an example every neuron ignores keeps
    ``f = 0``, hence ``sign(f) = +1``).  ``NaN`` becomes 0 here, but the ``aΦ(a)`` term beside
    it keeps it.
    """
    floor = math.log(torch.finfo(a.dtype).tiny) + 1.0  # a margin inside the vector path
    e = a.square_().mul_(-0.5).clamp_min_(floor).exp_()
    return F.threshold(e, 2.0 * math.exp(floor), 0.0, inplace=True)


def regularizer(W: Tensor) -> Tensor:
    """``Σ_i Reg(w_i)`` with ``Reg(w) = ‖w‖₂²/2 + ‖w‖₃³/3`` (§4)."""
    return 0.5 * (W * W).sum() + (W.abs() ** 3).sum() / 3.0


def regularizer_grad(W: Tensor) -> Tensor:
    """``∇ Σ_i Reg(w_i) = W + W ⊙ |W|`` coordinate-wise (Fact A.1; docs/theory.md §2)."""
    return W + W * W.abs()


@dataclass
class StepResult:
    """Loss, accuracy on the batch and the weight gradient of one training step."""

    loss: float
    accuracy: float
    grad: Tensor  # (m, d)


class SymmetricReLUNet:
    """Symmetric two-layer bias-ReLU network with per-neuron bias and smoothing.

    Parameters
    ----------
    W : (m, d) hidden weights ``w_i`` as rows.
    b : (m,) biases ``b_i > 0`` (the network subtracts them).
    sigma_rho : (m,) standard deviation of the pre-activation noise ``ρ_i``.
    """

    def __init__(self, W: Tensor, b: Tensor, sigma_rho: Tensor) -> None:
        self.W = W
        self.b = b
        self.sigma_rho = sigma_rho
        self._one_sided: bool | None = None  # decided on the first smoothed forward, see _smoothed
        # (W they were made for, products x Wᵀ, products c W): an attack multiplies by the same W
        # hundreds of times, and W is a public attribute a caller may replace
        self._reused: tuple[Tensor, Reused, Reused] | None = None

    @property
    def width(self) -> int:
        return self.W.shape[0]

    def _products(self) -> tuple[Reused, Reused]:
        """``x ↦ x Wᵀ`` and ``c ↦ c W`` for the current ``W`` (:class:`purify.matmul.Reused`)."""
        if self._reused is None or self._reused[0] is not self.W:
            self._reused = (self.W, Reused(self.W), Reused(self.W.T))
        return self._reused[1], self._reused[2]

    def preactivation(self, x: Tensor) -> Tensor:
        """``u = <w_i, x>`` of shape ``(n, m)``."""
        return self._products()[0](x)

    def _smoothed(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Output ``(n,)`` and ``∂f/∂u (n, m)`` of the smoothed network from ``u``.

        :func:`smooth_relu` on both halves, fused: with ``a± = (±u − b)/s`` the output is
        ``Σ_i s_i [a+Φ(a+) + φ(a+) − a−Φ(a−) − φ(a−)]``, computed in place on four
        ``(n, m)`` buffers and reduced by one matrix-vector product.  The elementwise work
        is most of what a training step costs above its matrix products (see
        ``benchmarks/step_time.py``), so this matters; :func:`_gauss_` says why its ``exp``
        is clamped.
        """
        if u.requires_grad or self.W.requires_grad:
            # In-place buffers would break autograd, which the tests use as the reference.
            pos, dpos = smooth_relu(u - self.b, self.sigma_rho)
            neg, dneg = smooth_relu(-u - self.b, self.sigma_rho)
            return (pos - neg).sum(dim=1), dpos + dneg
        s, inv = self._scales()
        if self._one_sided:
            return self._smoothed_one_sided(u, s, inv)
        a_pos = (u - self.b).mul_(inv)
        a_neg = (u + self.b).mul_(inv).neg_()
        cdf_pos = _ndtr(a_pos)
        cdf_neg = _ndtr(a_neg)
        val = a_pos * cdf_pos
        val.sub_(cdf_neg.mul(a_neg))
        # φ(a)√(2π) in place; a = ±inf (s underflowed) gives 0, the plain ReLU.
        pdf_diff = _gauss_(a_pos).sub_(_gauss_(a_neg))
        val.add_(pdf_diff, alpha=_INV_SQRT_2PI)
        return val @ s, cdf_pos.add_(cdf_neg)

    def _scales(self) -> tuple[Tensor, Tensor]:
        """``(σ_ρ, 1/σ_ρ)`` with ``σ_ρ`` clamped away from 0; decides ``_one_sided`` on first use."""
        s = self.sigma_rho.clamp_min(1e-30)
        if self._one_sided is None:
            # b and σ_ρ are fixed for the network's life (a step or an attack builds its own), so
            # test once: on CUDA, bool() of a device tensor is a sync per forward otherwise.
            self._one_sided = bool((self.b >= _ONE_SIDED * s).all())
        return s, 1.0 / s

    def _smoothed_grad(self, u: Tensor) -> Tensor:
        """``∂f/∂u (n, m)`` of :meth:`_smoothed` alone, the same bits, without the output's passes.

        The same operations on the same values as there, minus ``aΦ(a)``, ``φ(a)`` (a clamped
        ``exp``) and their sum: about a third of the elementwise work, and ``u`` is overwritten.
        """
        if u.requires_grad or self.W.requires_grad:
            return self._smoothed(u)[1]
        _, inv = self._scales()
        if self._one_sided:
            return _ndtr(u.abs_().sub_(self.b).mul_(inv))
        a_neg = (u + self.b).mul_(inv).neg_()
        return _ndtr(u.sub_(self.b).mul_(inv)).add_(_ndtr(a_neg))

    def _smoothed_one_sided(self, u: Tensor, s: Tensor, inv: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`_smoothed` when every ``b_i ≥ 10 σ_ρ,i`` (the ``norm`` schedule's 20).

        Then at most one half of a neuron is awake: for ``u ≥ 0`` the other half sits at
        ``a− ≤ −b/s ≤ −10``, where ``s φ(a) + s a Φ(a) < 1e-24 s``, far below float32 (and the
        float64 tests') resolution.  So ``f_i = sign(u) s h((|u| − b)/s)`` with
        ``h(a) = aΦ(a) + φ(a)`` and ``∂f_i/∂u = Φ((|u| − b)/s)``: one ``Φ`` and one ``exp`` per
        entry instead of two each, which roughly halves the elementwise share of a step.
        """
        a = u.abs().sub_(self.b).mul_(inv)
        cdf = _ndtr(a)
        val = a * cdf
        val.add_(_gauss_(a), alpha=_INV_SQRT_2PI)
        # copysign keeps u = 0 at +h, but both halves are equal there: h(−b/s) < 1e-24, as above.
        return val.copysign_(u) @ s, cdf

    def _noisy(self, u: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Output and ``∂f/∂u`` with one draw of ``ρ`` per example and neuron (Algorithm 1)."""
        rho = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        rho = rho * self.sigma_rho
        pos = u - self.b + rho
        neg = -u - self.b + rho
        out = (F.relu(pos) - F.relu(neg)).sum(dim=1)
        return out, (pos >= 0).to(u.dtype) + (neg >= 0).to(u.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Smoothed ``E_ρ f(x)``, shape ``(n,)``."""
        return self._smoothed(self.preactivation(x))[0]

    __call__ = forward

    def forward_noisy(self, x: Tensor, *, generator: torch.Generator) -> Tensor:
        """``f(x; ρ)`` with fresh pre-activation noise, shape ``(n,)``."""
        return self._noisy(self.preactivation(x), generator)[0]

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Smoothed ``f(x) (n,)`` and ``∇_x f(x) = Σ_i f_i'(u) w_i`` ``(n, d)`` (footnote 9)."""
        out, c = self._smoothed(self.preactivation(x))
        return out, self._products()[1](c)

    def input_grad(self, x: Tensor) -> Tensor:
        """``∇_x f(x)`` of :meth:`forward_and_input_grad` without computing ``f(x)``: what FGM needs.

        The same bits as there; an FGM training step at the default size costs 2–3 ms (3 %) less
        (interleaved A/B on 2 cores; README, "FGM without the output").
        """
        return self._products()[1](self._smoothed_grad(self.preactivation(x)))

    def loss_and_grad(
        self,
        x: Tensor,
        y: Tensor,
        *,
        lam: float = 0.0,
        noisy: bool = False,
        generator: torch.Generator | None = None,
    ) -> StepResult:
        """Mean logistic loss ``log(1 + e^{−y f})`` on the batch and ``∇_W`` of the objective.

        ``∇_{w_i} = −(1/n) Σ_j y_j ℓ'_j ∂f/∂u_ij x_j + λ ∇Reg(w_i)`` (Fact A.1), with
        ``ℓ' = σ(−y f)``.  The biases are treated as a schedule, not trained.  With
        ``noisy=True`` one draw of ``ρ`` per example and neuron is used (Algorithm 1, line 3).
        """
        u = self.preactivation(x)
        if noisy:
            if generator is None:
                raise ValueError("noisy=True needs a generator for the pre-activation noise")
            out, c = self._noisy(u, generator)
        else:
            out, c = self._smoothed(u)
        margin = y * out
        loss = F.softplus(-margin).mean()
        dloss = -y * torch.sigmoid(-margin) / x.shape[0]  # ∂loss/∂f, (n,)
        # Σ_j c_ji dloss_j x_j: scaling x (n × d) instead of c (n × m, m = 2d) halves that pass.
        grad = matmul(c.T, x * dloss[:, None])
        if lam:
            grad = grad + lam * regularizer_grad(self.W)
            loss = loss + lam * regularizer(self.W)
        accuracy = (sign(out) == y).to(x.dtype).mean()
        return StepResult(float(loss), float(accuracy), grad)

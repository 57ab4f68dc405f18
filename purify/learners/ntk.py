"""The neural-tangent-kernel model of Allen-Zhu & Li (2020), Definition 5.5 and Theorem 5.6.

The NTK feature map of the symmetric bias-ReLU network at random initialization is

    Φ(x) = ( x · E_ρ[1(<w_i,x> + ρ_i ≥ b_i) + 1(−<w_i,x> + ρ_i ≥ b_i)] )_{i ∈ [m]}

and the NTK function with trainable weights ``v_i ∈ R^d`` is ``p(x) = Σ_i <x, v_i> c_i(x)``
with ``c_i(x) = Φ((u_i − b_i)/σ_i) + Φ((−u_i − b_i)/σ_i)``, ``u_i = <w_i, x>`` (normal CDF).

**Sign.**  Definition 5.5 as printed has a minus between the two indicators.  That makes
``c_i`` odd in ``u_i`` and ``p(−x) = p(x)`` even, so ``p`` could not beat chance on the
sign-symmetric data of §2 even without attack, and it is not the tangent of ``f``: the
derivative of ``ReLU(u − b + ρ) − ReLU(−u − b + ρ)`` in ``w_i`` is ``x`` times the *sum* of the
indicators.  We implement the tangent (the sum), whose features are exactly
``∂f/∂w_i`` of :class:`~purify.learners.symmetric.SymmetricReLUNet` at ``W₀``
(``tests/test_learners_compare.py`` checks this against autograd) and whose ``p`` is odd.

**Parameters.**  Def. 5.5 takes ``w_i ~ N(0, I)`` w.l.o.g. (the indicators are invariant to
scaling ``w_i, b_i, σ_i`` together), ``|b_i| ≤ d^{o(1)}`` and ``σ_i ∈ [0, d^{o(1)}]``; the
lower bound (Thm 5.6 / G.1) uses ``M = I``, ``σ_x = 0``.  ``p`` is multiplied by ``scale``
(default ``1/√m``), which changes no sign — so no robust or clean error — but makes one
learning rate work at every width.  ``V`` starts at zero, so ``p ≡ 0`` before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from purify.learners.base import Trainable
from purify.learners.lazy import _draw, project_rows_
from purify.learners.logistic import chunked_logistic_pass, example_chunks, map_chunks
from purify.learners.symmetric import SymmetricReLUNet

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class NTKModel(Trainable):
    """``p(x) = scale · Σ_i c_i(x) <x, v_i>``: linear in the NTK features of Def. 5.5.

    Parameters
    ----------
    W : (m, d) fixed random features ``w_i`` (the symmetric network's init).
    b : (m,) biases ``b_i`` (subtracted, as in the network).
    sigma_rho : (m,) smoothing ``σ_i ≥ 0``; ``0`` gives the plain indicators.
    V : (m, d) trainable weights ``v_i``; zeros when omitted.
    scale : output scale, ``1/√m`` when omitted.
    """

    def __init__(
        self,
        W: Tensor,
        b: Tensor,
        sigma_rho: Tensor,
        V: Tensor | None = None,
        scale: float | None = None,
    ) -> None:
        self.W = W
        self.b = b
        self.sigma_rho = sigma_rho
        self.V = torch.zeros_like(W) if V is None else V
        self.V0 = self.V.clone()
        self.scale = 1.0 / math.sqrt(W.shape[0]) if scale is None else float(scale)

    @classmethod
    def init(
        cls,
        d: int,
        m: int,
        *,
        generator: torch.Generator,
        bias: float = 0.0,
        sigma_rho: float = 0.0,
        scale: float | None = None,
        device=None,
        dtype=torch.float32,
    ) -> NTKModel:
        """``m`` features at ``w_i ~ N(0, I_d)`` with shared ``b_i = bias``, ``σ_i = sigma_rho``."""
        if d < 1 or m < 1:
            raise ValueError(f"NTKModel needs d >= 1 and m >= 1, got d={d}, m={m}")
        if sigma_rho < 0:
            raise ValueError(f"sigma_rho must be >= 0, got {sigma_rho}")
        W = _draw((m, d), generator, device, dtype)
        full = torch.full((m,), 1.0, dtype=dtype, device=W.device)
        return cls(W, full * bias, full * sigma_rho, scale=scale)

    @classmethod
    def from_network(cls, net: SymmetricReLUNet, *, scale: float | None = None) -> NTKModel:
        """The NTK of a given symmetric network (e.g. a run's initialization ``W⁰, b⁰, σ_ρ⁰``)."""
        return cls(net.W.clone(), net.b.expand(net.width).clone(),
                   net.sigma_rho.expand(net.width).clone(), scale=scale)

    @property
    def width(self) -> int:
        return self.W.shape[0]

    def _coefficients(self, x: Tensor, *, derivative: bool = False) -> tuple[Tensor, Tensor | None]:
        """``c_i(x)`` ``(n, m)`` and, if asked, ``dc_i/du_i`` (zero where ``σ_i = 0``)."""
        u = x @ self.W.T
        s = self.sigma_rho
        smooth = s > 0
        if bool(smooth.all()):
            a_pos, a_neg = (u - self.b) / s, (-u - self.b) / s
            c = torch.special.ndtr(a_pos) + torch.special.ndtr(a_neg)
        else:
            # σ = 0: the indicators 1[u ≥ b] + 1[−u ≥ b] themselves (ndtr would give 1/2 at ties).
            s_safe = torch.where(smooth, s, torch.ones_like(s))
            a_pos, a_neg = (u - self.b) / s_safe, (-u - self.b) / s_safe
            hard = (u >= self.b).to(u.dtype) + (-u >= self.b).to(u.dtype)
            c = torch.where(smooth, torch.special.ndtr(a_pos) + torch.special.ndtr(a_neg), hard)
        if not derivative:
            return c, None
        pdf_diff = (torch.exp(-0.5 * a_pos * a_pos) - torch.exp(-0.5 * a_neg * a_neg)) * _INV_SQRT_2PI
        dc = torch.where(smooth, pdf_diff / s.clamp_min(1e-30), torch.zeros_like(pdf_diff))
        return c, dc

    def coefficients(self, x: Tensor) -> Tensor:
        """``c_i(x) = E_ρ[1(u_i + ρ_i ≥ b_i) + 1(−u_i + ρ_i ≥ b_i)]``, shape ``(n, m)``."""
        return torch.cat([self._coefficients(x[sl])[0] for sl in example_chunks(x.shape[0], self.width)])

    def features(self, x: Tensor) -> Tensor:
        """``Φ(x)`` of Def. 5.5 (tangent sign, no ``scale``), ``(n, m·d)`` in ``V.reshape(-1)`` order.

        ``p(x) = scale · <Φ(x), vec V>``.  Materializes ``n·m·d`` numbers: for small problems
        and tests; the model itself never forms it.
        """
        c = self.coefficients(x)
        return (c[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        """``p(x)`` for ``x (n, d)``; shape ``(n,)``."""
        parts = []
        for sl in example_chunks(x.shape[0], self.width):
            c, _ = self._coefficients(x[sl])
            parts.append((c * (x[sl] @ self.V.T)).sum(dim=1))
        return torch.cat(parts) * self.scale

    __call__ = forward

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``p(x) (n,)`` and ``∇_x p = scale Σ_i [c_i v_i + <x, v_i> c_i'(u_i) w_i]`` ``(n, d)``.

        With ``σ_i = 0`` the indicator's derivative is zero almost everywhere, so attacks see
        only ``Σ_i c_i v_i`` — the jump at ``|u_i| = b_i`` is invisible to gradients.
        """
        def chunk(xs: Tensor) -> tuple[Tensor, Tensor]:
            c, dc = self._coefficients(xs, derivative=True)
            z = xs @ self.V.T
            return (c * z).sum(dim=1), c @ self.V + (z * dc) @ self.W

        p, grad = map_chunks(x, self.width, chunk)
        return p * self.scale, grad * self.scale

    def loss_grad_and_output(
        self, x: Tensor, y: Tensor, *, out: tuple[Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor], Tensor]:
        """Mean logistic loss, ``(∇_V L,)`` ``((m, d),)`` and the outputs ``p(x) (n,)``.

        ``out``, when given, receives the gradient (see
        :func:`~purify.learners.logistic.chunked_logistic_pass`).
        """

        def chunk_pass(xs: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
            c, _ = self._coefficients(xs)
            p = (c * (xs @ self.V.T)).sum(dim=1) * self.scale
            # ∂p/∂v_i = scale c_i(x) x
            return p, lambda dloss: c * (dloss[:, None] * self.scale)

        return chunked_logistic_pass(x, y, self.V, chunk_pass, out)

    def params(self) -> tuple[Tensor]:
        """The trainable tensors: ``(V,)``."""
        return (self.V,)

    def deviation(self) -> Tensor:
        """``‖v_i − v_i⁰‖₂`` per feature block, shape ``(m,)``."""
        return (self.V - self.V0).norm(dim=1)

    def project_(self, radius: float, *, ball: str = "rows") -> None:
        """Project ``V`` onto ``B_{2,∞}(V⁰, radius)`` or the Frobenius ball, in place."""
        project_rows_(self.V, self.V0, radius, ball=ball)

"""The lazy-regime two-layer ReLU network of Wang, Ullah, Mianjy & Arora (2022), §2–3.

    f(x; a, W) = (1/√m) Σ_s a_s ReLU(<w_s, x>),   a_s ~ unif{±1} fixed,   w_{s,0} ~ N(0, I_d)

The lazy regime (their Definition 2.1) is ``W ∈ B_{2,∞}(W₀, C₀/√m)``: every hidden weight
vector stays within ``C₀/√m`` of its initialization.  The paper stores ``W`` as a ``d × m``
matrix of columns ``w_s``; here ``W`` is ``(m, d)`` with the ``w_s`` as rows, as in
:class:`~purify.learners.symmetric.SymmetricReLUNet`, so "column" there is "row" here.

Gradients are written by hand and batched: with gates ``G = 1[X Wᵀ > 0]`` ``(n, m)``,
``∇_x f = (1/√m) (G ⊙ a) W`` and ``∇_W L = (1/√m) (G ⊙ a ⊙ ∂L/∂f)ᵀ X``; examples are
processed in chunks (:func:`~purify.learners.logistic.example_chunks`) so ``m = 1e5`` at
``d = 784`` fits in memory.  ``tests/test_learners_compare.py`` checks them against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from purify.learners.base import Trainable
from purify.learners.logistic import (
    ROW_BLOCK_ELEMENTS,
    chunked_logistic_pass,
    example_chunks,
    map_chunks,
)

BALLS = ("rows", "frobenius")


def _draw(shape: tuple[int, ...], generator: torch.Generator, device, dtype) -> Tensor:
    """Standard normal draws from ``generator`` (on its own device), moved to ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _signs(m: int, generator: torch.Generator, device, dtype) -> Tensor:
    """``m`` i.i.d. uniform ``±1`` signs."""
    bits = torch.randint(0, 2, (m,), generator=generator, device=generator.device)
    return (bits.to(dtype) * 2 - 1).to(device)


class LazyReLUNet(Trainable):
    """``f(x) = (1/√m) Σ_s a_s ReLU(<w_s, x>)`` with fixed ``a`` and trainable ``W`` near ``W₀``.

    Parameters
    ----------
    W0 : (m, d) initialization ``w_{s,0}`` as rows; never modified.
    a : (m,) fixed output signs.
    W : (m, d) current weights; a copy of ``W0`` when omitted.  Training updates it in place.

    ReLU'(0) is taken as 0 (as torch's autograd does); ties have probability zero.
    """

    def __init__(self, W0: Tensor, a: Tensor, W: Tensor | None = None) -> None:
        self.W0 = W0
        self.a = a
        self.W = W0.clone() if W is None else W

    @classmethod
    def init(
        cls,
        d: int,
        m: int,
        *,
        generator: torch.Generator,
        paired: bool = False,
        device=None,
        dtype=torch.float32,
    ) -> LazyReLUNet:
        """Random initialization of Wang et al. Definition 2.1: ``w_{s,0} ~ N(0, I_d)``, ``a_s = ±1``.

        ``paired=True`` is Gao et al. (2019) eq. (4) instead: ``m/2`` Gaussian rows each used
        twice with opposite signs ``a'_r = −a_r``, so ``f(W₀, ·) = 0`` (``m`` must be even).
        """
        if d < 1 or m < 1:
            raise ValueError(f"LazyReLUNet needs d >= 1 and m >= 1, got d={d}, m={m}")
        if paired:
            if m % 2:
                raise ValueError(f"paired initialization needs an even width, got m={m}")
            half = _draw((m // 2, d), generator, device, dtype)
            signs = _signs(m // 2, generator, device, dtype)
            return cls(torch.cat([half, half]), torch.cat([signs, -signs]))
        W0 = _draw((m, d), generator, device, dtype)
        return cls(W0, _signs(m, generator, device, dtype))

    @property
    def width(self) -> int:
        return self.W.shape[0]

    @property
    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.width)

    def _pass(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(ReLU(<w_s, x>), 1[<w_s, x> > 0])``, both ``(n, m)``."""
        u = x @ self.W.T
        gate = (u > 0).to(x.dtype)
        return u * gate, gate

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x (n, d)``; shape ``(n,)``."""
        parts = [self._pass(x[sl])[0] @ self.a for sl in example_chunks(x.shape[0], self.width)]
        return torch.cat(parts) * self._scale

    __call__ = forward

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``f(x) (n,)`` and ``∇_x f(x) = (1/√m) Σ_s a_s 1[<w_s, x> > 0] w_s`` ``(n, d)``."""
        def chunk(xs: Tensor) -> tuple[Tensor, Tensor]:
            post, gate = self._pass(xs)
            return post @ self.a, (gate * self.a) @ self.W

        f, grad = map_chunks(x, self.width, chunk)
        return f * self._scale, grad * self._scale

    def loss_grad_and_output(
        self, x: Tensor, y: Tensor, *, out: tuple[Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor], Tensor]:
        """Mean logistic loss, ``(∇_W L,)`` of shape ``((m, d),)`` and the outputs ``f(x) (n,)``.

        ``out``: a ``((m, d),)`` buffer for ``∇_W L``, as in
        :func:`~purify.learners.logistic.chunked_logistic_pass`.
        """

        def chunk_pass(xs: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
            post, gate = self._pass(xs)
            f = (post @ self.a) * self._scale
            # ∂f_j/∂w_s = a_s 1[u_js > 0] x_j / √m, summed over j with weights ∂L/∂f_j
            return f, lambda dloss: gate * (self.a * self._scale) * dloss[:, None]

        return chunked_logistic_pass(x, y, self.W, chunk_pass, out)

    def params(self) -> tuple[Tensor]:
        """The trainable tensors, updated in place by :func:`purify.fit.fit`: ``(W,)``."""
        return (self.W,)

    def deviation(self) -> Tensor:
        """``‖w_s − w_{s,0}‖₂`` per neuron, shape ``(m,)``: the ``B_{2,∞}(W₀, ·)`` radius used."""
        out = torch.empty(self.width, dtype=self.W.dtype, device=self.W.device)
        for sl in example_chunks(self.width, self.W.shape[1], ROW_BLOCK_ELEMENTS):
            out[sl] = (self.W[sl] - self.W0[sl]).norm(dim=1)
        return out

    def project_(self, radius: float, *, ball: str = "rows") -> None:
        """Euclidean projection of ``W`` onto a ball around ``W₀``, in place.

        ``ball="rows"`` is ``B_{2,∞}(W₀, radius)`` (Wang et al. Appendix Algorithm 1, line 11):
        each row outside is pulled radially onto the sphere of that radius, rows inside are left
        bit for bit.  ``ball="frobenius"`` is ``{‖W − W₀‖_F ≤ radius}``, the set ``B(R)`` of Gao
        et al. (2019) eq. (2) (pass ``radius = R/√m`` for their deep-network scaling).
        """
        project_rows_(self.W, self.W0, radius, ball=ball)

    def linearized(self) -> LinearizedLazyNet:
        """The first-order expansion around ``W₀`` with the current weights (see the class)."""
        return LinearizedLazyNet(self.W0, self.a, self.W.clone())


class LinearizedLazyNet(LazyReLUNet):
    """``f_lin(x) = f(W₀, x) + <∇_W f(W₀, x), W − W₀>`` (the lazy/NTK linearization).

    Because ``ReLU(u) = 1[u > 0] u``, this is ``(1/√m) Σ_s a_s 1[<w_{s,0}, x> > 0] <w_s, x>``:
    the activation pattern is frozen at initialization and the model is linear in ``W``.
    The trainable interface (``params``, ``deviation``, ``project_``) is the lazy net's.
    """

    def _pass(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gate = (x @ self.W0.T > 0).to(x.dtype)
        return (x @ self.W.T) * gate, gate


def project_rows_(W: Tensor, W0: Tensor, radius: float, *, ball: str = "rows") -> None:
    """Project ``W (m, d)`` in place onto ``B_{2,∞}(W₀, radius)`` or ``{‖W − W₀‖_F ≤ radius}``."""
    if ball not in BALLS:
        raise ValueError(f"unknown ball {ball!r}; allowed: {', '.join(BALLS)}")
    if not radius >= 0:
        raise ValueError(f"projection radius must be >= 0, got {radius}")
    chunks = list(example_chunks(W.shape[0], W.shape[1], ROW_BLOCK_ELEMENTS))
    if ball == "frobenius":
        total = math.sqrt(sum(float(((W[sl] - W0[sl]) ** 2).sum()) for sl in chunks))
        if total > radius:
            shrink = radius / total
            for sl in chunks:
                W[sl] = W0[sl] + (W[sl] - W0[sl]) * shrink
        return
    for sl in chunks:
        dev = W[sl] - W0[sl]
        norm = dev.norm(dim=1, keepdim=True)
        outside = norm > radius
        if bool(outside.any()):
            pulled = W0[sl] + dev * (radius / norm.clamp_min(1e-30))
            W[sl] = torch.where(outside, pulled, W[sl])

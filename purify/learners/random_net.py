"""Random networks of Bubeck, Cherapanamjeri, Gidel & Tachet des Combes (2021), eq. (1) and §4.

    f(x) = (1/√k) Σ_ℓ a_ℓ ψ(<w_ℓ, h_{L−1}(x)>),   h_0 = x,   h_j = ψ(W_j h_{j−1}) ∈ R^k

with every hidden width ``k``, ``W_j`` entries ``N(0, 1/fan_in)`` (so ``w_ℓ ~ N(0, I/d)`` in
the first layer) and ``a_ℓ ~ unif{±1}``.  Depth ``L = 1`` is the two-layer network of their
Theorems 1 (smooth ``ψ``) and 2 (ReLU); their §4 experiments use ReLU with ``L = 1..6``.
With ``‖x‖ = √d`` each first-layer pre-activation is ``N(0, 1)``, so at depth 1
``E f(x)² = E_{X~N(0,1)} ψ(X)²`` (``1/2`` for ReLU, and ``2^{−L}`` at depth ``L``).

Theorem 1 asks of ``ψ`` only to be non-constant, Lipschitz, with Lipschitz derivative; the
smooth activations offered are ``tanh``, ``softplus`` and ``gelu`` (``u Φ(u)``).
Gradients are back-propagated by hand and checked against autograd in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from purify.learners.base import Trainable
from purify.learners.lazy import _signs
from purify.learners.logistic import accumulate_product, example_chunks, logistic_loss

ACTIVATIONS = ("relu", "tanh", "softplus", "gelu")

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _relu(u: Tensor) -> tuple[Tensor, Tensor]:
    gate = (u > 0).to(u.dtype)
    return u * gate, gate


def _tanh(u: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(u)
    return t, 1 - t * t


def _softplus(u: Tensor) -> tuple[Tensor, Tensor]:
    return F.softplus(u), torch.sigmoid(u)


def _gelu(u: Tensor) -> tuple[Tensor, Tensor]:
    cdf = torch.special.ndtr(u)
    return u * cdf, cdf + u * torch.exp(-0.5 * u * u) * _INV_SQRT_2PI


_PSI: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "relu": _relu, "tanh": _tanh, "softplus": _softplus, "gelu": _gelu,
}


def activation_fn(name: str) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``u ↦ (ψ(u), ψ'(u))`` for ``name`` in :data:`ACTIVATIONS` (ReLU'(0) = 0, as in autograd)."""
    if name not in _PSI:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return _PSI[name]


class RandomNet(Trainable):
    """A fully connected network of ``L`` hidden layers of width ``k`` and a ``±1`` readout.

    Parameters
    ----------
    Ws : ``L`` weight matrices, ``(k, d)`` then ``(k, k)``; layer ``j`` computes ``ψ(h W_jᵀ)``.
    a : (k,) fixed readout signs; the output is ``ψ(·) a / √k``.
    activation : one of :data:`ACTIVATIONS`.
    """

    def __init__(self, Ws: list[Tensor], a: Tensor, activation: str = "relu") -> None:
        self.Ws = list(Ws)
        self.a = a
        self.activation = activation
        self._psi = activation_fn(activation)

    @classmethod
    def init(
        cls,
        d: int,
        k: int,
        depth: int = 1,
        *,
        activation: str = "relu",
        generator: torch.Generator,
        device=None,
        dtype=torch.float32,
    ) -> RandomNet:
        """Bubeck et al. §1 initialization: ``W_j ~ N(0, I/fan_in)`` entrywise, ``a ~ unif{±1}``."""
        if d < 1 or k < 1 or depth < 1:
            raise ValueError(f"RandomNet needs d, k, depth >= 1, got d={d}, k={k}, depth={depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        Ws = []
        fan_in = d
        for _ in range(depth):
            W = torch.randn(k, fan_in, generator=generator, device=generator.device, dtype=dtype)
            Ws.append((W / math.sqrt(fan_in)).to(device))
            fan_in = k
        return cls(Ws, _signs(k, generator, device, dtype), activation)

    @property
    def width(self) -> int:
        return self.a.shape[0]

    @property
    def depth(self) -> int:
        return len(self.Ws)

    def _forward_cached(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Output ``(n,)``, the layer inputs ``h_0 … h_{L−1}`` and the slopes ``ψ'(pre_j)``."""
        h, inputs, slopes = x, [], []
        for W in self.Ws:
            inputs.append(h)
            h, slope = self._psi(h @ W.T)
            slopes.append(slope)
        return (h @ self.a) / math.sqrt(self.width), inputs, slopes

    def _backward(self, slopes: list[Tensor], top: Tensor) -> list[Tensor]:
        """``∂/∂pre_j`` for every layer, given ``∂/∂h_L = top (n, k)``."""
        grads = [torch.empty(0)] * self.depth
        g = top
        for j in range(self.depth - 1, -1, -1):
            g = g * slopes[j]
            grads[j] = g
            g = g @ self.Ws[j]
        return grads

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x (n, d)``; shape ``(n,)``."""
        parts = []
        for sl in example_chunks(x.shape[0], self.width):
            h = x[sl]
            for W in self.Ws:
                h = self._psi(h @ W.T)[0]
            parts.append(h @ self.a)
        return torch.cat(parts) / math.sqrt(self.width)

    __call__ = forward

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``f(x) (n,)`` and ``∇_x f(x) (n, d)`` (for ``L = 1``: ``(1/√k) Σ a_ℓ ψ'(w_ℓ·x) w_ℓ``)."""
        outs, grads = [], []
        for sl in example_chunks(x.shape[0], self.width):
            out, _, slopes = self._forward_cached(x[sl])
            top = (self.a / math.sqrt(self.width)).expand(out.shape[0], -1)
            outs.append(out)
            grads.append(self._backward(slopes, top)[0] @ self.Ws[0])
        return torch.cat(outs), torch.cat(grads)

    def loss_grad_and_output(
        self, x: Tensor, y: Tensor, *, out: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        """Mean logistic loss, ``∇_{W_j} L`` for every layer and the outputs ``f(x) (n,)``.

        ``out``, when given, holds one buffer per layer the gradients are written into.
        """
        n = x.shape[0]
        loss = x.new_zeros(())
        wgrads: list[Tensor | None] = [None] * self.depth if out is None else list(out)
        outs = []
        for i, sl in enumerate(example_chunks(n, self.width)):
            f, inputs, slopes = self._forward_cached(x[sl])
            part, dloss = logistic_loss(f, y[sl], n)
            loss = loss + part
            top = dloss[:, None] * (self.a / math.sqrt(self.width))
            for j, (g, h) in enumerate(zip(self._backward(slopes, top), inputs, strict=True)):
                wgrads[j] = accumulate_product(wgrads[j], i == 0, g.T, h)
            outs.append(f)
        if not outs:
            pairs = zip(self.Ws, wgrads, strict=True)
            return loss, tuple(torch.zeros_like(W) if g is None else g.zero_() for W, g in pairs), x.new_zeros(0)
        return loss, tuple(wgrads), torch.cat(outs)

    def params(self) -> tuple[Tensor, ...]:
        """The trainable tensors: the hidden weight matrices (the readout ``a`` stays fixed)."""
        return tuple(self.Ws)

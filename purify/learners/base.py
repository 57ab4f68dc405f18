"""The learner protocols shared by attacks, evaluation, training and analysis.

Three capabilities, each a :class:`typing.Protocol` adding to the one before:

* :class:`Forward` — ``x ↦ f(x)``: all that evaluation needs;
* :class:`Learner` — also the input gradient ``∇_x f``: all that an attack needs;
* :class:`Trainable` — also the loss gradient in the weights and the weights themselves: all
  that :func:`purify.fit.fit` needs; :class:`BallTrainable` adds the distance to the
  initialization and the projection onto a ball around it (the lazy-regime controls of
  Wang et al. 2022 §5.1).

The comparison learners subclass :class:`Trainable` explicitly and so inherit its
:meth:`~Trainable.loss_and_grad` and :meth:`~Trainable.gradient_buffers`; any other object
with the methods works too (the protocols are structural).  The paper's network
(:class:`~purify.learners.symmetric.SymmetricReLUNet`) is a :class:`Learner` trained by
:func:`purify.train.train_step`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Forward(Protocol):
    """A scalar-output classifier ``x ↦ f(x)`` predicting ``sign f(x)`` for labels in ``{±1}``."""

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` for a batch ``x (n, d)``; shape ``(n,)``."""
        ...


@runtime_checkable
class Learner(Forward, Protocol):
    """A :class:`Forward` model with its input gradient, which is what attacks need.

    For a learner with pre-activation noise both methods use the smoothed (expected) network,
    as the paper's attacks do (Allen-Zhu & Li, footnote 9).
    """

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x) (n,), ∇_x f(x) (n, d))`` in one pass."""
        ...


def input_grad(model: Learner, x: Tensor) -> Tensor:
    """``∇_x f(x) (n, d)`` alone, for an attack that ignores ``f(x)`` (FGM).

    A learner may define ``input_grad(x)`` to skip computing the output (the symmetric network
    does; same bits as :meth:`Learner.forward_and_input_grad`'s); any other learner gives the
    gradient of ``forward_and_input_grad``.
    """
    shortcut = getattr(model, "input_grad", None)
    return shortcut(x) if shortcut is not None else model.forward_and_input_grad(x)[1]


@runtime_checkable
class Trainable(Learner, Protocol):
    """A :class:`Learner` trained by SGD on the mean logistic loss ``log(1 + e^{−y f})``."""

    def loss_grad_and_output(
        self, x: Tensor, y: Tensor, *, out: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        """Mean loss (0-d), its gradient in each tensor of :meth:`params` (written into ``out``
        when given, buffers of :meth:`gradient_buffers`) and the outputs ``f(x) (n,)``."""
        ...

    def params(self) -> tuple[Tensor, ...]:
        """The trainable tensors, updated in place by :func:`purify.fit.fit`."""
        ...

    def gradient_buffers(self) -> tuple[Tensor, ...] | None:
        """Buffers :func:`purify.fit.fit` passes as ``out`` at every step (a fresh ``(m, d)``
        gradient per step costs as much as the step's products), or None to pass none."""
        return tuple(torch.empty_like(p) for p in self.params())

    def loss_and_grad(self, x: Tensor, y: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Mean logistic loss on the batch and its gradient in each tensor of :meth:`params`."""
        loss, grads, _ = self.loss_grad_and_output(x, y)
        return loss, grads


@runtime_checkable
class BallTrainable(Trainable, Protocol):
    """A :class:`Trainable` that knows its initialization: training can stop on leaving a ball
    around it, or be projected back onto it (Wang et al. 2022 §5.1 and Appendix Algorithm 1)."""

    def deviation(self) -> Tensor:
        """Distance of each neuron's weights to their initial value, shape ``(m,)``."""
        ...

    def project_(self, radius: float, *, ball: str = "rows") -> None:
        """Project the weights in place onto ``B_{2,∞}(W₀, radius)`` (``"rows"``) or the
        Frobenius ball ``‖W − W₀‖_F ≤ radius`` (``"frobenius"``)."""
        ...

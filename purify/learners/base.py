"""The learner protocol shared by attacks, evaluation and analysis."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Learner(Protocol):
    """A scalar-output classifier ``x ↦ f(x)`` predicting ``sign f(x)`` for labels in ``{±1}``.

    Attacks only need :meth:`forward` and :meth:`forward_and_input_grad`; for a learner with
    pre-activation noise both use the smoothed (expected) network, as the paper's attacks do
    (Allen-Zhu & Li, footnote 9).
    """

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` for a batch ``x (n, d)``; shape ``(n,)``."""
        ...

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x) (n,), ∇_x f(x) (n, d))`` in one pass."""
        ...

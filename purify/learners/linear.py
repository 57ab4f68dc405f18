"""Linear classifiers ``f(x) = <v, x> + c``: the low-complexity models of Allen-Zhu & Li §3.

The *oracle* ``f(x) = <w*, Mᵀx>`` (``v = M w*``) classifies clean sparse-coding data
perfectly when ``M`` is orthogonal and there is no noise, yet §3 shows no linear model is
robust to ℓ₂ perturbations of radius ``Θ(1/√d)`` — the dense direction ``M w*/‖M w*‖``
alone flips it.  The *trained* model is a scikit-learn logistic regression.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from purify.learners.base import Trainable
from purify.learners.logistic import logistic_loss


class LinearModel(Trainable):
    """``f(x) = <v, x> + c`` with trainable ``v (d,)`` and ``c`` (0-d tensor)."""

    def __init__(self, v: Tensor, c: Tensor | float = 0.0) -> None:
        self.v = v
        self.c = torch.as_tensor(c, dtype=v.dtype, device=v.device).clone().reshape(())

    @classmethod
    def zeros(cls, d: int, *, device=None, dtype=torch.float32) -> LinearModel:
        """``f ≡ 0``, a starting point for :func:`purify.fit.fit`."""
        return cls(torch.zeros(d, device=device, dtype=dtype))

    @classmethod
    def oracle(cls, M: Tensor, w_star: Tensor) -> LinearModel:
        """``f(x) = <w*, Mᵀx> = <M w*, x>`` for dictionary ``M (d, D)`` and teacher ``w* (D,)``."""
        return cls(M @ w_star)

    @classmethod
    def logistic(cls, x: Tensor, y: Tensor, *, C: float = 1.0, seed: int = 0) -> LinearModel:
        """Fit :class:`sklearn.linear_model.LogisticRegression` (ℓ₂ penalty, inverse strength ``C``).

        Parameters
        ----------
        x : (n, d) training inputs.
        y : (n,) labels in ``{±1}`` (both classes must occur).
        C : inverse regularization strength of scikit-learn.
        seed : ``random_state`` of the solver.
        """
        from sklearn.linear_model import LogisticRegression

        X = x.detach().cpu().numpy().astype(np.float64)
        labels = y.detach().cpu().numpy()
        if len(np.unique(labels)) < 2:
            raise ValueError("logistic regression needs both labels in the training set")
        clf = LogisticRegression(C=C, random_state=seed, max_iter=10_000)
        clf.fit(X, labels)
        # classes_ is sorted, so the decision function is positive for the label +1.
        assert list(clf.classes_) == [-1.0, 1.0], clf.classes_
        v = torch.as_tensor(clf.coef_[0], dtype=x.dtype, device=x.device)
        return cls(v, float(clf.intercept_[0]))

    def forward(self, x: Tensor) -> Tensor:
        """``<v, x> + c``, shape ``(n,)``."""
        return x @ self.v + self.c

    __call__ = forward

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``f(x) (n,)`` and ``∇_x f = v`` for every example ``(n, d)``."""
        return self.forward(x), self.v.expand_as(x)

    def loss_grad_and_output(
        self, x: Tensor, y: Tensor, *, out: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """Mean logistic loss, ``(∇_v L, ∇_c L)`` and the outputs ``f(x) (n,)``.

        ``out`` is accepted for the :class:`~purify.learners.base.Trainable` interface and
        ignored: the gradients are small (see :meth:`gradient_buffers`).
        """
        f = self.forward(x)
        loss, dloss = logistic_loss(f, y)
        return loss, (dloss @ x, dloss.sum()), f

    def gradient_buffers(self) -> None:
        """None: the gradients (``(d,)`` and a scalar) are cheaper to allocate than to copy."""
        return None

    def params(self) -> tuple[Tensor, Tensor]:
        """The trainable tensors: ``(v, c)``."""
        return (self.v, self.c)

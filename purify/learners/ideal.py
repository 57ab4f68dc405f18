"""The ideal robust classifier of Allen-Zhu & Li, §3 ("High-complexity models are more robust").

    f*(x) = Σ_i w*_i <M_i, x> 1[|<M_i, x>| ≥ 1/(2√k)]

It equals ``<w*, z>`` w.h.p. on clean data and is robust to ℓ₂ perturbations of radius
``o(1/√k)``: the reference for how much robustness is possible at a radius.
"""

from __future__ import annotations

import math

from torch import Tensor

from purify.matmul import Reused


class IdealRobustModel:
    """Thresholded pure-feature classifier; ``threshold`` defaults to ``1/(2√k)``.

    Its input gradient is the a.e. gradient ``Σ_{i active} w*_i M_i``, so gradient attacks move
    the active features, and a feature dropping under the threshold is a jump they may find.
    """

    def __init__(self, M: Tensor, w_star: Tensor, k: int, threshold: float | None = None) -> None:
        self.M = M
        self._reused: tuple[Tensor, Reused, Reused] | None = None  # (M, x ↦ x M, v ↦ v Mᵀ)
        self.w_star = w_star
        self.threshold = 1.0 / (2.0 * math.sqrt(k)) if threshold is None else threshold

    def _products(self) -> tuple[Reused, Reused]:
        """``x ↦ x M`` and ``v ↦ v Mᵀ`` for the current ``M``: an attack calls both hundreds of times."""
        if self._reused is None or self._reused[0] is not self.M:
            self._reused = (self.M, Reused(self.M.T), Reused(self.M))
        return self._reused[1], self._reused[2]

    def _active(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = self._products()[0](x)  # (n, D) coefficients <M_i, x>
        return c, (c.abs() >= self.threshold).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        c, active = self._active(x)
        return (c * active) @ self.w_star

    __call__ = forward

    def forward_and_input_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c, active = self._active(x)
        return (c * active) @ self.w_star, self._products()[1](active * self.w_star)

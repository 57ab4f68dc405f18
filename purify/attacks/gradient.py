"""The cheap attackers of the evaluation grid: PGD, FGM (one-step PGD), the dense direction
and the random control (Allen-Zhu & Li, Def. 4.2 and Thm 5.1c)."""

from __future__ import annotations

import torch
from torch import Tensor

from purify.attacks.base import Attack, AttackOptions
from purify.learners.base import input_grad


class PGD(Attack):
    """Projected gradient descent on the margin ``y f(x + δ)`` (Madry et al. 2018).

    Each step moves ``δ ← Π(δ − α·normalize(y ∇f))``; the returned ``δ`` is, per example, the
    iterate with the smallest margin seen over all steps and restarts, so more steps or
    restarts never weaken the attack.  ``rel_step`` is ``α/τ``.
    """

    def __init__(
        self,
        norm: str,
        *,
        steps: int = 10,
        rel_step: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
    ) -> None:
        super().__init__(norm)
        if steps < 1 or restarts < 1:
            raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got {steps}, {restarts}")
        self.steps = steps
        self.rel_step = 2.5 / steps if rel_step is None else rel_step
        self.random_start = random_start
        self.restarts = restarts

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> PGD:
        o = options
        return cls(norm, steps=o.pgd_steps, rel_step=o.pgd_rel_step, random_start=o.pgd_random_start,
                   restarts=o.pgd_restarts)

    masks_paired = True

    def _starts(self, x: Tensor, tau: float, generator: torch.Generator) -> list[Tensor | None]:
        """The start of each restart (``None``: zero), drawn in order, as the restarts would."""
        if not self.random_start:
            return [None] * self.restarts
        return [self.norm.random_start(tuple(x.shape), tau, generator=generator, device=x.device, dtype=x.dtype)
                for _ in range(self.restarts)]

    def run(self, model, x, y, tau, *, generator):
        return self._descend(model, x, y, tau, self._starts(x, tau, generator))

    def run_masked(self, model, x, y, tau, active, *, generator):
        # The starts are drawn for every row, so an active row gets the draws it would get
        # unmasked; the iterations then run on the active rows alone (rows are independent).
        starts = self._starts(x, tau, generator)
        delta = torch.zeros_like(x)
        idx = active.nonzero().flatten()
        if idx.numel():
            delta[idx] = self._descend(model, x[idx], y[idx], tau, [s if s is None else s[idx] for s in starts])
        return delta

    def _descend(self, model, x: Tensor, y: Tensor, tau: float, starts: list[Tensor | None]) -> Tensor:
        best = torch.zeros_like(x)
        best_margin = torch.full_like(y, float("inf"))
        for start in starts:
            delta = torch.zeros_like(x) if start is None else start
            for step in range(self.steps + 1):
                # the last iterate is only scored: its gradient would never be used
                if step == self.steps:
                    out = model.forward(x + delta)
                else:
                    out, grad = model.forward_and_input_grad(x + delta)
                margin = y * out
                better = margin < best_margin
                best = torch.where(better[:, None], delta, best)
                best_margin = torch.where(better, margin, best_margin)
                if step == self.steps:
                    break
                delta = self._step(delta, y[:, None] * grad, tau)
        return best

    def _step(self, delta: Tensor, margin_grad: Tensor, tau: float) -> Tensor:
        return self.norm.project(delta - self.rel_step * tau * self.norm.normalize(margin_grad), tau)


class FGM(Attack):
    """Fast gradient method ``δ = argmin_{‖δ‖_p ≤ τ} <y ∇f(x), δ>`` (Def. 4.2).

    ``ℓ₂``: ``−τ y g/‖g‖₂``; ``ℓ∞``: ``−τ y sign(g)``.  Following the paper, ``δ = 0`` where
    ``‖∇f(x)‖_q < zero_tol`` (a ``1/poly(d)`` threshold) so a flat network is not pushed around
    by round-off.
    """

    masks_paired = True  # no draws: the default masked run gives each row what run does

    def __init__(self, norm: str, *, zero_tol: float = 1e-8) -> None:
        super().__init__(norm)
        self.zero_tol = zero_tol

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> FGM:
        return cls(norm, zero_tol=options.fgm_zero_tol)

    def run(self, model, x, y, tau, *, generator):
        grad = input_grad(model, x)
        delta = -tau * self.norm.normalize(y[:, None] * grad)
        flat = self.norm.dual_norm(grad) < self.zero_tol
        return torch.where(flat[:, None], torch.zeros_like(delta), delta)


class DenseAttack(Attack):
    """The universal dense perturbation ``δ = −τ y M w*/‖M w*‖₂`` (Thm 5.1c); ignores ``f``.

    For ``ℓ∞`` the same direction is taken at the cube's corner, ``−τ y sign(M w*)``.
    """

    masks_paired = True  # no draws, and the model is not used

    def __init__(self, norm: str, direction: Tensor) -> None:
        super().__init__(norm)
        self.direction = self.norm.normalize(direction[None, :])[0]

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> DenseAttack:
        if options.dense_direction is None:
            raise ValueError("the dense attack needs the direction M w*")
        return cls(norm, options.dense_direction)

    def run(self, model, x, y, tau, *, generator):
        return -tau * y[:, None] * self.direction.to(x.device, x.dtype)[None, :]


class NoiseAttack(Attack):
    """Control: a uniformly random direction on the sphere ``‖δ‖_p = τ`` (``ℓ∞``: random signs)."""

    masks_paired = True

    def run(self, model, x, y, tau, *, generator):
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return tau * self.norm.normalize(g)

    def run_masked(self, model, x, y, tau, active, *, generator):
        # drawn for every row (the model is not used, so nothing is saved by drawing fewer)
        return torch.where(active[:, None], self.run(model, x, y, tau, generator=generator), 0.0)

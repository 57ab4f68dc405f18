"""Perturbation algorithms ``A(f, x, y, r)`` with ``‖δ‖_p ≤ τ`` (Allen-Zhu & Li, Def. 4.2).

Shaped after foolbox: :class:`Attack` has a final :meth:`Attack.__call__` that owns the
budget (projection onto the ``τ``-ball, done in one place) and delegates to ``run``; the
norm supplies ``normalize``, ``project`` and ``random_start``; FGM is one-step PGD.
Models have scalar outputs and ``±1`` labels; inputs are unbounded (no ``[0, 1]`` clamp).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from purify.learners.base import Learner

NORMS = ("l2", "linf")
ATTACKS = ("fgm", "pgd", "dense", "noise")


@dataclass(frozen=True)
class Norm:
    """An ``ℓ_p`` geometry: steepest-ascent direction, projection and uniform-ish start."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in NORMS:
            raise ValueError(f"unknown norm {self.name!r}; allowed: {', '.join(NORMS)}")

    def norm(self, v: Tensor) -> Tensor:
        """Row-wise ``‖v‖_p``, shape ``(n,)``."""
        return v.norm(dim=1) if self.name == "l2" else v.abs().amax(dim=1)

    def dual_norm(self, g: Tensor) -> Tensor:
        """Row-wise ``‖g‖_q`` with ``1/p + 1/q = 1``."""
        return g.norm(dim=1) if self.name == "l2" else g.abs().sum(dim=1)

    def normalize(self, g: Tensor) -> Tensor:
        """``argmax_{‖v‖_p ≤ 1} <g, v>`` row-wise (``g/‖g‖₂`` or ``sign g``); zero rows stay zero."""
        if self.name == "l2":
            return g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return torch.sign(g)

    def project(self, delta: Tensor, tau: float) -> Tensor:
        """Euclidean projection onto ``{‖δ‖_p ≤ τ}`` row-wise."""
        if self.name == "l2":
            scale = (tau / delta.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
            return delta * scale
        return delta.clamp(-tau, tau)

    def random_start(self, shape: tuple[int, ...], tau: float, *, generator, device, dtype) -> Tensor:
        """A random point of the ball: uniform in the ``ℓ∞`` cube; for ``ℓ₂`` uniform in the ball."""
        if self.name == "linf":
            u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return (2 * u - 1) * tau
        g = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        r = torch.rand(shape[0], 1, generator=generator, device=device, dtype=dtype)
        return g / g.norm(dim=1, keepdim=True) * tau * r ** (1.0 / shape[1])


class Attack(ABC):
    """Base class: ``attack(model, x, y, tau, generator=g) -> δ`` with ``‖δ_j‖_p ≤ τ`` for all j."""

    def __init__(self, norm: str) -> None:
        self.norm = Norm(norm)

    def __call__(
        self, model: Learner, x: Tensor, y: Tensor, tau: float, *, generator: torch.Generator
    ) -> Tensor:
        if not tau > 0:
            raise ValueError(f"attack radius tau must be > 0, got {tau}")
        delta = self.run(model, x, y, tau, generator=generator)
        # The budget is enforced here, once, whatever `run` did (float round-off included).
        return self.norm.project(delta, tau)

    @abstractmethod
    def run(
        self, model: Learner, x: Tensor, y: Tensor, tau: float, *, generator: torch.Generator
    ) -> Tensor:
        """Return a perturbation of shape ``x.shape``; :meth:`__call__` projects it."""


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

    def run(self, model, x, y, tau, *, generator):
        best = torch.zeros_like(x)
        best_margin = torch.full_like(y, float("inf"))
        for _ in range(self.restarts):
            delta = torch.zeros_like(x)
            if self.random_start:
                delta = self.norm.random_start(
                    tuple(x.shape), tau, generator=generator, device=x.device, dtype=x.dtype
                )
            for step in range(self.steps + 1):
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

    def __init__(self, norm: str, *, zero_tol: float = 1e-8) -> None:
        super().__init__(norm)
        self.zero_tol = zero_tol

    def run(self, model, x, y, tau, *, generator):
        _, grad = model.forward_and_input_grad(x)
        delta = -tau * self.norm.normalize(y[:, None] * grad)
        flat = self.norm.dual_norm(grad) < self.zero_tol
        return torch.where(flat[:, None], torch.zeros_like(delta), delta)


class DenseAttack(Attack):
    """The universal dense perturbation ``δ = −τ y M w*/‖M w*‖₂`` (Thm 5.1c); ignores ``f``.

    For ``ℓ∞`` the same direction is taken at the cube's corner, ``−τ y sign(M w*)``.
    """

    def __init__(self, norm: str, direction: Tensor) -> None:
        super().__init__(norm)
        self.direction = self.norm.normalize(direction[None, :])[0]

    def run(self, model, x, y, tau, *, generator):
        return -tau * y[:, None] * self.direction.to(x.device, x.dtype)[None, :]


class NoiseAttack(Attack):
    """Control: a uniformly random direction on the sphere ``‖δ‖_p = τ`` (``ℓ∞``: random signs)."""

    def run(self, model, x, y, tau, *, generator):
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return tau * self.norm.normalize(g)


def make_attack(
    name: str,
    norm: str,
    *,
    dense_direction: Tensor | None = None,
    pgd_steps: int = 10,
    pgd_rel_step: float | None = None,
    pgd_restarts: int = 1,
    pgd_random_start: bool = True,
    fgm_zero_tol: float = 1e-8,
) -> Attack:
    """Build attacker ``name`` (one of :data:`ATTACKS`) for ``norm`` (one of :data:`NORMS`)."""
    if name == "fgm":
        return FGM(norm, zero_tol=fgm_zero_tol)
    if name == "pgd":
        return PGD(
            norm,
            steps=pgd_steps,
            rel_step=pgd_rel_step,
            random_start=pgd_random_start,
            restarts=pgd_restarts,
        )
    if name == "dense":
        if dense_direction is None:
            raise ValueError("the dense attack needs the direction M w*")
        return DenseAttack(norm, dense_direction)
    if name == "noise":
        return NoiseAttack(norm)
    raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(ATTACKS)}")


# --------------------------------------------------------------------------------------
# Single gradient step (Bubeck et al. 2021 Thm 1-2; Wang et al. 2022 Thm 3.1)
# --------------------------------------------------------------------------------------


@dataclass
class SingleStep:
    """Result of :func:`single_step`, one entry per example.

    ``eta`` is signed (``sign η = −sign f(x)``) and NaN where no ``|η| ≤ eta_max`` flipped the
    sign; ``delta_norm = |η| ‖∇_x f(x)‖₂`` likewise.
    """

    eta: Tensor
    grad_norm: Tensor
    delta_norm: Tensor
    flipped: Tensor


def _sign(v: Tensor) -> Tensor:
    return torch.where(v >= 0, 1.0, -1.0).to(v.dtype)  # sign(0) = +1, the labels' convention


def single_step(
    model: Learner,
    x: Tensor,
    *,
    eta_max: float = 20.0,
    eta_min: float | None = None,
    grid: int = 64,
    bisections: int = 40,
) -> SingleStep:
    """Smallest ``|η| ≤ eta_max`` such that ``δ = η ∇_x f(x)`` flips ``sign f``, per example.

    The step is the one of Bubeck et al. (2021, Thm 1-2, §4: "the smallest η, searched up to
    |η| < 20") and Wang et al. (2022, Thm 3.1 and §5.1): ``sign η = −sign f(x)``.  The search
    brackets the first flip on a geometric grid of ``grid`` values of ``|η|`` from ``eta_min``
    (default ``eta_max·1e-9``) to ``eta_max``, then bisects between the last grid value that did
    not flip and the first that did.  A flip that happens and reverts between two grid values
    is missed; on a model linear along the ray the answer is exact up to the bisection
    tolerance (``|η| = |f(x)|/‖∇f(x)‖²``).
    """
    if not eta_max > 0:
        raise ValueError(f"eta_max must be > 0, got {eta_max}")
    eta_min = eta_max * 1e-9 if eta_min is None else eta_min
    if not 0 < eta_min < eta_max:
        raise ValueError(f"need 0 < eta_min < eta_max, got {eta_min}, {eta_max}")
    out, grad = model.forward_and_input_grad(x)
    s0 = _sign(out)
    direction = -s0[:, None] * grad  # moving along it lowers s0·f at first order

    def flips(scale: Tensor) -> Tensor:
        return _sign(model.forward(x + scale[:, None] * direction)) != s0

    n = x.shape[0]
    lo = torch.zeros(n, dtype=x.dtype, device=x.device)  # largest |η| known not to flip
    hi = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)  # smallest known to flip (NaN: none yet)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for value in torch.logspace(math.log10(eta_min), math.log10(eta_max), grid, dtype=torch.float64).tolist():
        scale = torch.full((n,), value, dtype=x.dtype, device=x.device)
        now = flips(scale) & ~found
        hi = torch.where(now, scale, hi)
        found |= now
        lo = torch.where(found, lo, scale)
        if bool(found.all()):
            break
    if bool(found.any()):
        a, b = lo[found], hi[found]
        xf, df, sf = x[found], direction[found], s0[found]
        for _ in range(bisections):
            mid = (a + b) / 2
            f = _sign(model.forward(xf + mid[:, None] * df)) != sf
            b = torch.where(f, mid, b)
            a = torch.where(f, a, mid)
        hi[found] = b
    grad_norm = grad.norm(dim=1)
    eta = -s0 * hi  # NaN where nothing flipped
    return SingleStep(eta=eta, grad_norm=grad_norm, delta_norm=hi * grad_norm, flipped=found)

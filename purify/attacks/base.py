"""The geometry and the base class of every attacker: :class:`Norm`, :class:`Attack`,
and :class:`AttackOptions`, the knobs :func:`purify.attacks.make_attack` hands a factory.

Shaped after foolbox: :class:`Attack` has a final :meth:`Attack.__call__` that owns the
budget (projection onto the ``τ``-ball, done in one place) and delegates to ``run``; the
norm supplies ``normalize``, ``project`` and ``random_start``.  Models have scalar outputs
and ``±1`` labels; inputs are unbounded (no ``[0, 1]`` clamp).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from purify.learners.base import Learner

NORMS = ("l2", "linf")


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
        """Row-wise ``‖g‖_q`` with ``1/p + 1/q = 1`` (``q = 2`` for ℓ₂, 1 for ℓ∞), shape ``(n,)``:
        by Hölder, ``max_{‖δ‖_p ≤ τ} <g, δ> = τ ‖g‖_q``."""
        return torch.linalg.vector_norm(g, ord=2.0 if self.name == "l2" else 1.0, dim=1)

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

    #: Whether :meth:`run_masked` gives every active row exactly what :meth:`run` on all rows
    #: gives it: the same random draws (drawn for every row) and, rows being independent, the
    #: same arithmetic.  :func:`purify.evaluate.cascade` and :func:`purify.evaluate.evaluate`
    #: then attack only the examples a model classifies correctly, whose outcome is all they
    #: report.  This default's masked run draws for the subset alone, so it is not.
    masks_paired: bool = False

    def __init__(self, norm: str) -> None:
        self.norm = Norm(norm)

    def __call__(
        self,
        model: Learner,
        x: Tensor,
        y: Tensor,
        tau: float,
        *,
        generator: torch.Generator,
        active: Tensor | None = None,
    ) -> Tensor:
        """``δ (n, d)``; with a boolean mask ``active (n,)`` only those rows are attacked (``δ = 0``
        elsewhere), see :meth:`run_masked`."""
        if not tau > 0:
            raise ValueError(f"attack radius tau must be > 0, got {tau}")
        if active is None:
            delta = self.run(model, x, y, tau, generator=generator)
        else:
            delta = self.run_masked(model, x, y, tau, active, generator=generator)
        # The budget is enforced here, once, whatever `run` did (float round-off included).
        return self.norm.project(delta, tau)

    def run_masked(
        self, model: Learner, x: Tensor, y: Tensor, tau: float, active: Tensor, *, generator: torch.Generator
    ) -> Tensor:
        """:meth:`run` on the rows where ``active``, zero elsewhere.

        This default attacks the subset, so its random draws depend on which rows are active;
        :class:`ConvergedPGD`, :class:`PGD` and :class:`NoiseAttack` override it to draw for
        every row, so the active rows get the same draws whatever the mask (paired across
        models; :attr:`masks_paired`).
        """
        delta = torch.zeros_like(x)
        idx = active.nonzero().flatten()
        if idx.numel():
            delta[idx] = self.run(model, x[idx], y[idx], tau, generator=generator)
        return delta

    @abstractmethod
    def run(
        self, model: Learner, x: Tensor, y: Tensor, tau: float, *, generator: torch.Generator
    ) -> Tensor:
        """Return a perturbation of shape ``x.shape``; :meth:`__call__` projects it."""

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> Attack:
        """The attacker's factory in :data:`purify.registry.ATTACKERS`: build it for ``norm``
        from the knobs it reads in ``options`` (this default reads none)."""
        return cls(norm)


@dataclass(frozen=True)
class AttackOptions:
    """The knobs of every attacker, each read by the factories that need it.

    ``pgd_*`` configure ``"pgd"``; ``steps``, ``starts``, ``rel_step`` and ``schedule``
    configure ``"converged_pgd"`` (``rel_step`` also the polish of ``"shrink"``, which needs
    the ``dictionary`` M (d, D) and the ``teacher`` w* (D,)); ``dense_direction`` is ``M w*``
    (d,), needed by ``"dense"`` and by the dense start of ``"converged_pgd"``.
    """

    dense_direction: Tensor | None = None
    pgd_steps: int = 10
    pgd_rel_step: float | None = None
    pgd_restarts: int = 1
    pgd_random_start: bool = True
    fgm_zero_tol: float = 1e-8
    steps: int | tuple[int, ...] = 100
    starts: tuple[str, ...] = ("zero", "dense", "random", "random")
    rel_step: float = 0.3
    schedule: str = "cosine"
    dictionary: Tensor | None = None
    teacher: Tensor | None = None

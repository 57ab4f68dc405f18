"""Perturbation algorithms ``A(f, x, y, r)`` with ``‖δ‖_p ≤ τ`` (Allen-Zhu & Li, Def. 4.2).

* :mod:`purify.attacks.base` — the ``ℓ_p`` geometry :class:`Norm`, the :class:`Attack` base
  class (its final ``__call__`` enforces the budget once) and :class:`AttackOptions`;
* :mod:`purify.attacks.gradient` — the cheap attackers: FGM, PGD, dense, noise;
* :mod:`purify.attacks.converged` — :class:`ConvergedPGD` and :func:`attack_strength`;
* :mod:`purify.attacks.flip_step` — :func:`single_step`, the smallest sign-flipping step;
* :mod:`purify.attacks.make` — :func:`make_attack`, by name.

Every attacker has one entry in :data:`purify.registry.ATTACKERS` (its factory, its tier,
whether it can train, a one-line summary).  Two tiers: :data:`ATTACKS` are the cheap attacks of
the per-snapshot evaluation grid; :data:`STRONG_ATTACKS` (:class:`ConvergedPGD`; the
structure-aware ``"shrink"`` of :mod:`purify.structured_attacks`) are meant for the examples
the cheap ones did not break.
"""

from purify.attacks.base import NORMS, Attack, AttackOptions, Norm
from purify.attacks.converged import (
    SCHEDULES,
    START_KINDS,
    ConvergedPGD,
    attack_strength,
    descend,
    strength_starts,
)
from purify.attacks.flip_step import SingleStep, single_step
from purify.attacks.gradient import FGM, PGD, DenseAttack, NoiseAttack
from purify.attacks.make import make_attack
from purify.registry import ATTACKERS

#: the cheap attacks of the evaluation grid (every snapshot, every radius)
ATTACKS = ATTACKERS.where(tier="cheap")
#: the costly attacks :func:`make_attack` also builds, for the survivors of the cheap ones
STRONG_ATTACKS = ATTACKERS.where(tier="strong")
#: every attacker, cheap then strong
ALL_ATTACKS = ATTACKERS
#: the attackers adversarial training may use
TRAINING_ATTACKS = ATTACKERS.where(trains=True)

__all__ = [
    "ALL_ATTACKS", "ATTACKS", "FGM", "NORMS", "PGD", "SCHEDULES", "START_KINDS", "STRONG_ATTACKS",
    "TRAINING_ATTACKS", "Attack", "AttackOptions", "ConvergedPGD", "DenseAttack", "NoiseAttack", "Norm",
    "SingleStep", "attack_strength", "descend", "make_attack", "single_step", "strength_starts",
]

"""Build an attacker by name, through :data:`purify.registry.ATTACKERS`."""

from __future__ import annotations

from typing import Any

from purify.attacks.base import Attack, AttackOptions
from purify.registry import ATTACKERS, load


def make_attack(name: str, norm: str, **options: Any) -> Attack:
    """Build attacker ``name`` (one of :data:`purify.registry.ATTACKERS`) for ``norm`` (one of
    :data:`purify.attacks.NORMS`).

    ``options`` are fields of :class:`AttackOptions` (their defaults where left out); each
    attacker reads the ones it needs, e.g. ``pgd_steps`` for ``"pgd"``, ``dictionary`` and
    ``teacher`` for ``"shrink"``.  Raises ``ValueError`` for an unknown name or norm, or an
    attacker missing what it needs.
    """
    factory = load(ATTACKERS.entry(name).factory)
    return factory(norm, AttackOptions(**options))

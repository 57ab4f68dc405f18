"""Clean and robust accuracy (Allen-Zhu & Li, Def. 4.1 and §2 "Clean and robust error").

Robust accuracy against one attacker is ``Pr[sign f(x + A(x)) = y]``; the *strongest*
robust accuracy counts an example as robust only if every attacker fails on it, a lower
bound on the true robust error ``Pr[∃ ‖δ‖_p ≤ τ: sign f(x + δ) ≠ y]`` that is as tight as
the attackers are strong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from purify.attacks import Attack
from purify.learners.base import Learner


@dataclass
class Evaluation:
    """Accuracies on one evaluation set.

    ``robust[norm]`` has shape ``(n_attacks, n_radii)`` in the order of ``attacks[norm]``;
    ``strongest[norm]`` has shape ``(n_radii,)``.
    """

    clean: float
    robust: dict[str, np.ndarray]
    strongest: dict[str, np.ndarray]


def sign_correct(out: Tensor, y: Tensor) -> Tensor:
    """Boolean ``(n,)``: ``sign f = y`` with ``sign(0) = +1`` (the labels' convention, docs/theory.md §1)."""
    return torch.where(out >= 0, 1.0, -1.0).to(y.dtype) == y


def accuracy(model: Learner, x: Tensor, y: Tensor) -> float:
    """``Pr[sign f(x) = y]`` with ``sign(0) = +1``."""
    return float(sign_correct(model.forward(x), y).float().mean())


def robust_correct(
    model: Learner, x: Tensor, y: Tensor, attack: Attack, tau: float, *, generator: torch.Generator
) -> Tensor:
    """Boolean ``(n,)``: does ``sign f(x + A(x))`` still equal ``y``?"""
    delta = attack(model, x, y, tau, generator=generator)
    return sign_correct(model.forward(x + delta), y)


def evaluate(
    model: Learner,
    x: Tensor,
    y: Tensor,
    *,
    attacks: Mapping[str, Mapping[str, Attack]],
    taus: Mapping[str, Sequence[float]],
    generator: torch.Generator,
    chunk: int = 1024,
) -> Evaluation:
    """Clean accuracy, robust accuracy per ``(norm, attacker, τ)`` and strongest per ``(norm, τ)``.

    ``attacks[norm][name]`` is an attacker for that norm and ``taus[norm]`` its radii.  The
    evaluation set is processed in chunks of ``chunk`` examples to bound memory.
    """
    n = x.shape[0]
    clean_ok = sign_correct(torch.cat([model.forward(x[i : i + chunk]) for i in range(0, n, chunk)]), y)
    robust, strongest = {}, {}
    for norm, by_name in attacks.items():
        radii = list(taus[norm])
        correct = torch.zeros(len(by_name), len(radii), n, dtype=torch.bool, device=x.device)
        for a, attack in enumerate(by_name.values()):
            for r, tau in enumerate(radii):
                for i in range(0, n, chunk):
                    sl = slice(i, i + chunk)
                    ok = robust_correct(model, x[sl], y[sl], attack, tau, generator=generator)
                    # A misclassified clean point is not robust, whatever the attack did.
                    correct[a, r, sl] = ok & clean_ok[sl]
        robust[norm] = correct.float().mean(dim=2).cpu().numpy()
        strongest[norm] = correct.all(dim=0).float().mean(dim=1).cpu().numpy()
    return Evaluation(float(clean_ok.float().mean()), robust, strongest)

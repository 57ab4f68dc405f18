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

from purify.attacks import Attack, make_attack
from purify.config import RunConfig
from purify.data import SparseCodingProblem
from purify.learners.base import Learner
from purify.norms import sign


@dataclass
class Evaluation:
    """Accuracies on one evaluation set.

    ``robust[norm]`` has shape ``(n_attacks, n_radii)`` in the order of ``attacks[norm]``;
    ``strongest[norm]`` has shape ``(n_radii,)``.
    """

    clean: float
    robust: dict[str, np.ndarray]
    strongest: dict[str, np.ndarray]


def make_attacks(config: RunConfig, problem: SparseCodingProblem) -> dict[str, dict[str, Attack]]:
    """``attacks[norm][name]`` for the evaluation grid of ``config.eval`` (the dense direction
    ``M w*`` of ``problem``, on the device its dictionary lives on)."""
    ev = config.eval
    return {
        norm: {
            name: make_attack(name, norm, dense_direction=problem.dense_direction(),
                              pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                              pgd_restarts=ev.pgd_restarts)
            for name in ev.attacks
        }
        for norm in ev.norms
    }


def sign_correct(out: Tensor, y: Tensor) -> Tensor:
    """Boolean ``(n,)``: ``sign f = y`` with ``sign(0) = +1`` (the labels' convention)."""
    return sign(out) == y


def accuracy(model: Learner, x: Tensor, y: Tensor) -> float:
    """``Pr[sign f(x) = y]`` with ``sign(0) = +1``."""
    return float(sign_correct(model.forward(x), y).float().mean())


def robust_correct(
    model: Learner, x: Tensor, y: Tensor, attack: Attack, tau: float, *, generator: torch.Generator,
    active: Tensor | None = None,
) -> Tensor:
    """Boolean ``(n,)``: does ``sign f(x + A(x))`` still equal ``y``?  With a mask ``active``,
    only those rows are attacked and scored (``False`` elsewhere)."""
    if active is None:
        delta = attack(model, x, y, tau, generator=generator)
        return sign_correct(model.forward(x + delta), y)
    delta = attack(model, x, y, tau, generator=generator, active=active)
    ok = torch.zeros_like(active)
    rows = active.nonzero().flatten()
    if rows.numel():
        ok[rows] = sign_correct(model.forward(x[rows] + delta[rows]), y[rows])
    return ok


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
    evaluation set is processed in chunks of ``chunk`` examples to bound memory.  An attack
    whose masked run keeps every row's draws (:attr:`Attack.masks_paired`) attacks only the
    examples classified correctly clean, with the results of attacking them all.
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
                    # A misclassified clean point is not robust, whatever the attack did: an
                    # attack whose masked run keeps every row's draws attacks only the others.
                    active = clean_ok[sl] if attack.masks_paired else None
                    ok = robust_correct(model, x[sl], y[sl], attack, tau, generator=generator, active=active)
                    correct[a, r, sl] = ok & clean_ok[sl]
        robust[norm] = correct.float().mean(dim=2).cpu().numpy()
        strongest[norm] = correct.all(dim=0).float().mean(dim=1).cpu().numpy()
    return Evaluation(float(clean_ok.float().mean()), robust, strongest)


# --------------------------------------------------------------------------------------
# End-of-phase evaluation: per-example results of an attack cascade
# --------------------------------------------------------------------------------------


@dataclass
class CascadeResult:
    """Per-example outcome of :func:`cascade`, each of shape ``(n,)`` (``(n_all, n)`` for
    ``each_correct``).

    ``broken_by[j]`` is the index (in the cascade's order) of the first attack that flipped
    example ``j``, ``-1`` if none did — including examples misclassified clean, which are
    not attacked (``clean_correct`` tells them apart).  ``each_correct[a]`` is the robust
    outcome under attack ``a`` alone, for the attacks that ran on every example.
    ``certified`` (set by the end-of-phase evaluation) marks the examples proven robust by
    :func:`purify.certificate.certified`: a lower bound where ``robust_correct`` is an upper one.
    """

    clean_correct: np.ndarray
    robust_correct: np.ndarray
    broken_by: np.ndarray
    each_correct: np.ndarray
    n_attacks: int  # attacks run so far (the next attack's index in ``broken_by``)
    certified: np.ndarray | None = None  # proven robust over the whole ball, where computed


def clean_correct(model: Learner, x: Tensor, y: Tensor, *, chunk: int = 1024) -> Tensor:
    """Boolean ``(n,)``: ``sign f(x_j) = y_j``, computed ``chunk`` examples at a time."""
    n = x.shape[0]
    return torch.cat([sign_correct(model.forward(x[i : i + chunk]), y[i : i + chunk])
                      for i in range(0, n, chunk)])


def cascade(
    model: Learner,
    x: Tensor,
    y: Tensor,
    tau: float,
    attacks: Sequence[Attack],
    *,
    generators: Sequence[torch.Generator],
    attack_all: int = 0,
    prior: CascadeResult | None = None,
    proven: Tensor | None = None,
    chunk: int = 1024,
) -> CascadeResult:
    """Robust iff clean-correct and no attack of the cascade flips it (Def. 4.1, per example).

    The attacks run in order, each only on the examples every earlier attack left correct
    (``active`` mask, chunk by chunk), so the expensive ones (converged PGD, shrink, transfer)
    see only the survivors of the cheap ones; robust accuracy is therefore the per-example
    minimum over all attacks, never above that of any single attack on the same examples.
    ``attacks[a]`` draws from ``generators[a]``.  The first ``attack_all`` attacks run on
    **every** example in fixed chunks instead, so with generators seeded alike their random
    draws (PGD starts, noise) are the same for every model evaluated: two models' outcomes
    are then paired example by example, through the examples and through the draws.  (Where
    the attack's masked run draws for every row, :attr:`Attack.masks_paired`, the examples
    misclassified clean are left out of that computation: their outcome is fixed, and the
    others get the bits a call on every example gives them.)  The
    survivors' attacks are paired the same way where the attack draws for every row of a
    masked call (:attr:`Attack.masks_paired`: converged PGD, PGD, noise, transfers built on
    them).

    ``prior`` continues an earlier cascade on the same examples: its survivors are attacked
    by ``attacks``, numbered in ``broken_by`` after the prior's attacks; the result is the one
    the concatenated cascade would give.

    ``proven`` (boolean ``(n,)``) marks examples proven robust over the whole ball
    (:func:`purify.certificate.certified`): the attacks after the first ``attack_all`` leave
    them out, since none can flip them; the result is the one attacking them would give.
    """
    if len(generators) != len(attacks):
        raise ValueError(f"need one generator per attack, got {len(generators)} for {len(attacks)}")
    n = x.shape[0]
    if prior is None:
        ok = clean_correct(model, x, y, chunk=chunk)
        alive = ok.clone()
        broken_by = torch.full((n,), -1, dtype=torch.long, device=x.device)
        offset, each = 0, []
    else:
        ok = torch.as_tensor(prior.clean_correct, device=x.device)
        alive = torch.as_tensor(prior.robust_correct, device=x.device).clone()
        broken_by = torch.as_tensor(prior.broken_by, device=x.device).clone()
        offset, each = prior.n_attacks, list(prior.each_correct)
    for a, (attack, g) in enumerate(zip(attacks, generators, strict=True)):
        everywhere = a < attack_all
        correct = ok.clone()
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            # Every chunk is attacked, even one without survivors: an attack that draws for
            # every row of its input (ConvergedPGD with `active`) then gives a row the same
            # draws whichever rows survive, so models stay paired through their survivors.
            # An attack that runs everywhere skips the examples misclassified clean where its
            # masked run keeps every row's draws (`masks_paired`): their outcome is fixed.
            if everywhere:
                active = ok[sl] if attack.masks_paired else None
            else:
                active = alive[sl] if proven is None else alive[sl] & ~proven[sl]
            delta = attack(model, x[sl], y[sl], tau, generator=g, active=active)
            rows = torch.arange(i, min(i + chunk, n), device=x.device)
            if active is not None:
                rows = rows[active]
            if rows.numel() == 0:
                continue
            flipped = ~sign_correct(model.forward(x[rows] + delta[rows - i]), y[rows])
            correct[rows[flipped]] = False
            newly = rows[flipped & alive[rows]]
            broken_by[newly] = offset + a
            alive[newly] = False
        if everywhere:
            each.append(correct.cpu().numpy())
    return CascadeResult(ok.cpu().numpy(), alive.cpu().numpy(), broken_by.cpu().numpy(),
                         np.array(each, dtype=bool).reshape(len(each), n), offset + len(attacks))


def standard_error(values: np.ndarray) -> float:
    """``sd(v)/√n`` with the unbiased (``ddof = 1``) sd: the SE of ``mean(v)``; NaN for ``n < 2``.

    For 0/1 outcomes this is ``√(p(1−p)/(n−1))``, the binomial SE of an accuracy.
    """
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size >= 2 else float("nan")


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``{"value": mean(a − b), "se": sd(a − b)/√n}`` for per-example outcomes of two models on
    the same examples: the SE of a paired difference, smaller than the unpaired
    ``√(SE_a² + SE_b²)`` when the two models tend to fail on the same examples."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.shape != np.shape(b) or diff.ndim != 1:
        raise ValueError(f"paired outcomes must be two vectors of one length, got {np.shape(a)}, {np.shape(b)}")
    return {"value": float(diff.mean()), "se": standard_error(diff)}

"""What the experiments comparing learners on one sparse-coding problem share.

The symmetric network of Allen-Zhu & Li §4 trained in memory by :class:`purify.trainer.Trainer`
(the steps of ``purify simulate``, without a store), the evaluation attackers, fresh-example
samplers for :func:`purify.fit.fit`, and the exact robust accuracy of a linear model.  Used by
:mod:`purify.experiments.lazy_vs_feature` and :mod:`purify.experiments.ntk_lower_bound`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from purify.attacks import Attack, Norm, make_attack
from purify.config import RunConfig
from purify.data import SparseCodingProblem
from purify.learners import LinearModel, SymmetricReLUNet
from purify.trainer import Trainer

ATTACKS = ("fgm", "pgd", "dense")


@dataclass
class FeatureNets:
    """The symmetric network of one run at init, end of clean and end of adversarial training."""

    trainer: Trainer  # the problem and held-out set of the run, after its last step
    init: SymmetricReLUNet
    clean: SymmetricReLUNet
    robust: SymmetricReLUNet
    clean_train_accuracy: float  # mean batch accuracy over the last 5 % of clean steps
    adv_train_accuracy: float  # same over adversarial training (on perturbed batches)


def train_feature_nets(config: RunConfig, *, bar, desc: str = "feature net") -> FeatureNets:
    """Clean then adversarial training of ``config`` (resolved here), without writing a store.

    The steps are exactly those of ``purify simulate`` with the same config — same trainer,
    hence the same data stream and bias policy — minus the evaluations, snapshots and
    checkpoints, which the experiments do on their own grid.  ``bar(iterable, total=, desc=)``
    is :meth:`~purify.experiments.framework.Context.bar`.
    """
    trainer = Trainer(config.resolve())
    tl = trainer.timeline
    init = trainer.network()
    clean_net = init if tl.clean_steps == 0 else None
    clean_acc, adv_acc = [], []
    tail_clean, tail_adv = max(1, tl.clean_steps // 20), max(1, tl.adv_steps // 20)
    for _ in bar(range(tl.total), total=tl.total, desc=desc):
        if trainer.t == tl.clean_steps:
            clean_net = trainer.network()
        clean = trainer.t < tl.clean_steps
        res = trainer.step()
        if not torch.isfinite(trainer.W).all():
            raise RuntimeError(f"{desc}: weights diverged at step {trainer.t}")
        if clean and trainer.t > tl.clean_steps - tail_clean:
            clean_acc.append(res.accuracy)
        elif not clean and trainer.t > tl.total - tail_adv:
            adv_acc.append(res.accuracy)
    if clean_net is None:  # no adversarial steps: the loop ended at the end of clean training
        clean_net = trainer.network()
    return FeatureNets(trainer, init, clean_net, trainer.network(), float(np.mean(clean_acc or [np.nan])),
                       float(np.mean(adv_acc or [np.nan])))


def make_attacks(problem: SparseCodingProblem, norms: Sequence[str], *, pgd_steps: int,
                 device) -> dict[str, dict[str, Attack]]:
    """``attacks[norm][name]`` for FGM, PGD (random start, step ``2.5τ/steps``) and dense."""
    direction = problem.dense_direction().to(device)
    return {norm: {a: make_attack(a, norm, dense_direction=direction, pgd_steps=pgd_steps) for a in ATTACKS}
            for norm in norms}


def linear_exact_accuracy(model: LinearModel, x: Tensor, y: Tensor, norm: str, tau: float) -> float:
    """Exact robust accuracy of ``f = <v, x> + c`` in the ``ℓ_p`` ball: ``Pr[y f(x) > τ ‖v‖_q]``.

    The worst perturbation lowers the margin by exactly ``τ ‖v‖_q`` (Hölder, tight), so this is
    the true robust accuracy, which the strongest attacker must match on a linear model.
    """
    dual = Norm(norm).dual_norm(model.v[None])[0]
    return float(((y * model.forward(x)) > tau * dual).to(torch.float64).mean())


def relative_change(W: Tensor, W0: Tensor) -> float:
    """``‖W − W₀‖_F / ‖W₀‖_F``."""
    return float((W - W0).norm() / W0.norm())


def sampler(problem: SparseCodingProblem, generator: torch.Generator, device):
    """``sample(n, _) -> (x, y)`` of fresh examples, drawn on the CPU from ``generator``.

    The data generator is the closure's own (CPU) stream, so :func:`purify.fit.fit`'s generator
    — which seeds its attacker — may live on the experiment's device.
    """

    def sample(n: int, _unused: torch.Generator) -> tuple[Tensor, Tensor]:
        batch = problem.sample(n, generator=generator)
        return batch.x.to(device), batch.y.to(device)

    return sample


def cpu_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def typical_norm(problem: SparseCodingProblem) -> float:
    """``√E‖x‖²`` of the data (``E‖z‖²`` plus the Gaussian noise ``σ_x²``; spikes are ≤ it)."""
    return math.sqrt(problem.expected_sq_norm_z() + problem.sigma_x**2)

"""Clean training (Algorithm 1) and adversarial training (Algorithm 2) of Allen-Zhu & Li.

A run is one timeline of global steps ``0 … T_c + T_a``: clean steps ``[0, T_c)`` then
adversarial steps ``[T_c, T_c + T_a)``.  :class:`Timeline` says where evaluations, weight
snapshots and log points fall; :func:`train_step` is one (S)GD step of either phase.  The
orchestration (store, checkpoints, progress) lives in :mod:`purify.simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from purify.attacks import Attack
from purify.config import RunConfig
from purify.data import Batch
from purify.learners.symmetric import StepResult, SymmetricReLUNet

CLEAN, ADVERSARIAL = "clean", "adversarial"


class DivergenceError(RuntimeError):
    """Training produced NaN or inf; the message names the step and the likely cause."""


@dataclass(frozen=True)
class Timeline:
    """Global steps of evaluation/snapshot points and of log points, with their phases.

    Evaluations (each with a weight snapshot) are log-spaced over clean training (the lottery
    phase is short and early) and evenly spaced over adversarial training; step 0 is the
    initialization and ``T_c`` the end of clean training.
    """

    clean_steps: int
    adv_steps: int
    eval_steps: np.ndarray  # (n_eval,) int64, strictly increasing
    log_steps: np.ndarray  # (n_log,) int64, strictly increasing, all ≥ 1

    @classmethod
    def from_config(cls, config: RunConfig) -> Timeline:
        tr = config.train
        assert tr.clean_steps is not None and tr.adv_steps is not None, "resolve() first"
        tc, ta = tr.clean_steps, tr.adv_steps
        clean = {0, tc}
        if tc > 1 and tr.clean_snapshots > 2:
            # Nothing moves in the first ~T/100 steps; log-spacing from there keeps the
            # lottery phase resolved without spending evaluations on identical states.
            first = max(1.0, tc / 100)
            grid = np.geomspace(first, tc, tr.clean_snapshots - 1).round().astype(int)
            clean |= set(grid.tolist())
        adv = set()
        if ta > 0:
            adv = {tc + int(round(ta * j / tr.adv_snapshots)) for j in range(1, tr.adv_snapshots + 1)}
        evals = np.array(sorted(clean | adv), dtype=np.int64)

        def log_grid(start: int, n: int) -> set[int]:
            if n == 0:
                return set()
            every = max(1, n // tr.log_points)
            return set(range(start + every, start + n + 1, every)) | {start + n}

        logs = np.array(sorted(log_grid(0, tc) | log_grid(tc, ta)), dtype=np.int64)
        return cls(tc, ta, evals, logs)

    @property
    def total(self) -> int:
        return self.clean_steps + self.adv_steps

    def phase(self, step: int | np.ndarray) -> np.ndarray:
        """Phase of the state *after* ``step`` steps: the end of clean training is ``clean``."""
        return np.where(np.asarray(step) <= self.clean_steps, CLEAN, ADVERSARIAL)


def train_step(
    net: SymmetricReLUNet,
    batch: Batch,
    *,
    lr: float,
    lam: float,
    noisy: bool,
    rho_generator: torch.Generator,
    attack: Attack | None = None,
    tau: float = 0.0,
    attack_generator: torch.Generator | None = None,
) -> tuple[Tensor, StepResult]:
    """One gradient step ``W ← W − η ∇_W Obj`` on a batch; returns the new ``W`` and stats.

    With an ``attack`` this is Algorithm 2: every ``x_j`` is replaced by ``x_j + A(f, x_j, y_j)``
    (the attack sees the smoothed network, footnote 9) before the step.  ``net.W`` is not
    modified in place, so a caller can keep the previous weights.
    """
    x = batch.x
    if attack is not None:
        assert attack_generator is not None
        x = x + attack(net, x, batch.y, tau, generator=attack_generator)
    result = net.loss_and_grad(x, batch.y, lam=lam, noisy=noisy, generator=rho_generator)
    if not math.isfinite(result.loss):
        raise DivergenceError(
            f"the loss became {result.loss}; the learning rate lr={lr} is likely too large"
        )
    return net.W - lr * result.grad, result

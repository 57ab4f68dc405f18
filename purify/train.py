"""Clean training (Algorithm 1) and adversarial training (Algorithm 2) of Allen-Zhu & Li.

A run is one timeline of global steps ``0 … T_c + T_a``: clean steps ``[0, T_c)`` then
adversarial steps ``[T_c, T_c + T_a)``.  :class:`Timeline` says where evaluations, weight
snapshots and log points fall; :func:`train_step` is one (S)GD step of either phase.  A
:class:`~purify.trainer.Trainer` strings the steps together; :mod:`purify.simulate` records them.
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
    """Training diverged (NaN/inf, or loss or weights past `DivergenceBound`); the message
    names the step and the likely cause."""


#: Output magnitude no healthy run reaches: the logistic loss ``log(1 + e^{-y f})`` stops
#: asking for larger margins near ``|f| ≈ 100`` (its float32 gradient underflows there), and
#: this is a hundred times that.
OUTPUT_LIMIT = 1e4

#: Mean loss (over a log window) no healthy run reaches: ``log 2`` is the loss at init, and
#: ``log 2 + 100`` means outputs of magnitude > 100 on the wrong side, on average.
LOSS_LIMIT = math.log(2.0) + 100.0


@dataclass(frozen=True)
class DivergenceBound:
    """When a run has diverged although every number is still finite, and why.

    A run diverges when, at a log point, the mean training loss of the window exceeds
    `LOSS_LIMIT`, or a hidden weight vector is so long that one neuron alone would give a
    typical input an output beyond `OUTPUT_LIMIT`: ``max_i ‖w_i‖₂ > OUTPUT_LIMIT / r`` with
    ``r`` the root-mean-square input norm (or beyond a hundred times the init's
    ``σ₀ (√d + 3)``, when the user chose a larger init). Healthy runs stay far below both:
    at the defaults (d = 300, seed 555) ``max_i ‖w_i‖ ≈ 1.5`` (limit ≈ 6·10³) and the
    adversarial loss ≤ 1.8.

    Parameters
    ----------
    input_norm : float
        ``r = sqrt(E ‖x‖²)`` of the data (a held-out estimate).
    weight_limit, loss_limit : float
        The two bounds.
    """

    input_norm: float
    weight_limit: float
    loss_limit: float = LOSS_LIMIT

    @classmethod
    def from_config(cls, config: RunConfig, input_norm: float) -> DivergenceBound:
        net = config.net
        assert net.sigma0 is not None, "resolve() first"
        init = net.sigma0 * (math.sqrt(config.data.d) + 3.0)
        return cls(input_norm, max(OUTPUT_LIMIT / max(input_norm, 1e-12), 100.0 * init))

    def check(self, W: Tensor, loss: float, *, clean: bool, config: RunConfig) -> None:
        """Raise `DivergenceError` if the weights ``W`` (m, d) or the window's mean `loss` are
        past the bounds (the caller adds the step)."""
        if not math.isfinite(loss) or loss > self.loss_limit:
            raise DivergenceError(f"the mean training loss reached {loss:.3g} (healthy runs stay "
                                  f"below {self.loss_limit:.3g}); {self.cause(clean, config)}")
        longest = float(W.norm(dim=1).max())
        if not longest <= self.weight_limit:  # NaN fails too
            raise DivergenceError(f"a weight vector reached norm {longest:.3g} (beyond "
                                  f"{self.weight_limit:.3g}, where one neuron alone would give an "
                                  f"output of {OUTPUT_LIMIT:g}); {self.cause(clean, config)}")

    def cause(self, clean: bool, config: RunConfig) -> str:
        """The likely cause among the options of the phase that diverged."""
        tr, net, d = config.train, config.net, config.data.d
        if clean:
            lam = net.lam or 0.0
            if lam * tr.lr >= 1.0:
                return (f"the regularizer step is unstable: lam={lam:g} times lr={tr.lr:g} is >= 1; "
                        "lower --lam or --lr")
            return f"the learning rate lr={tr.lr:g} is likely too large (--lr)"
        assert tr.adv_tau is not None
        radius = tr.adv_tau * (math.sqrt(d) if tr.adv_norm == "linf" else 1.0)  # ℓ₂ size of δ
        if radius > self.input_norm:
            return (f"the training radius adv_tau={tr.adv_tau:g} ({tr.adv_norm}) is larger than the "
                    f"inputs themselves (norm ≈ {self.input_norm:.3g}); lower --adv-tau (or --tau, "
                    "which sets it by default)")
        return f"the adversarial learning rate adv_lr={tr.adv_lr:g} is likely too large (--adv-lr)"


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
        raise DivergenceError(f"the loss became {result.loss}")
    return gradient_step(net.W, result.grad, lr), result


def gradient_step(W: Tensor, grad: Tensor, lr: float) -> Tensor:
    """``W − lr·grad`` as a new tensor, the same bits as that expression.

    For ``lr`` a power of two (both defaults: 1 clean, 0.5 adversarial) ``lr·grad`` is exact,
    so the fused ``torch.sub(W, grad, alpha=lr)`` (an FMA on the CPU: one rounding) rounds
    the same value once, as the two-pass form does; it reads and writes ``W``'s size once
    instead of twice (0.45 against 0.9 ms for ``2000 × 1000`` on 2 cores).  Any other ``lr``
    takes the two passes, whose double rounding the FMA would not repeat.  (Only an entry
    whose ``lr·grad`` is subnormal, ``< 1.2e-38``, next to a weight within a few units of
    float32's last place of it could come out otherwise.)
    """
    if math.frexp(lr)[0] == 0.5:
        return torch.sub(W, grad, alpha=lr)
    return W - lr * grad

"""SGD for the comparison learners: clean, adversarial, and constrained to a ball around init.

One loop serves the lazy net, its linearization, the NTK model, linear models and random
networks — any :class:`~purify.learners.base.Trainable` (``loss_grad_and_output(x, y) ->
(loss, grads, f(x))`` and ``params()``, updated in place).  It covers

* clean SGD on the logistic loss (Wang et al. 2022 §5.1: lr 0.1);
* adversarial training: every batch is replaced by ``x + A(f, x, y, τ)`` before the step
  (Allen-Zhu & Li Algorithm 2; Gao et al. 2019 §4's surrogate loss ``L_A``);
* the two lazy-regime controls of Wang et al.: ``constraint="stop"`` ends training at the
  first step that leaves ``B_{2,∞}(W₀, radius)`` (§5.1), ``constraint="project"`` projects
  onto it every ``project_every`` steps (Appendix Algorithm 1, projected adversarial
  training with a PGD inner loop: pass ``make_attack("pgd", "l2", pgd_steps=100,
  pgd_rel_step=0.025)`` for their ``α = 2.5R/100``, ``T₂ = 100``).  ``ball="frobenius"``
  uses Gao et al.'s ``B(R) = {‖W − W₀‖_F ≤ R}`` instead.

Algorithm 1 of Wang et al. perturbs the whole training set once per epoch and projects once
per epoch; here the attack sees the current weights at every batch (the usual PGD adversarial
training) and the projection period is ``project_every`` (set it to the steps per epoch to
match them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from purify.attacks import Attack
from purify.config import ConfigError
from purify.evaluate import sign_correct
from purify.learners.base import BallTrainable, Trainable
from purify.learners.lazy import BALLS
from purify.train import DivergenceError

CONSTRAINTS = (None, "project", "stop")

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of :func:`fit`."""

    steps: int  # SGD steps
    lr: float  # learning rate (Wang et al. §5.1: 0.1; Algorithm 1: β = 0.01)
    batch: int  # examples per step; >= the training-set size means full-batch GD
    constraint: str | None = None  # None | "project" | "stop"
    radius: float | None = None  # ball radius around init (C₀/√m in the lazy regime)
    ball: str = "rows"  # "rows": B_{2,∞}(W₀, radius); "frobenius": ‖W − W₀‖_F ≤ radius
    project_every: int = 1  # steps between projections (and always after the last step)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"invalid {name}={getattr(self, name)!r}: {allowed}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        check(is_int(self.steps) and self.steps >= 0, "steps", "must be an integer >= 0")
        check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr",
              "must be > 0")
        check(is_int(self.batch) and self.batch >= 1, "batch", "must be an integer >= 1")
        check(self.constraint in CONSTRAINTS, "constraint", "allowed: None, project, stop")
        check(self.ball in BALLS, "ball", f"allowed: {', '.join(BALLS)}")
        check(is_int(self.project_every) and self.project_every >= 1, "project_every",
              "must be an integer >= 1")
        if self.constraint is not None:
            check(self.radius is not None and math.isfinite(self.radius) and self.radius >= 0,
                  "radius", f"constraint={self.constraint!r} needs a finite radius >= 0")


@dataclass
class FitHistory:
    """Per-step record of :func:`fit`; arrays have one entry per step taken.

    ``loss[t]`` and ``accuracy[t]`` are measured on the batch of step ``t`` (perturbed, when
    training adversarially) with the weights *before* its update; ``max_deviation[t]``
    (``max_s ‖w_s − w_{s,0}‖``) and ``fro_deviation[t]`` (``‖W − W₀‖_F``) *after* it (and after
    a projection), NaN for models without an initialization to compare to.  With
    ``constraint="stop"``, ``stopped_at`` is the step whose update left the ball: its
    deviation is the last entry and the model is returned with the weights before it.
    """

    loss: np.ndarray
    accuracy: np.ndarray
    max_deviation: np.ndarray
    fro_deviation: np.ndarray
    stopped_at: int | None = None
    stop_reason: str | None = None  # None | "ball" | "callback"

    @property
    def steps(self) -> int:
        return len(self.loss)


class _Batches:
    """Fresh samples from a sampler, or epochs of random permutations of a fixed set."""

    def __init__(self, sample: Sampler | tuple[Tensor, Tensor], batch: int, generator: torch.Generator):
        self.sample, self.batch, self.generator = sample, batch, generator
        self.order: Tensor | None = None
        self.cursor = 0

    def next(self) -> tuple[Tensor, Tensor]:
        if callable(self.sample):
            return self.sample(self.batch, self.generator)
        x, y = self.sample
        n = x.shape[0]
        if self.batch >= n:
            return x, y
        if self.order is None or self.cursor + self.batch > n:
            # Drop the permutation's last n mod batch examples: they come first as often as any.
            self.order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(x.device)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + self.batch]
        self.cursor += self.batch
        return x[idx], y[idx]


def _finite(p: Tensor) -> bool:
    """Every entry of ``p`` is finite; one reduction, the elementwise test only if the sum is not."""
    return math.isfinite(float(p.sum())) or bool(torch.isfinite(p).all())


def fit(
    model: Trainable,
    sample: Sampler | tuple[Tensor, Tensor],
    config: FitConfig,
    *,
    attack: Attack | None = None,
    tau: float = 0.0,
    generator: torch.Generator,
    progress: bool = False,
    callback: Callable[[int, object], bool | None] | None = None,
) -> FitHistory:
    """Train ``model`` in place by SGD on the mean logistic loss; return its :class:`FitHistory`.

    Parameters
    ----------
    model : a :class:`~purify.learners.base.Trainable` learner; with a constraint a
        :class:`~purify.learners.base.BallTrainable` one
        (:class:`~purify.learners.lazy.LazyReLUNet`, :class:`~purify.learners.ntk.NTKModel`).
    sample : ``sample(n, generator) -> (x (n, d), y (n,))`` for fresh batches (online SGD), or
        a fixed training set ``(x, y)`` visited in random order, epoch after epoch.
    config : steps, learning rate, batch size and the ball constraint.
    attack, tau : adversarial training against ``attack`` at radius ``tau`` (clean if None).
    generator : drives batch order and sampling; the attack gets its own stream drawn from it.
    progress : show a tqdm bar.
    callback : ``callback(step, model)`` after every completed step; returning True stops.

    Raises
    ------
    DivergenceError : the loss or a weight became NaN or infinite; names the step.
    """
    constraint = config.constraint
    if constraint is not None and not isinstance(model, BallTrainable):
        raise ValueError(f"constraint={constraint!r} needs a model with deviation() and project_()")
    if attack is not None and not tau > 0:
        raise ValueError(f"adversarial training needs tau > 0, got {tau}")
    attack_generator = None
    if attack is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        attack_generator = torch.Generator(device=generator.device)
        attack_generator.manual_seed(seed)
    batches = _Batches(sample, config.batch, generator)
    params = model.params()
    saved = [torch.empty_like(p) for p in params] if constraint == "stop" else []
    # Reused gradient buffers: a fresh (m, d) tensor per step costs as much as the step's matmuls.
    buffers = model.gradient_buffers() if isinstance(model, Trainable) else None
    step_kwargs = {} if buffers is None else {"out": buffers}
    has_init = isinstance(model, BallTrainable)
    losses, accs, max_dev, fro_dev = [], [], [], []
    stopped_at, reason = None, None
    bar = tqdm(total=config.steps, desc="fit", disable=not progress, leave=False)
    try:
        for t in range(config.steps):
            x, y = batches.next()
            if attack is not None:
                x = x + attack(model, x, y, tau, generator=attack_generator)
            loss, grads, out = model.loss_grad_and_output(x, y, **step_kwargs)
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                raise DivergenceError(
                    f"step {t}: the loss became {loss_value}; the learning rate lr={config.lr} "
                    "is likely too large, or the data holds NaN/inf"
                )
            if constraint == "stop":
                for buf, p in zip(saved, params, strict=True):
                    buf.copy_(p)
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-config.lr)
            if not all(_finite(p) for p in params):
                raise DivergenceError(
                    f"step {t}: a weight became NaN or infinite; the learning rate lr={config.lr} "
                    "is likely too large"
                )
            last = t == config.steps - 1
            if constraint == "project" and ((t + 1) % config.project_every == 0 or last):
                model.project_(config.radius, ball=config.ball)
            losses.append(loss_value)
            accs.append(float(sign_correct(out, y).to(torch.float64).mean()))
            dev = model.deviation() if has_init else None
            max_dev.append(float(dev.max()) if dev is not None else math.nan)
            fro_dev.append(float(dev.square().sum().sqrt()) if dev is not None else math.nan)
            if progress:
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            bar.update(1)
            if constraint == "stop":
                outside = max_dev[-1] if config.ball == "rows" else fro_dev[-1]
                if outside > config.radius:
                    for buf, p in zip(saved, params, strict=True):
                        p.copy_(buf)
                    stopped_at, reason = t, "ball"
                    break
            if callback is not None and callback(t, model):
                stopped_at, reason = t, "callback"
                break
    finally:
        bar.close()
    return FitHistory(
        np.asarray(losses, dtype=np.float64),
        np.asarray(accs, dtype=np.float64),
        np.asarray(max_dev, dtype=np.float64),
        np.asarray(fro_dev, dtype=np.float64),
        stopped_at,
        reason,
    )

"""The bias policy: what decides every neuron's bias ``b_i`` and smoothing ``σ_ρ,i`` at a step.

Clean training (Algorithm 1 of Allen-Zhu & Li) recomputes them every step from a schedule of
:mod:`purify.schedules`.  Adversarial training (Algorithm 2) does not move them: at the switch
they are frozen, as ``adv_bias`` says —

``clean``
    the biases of the end of clean training, Algorithm 2 as written;
``radius``
    those raised to :func:`~purify.schedules.radius_floor` of the training radius, so that no
    perturbation of that radius wakes a neuron on an input it ignores (Thm 5.3);
``norm``
    the per-neuron ratios ``b_i/‖w_i‖`` and ``σ_ρ,i/‖w_i‖``, kept as the neurons move: the
    effective threshold ``b_i√k/‖w_i‖`` stays put, so robustness cannot come from raising it.

Adversarial training from a fresh init (``adv_init = "random"``) freezes nothing and runs its
own schedule over the adversarial steps (floored at the radius with ``adv_bias = "radius"``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from purify.config import RunConfig
from purify.schedules import BiasSchedule, radius_floor


class BiasPolicy:
    """``(b, σ_ρ)``, each of shape ``(m,)``, as a function of the weights and the global step.

    Parameters
    ----------
    config : a resolved :class:`~purify.config.RunConfig`.

    Attributes
    ----------
    frozen : the ``(b, σ_ρ)`` fixed at the switch (``b/‖w‖``, ``σ_ρ/‖w‖`` with ``adv_bias =
        "norm"``), or ``None`` before the switch and after a restart from init.
    """

    def __init__(self, config: RunConfig) -> None:
        tr, net, data = config.train, config.net, config.data
        assert tr.clean_steps is not None and tr.adv_steps is not None, "resolve() first"
        self.clean_steps = tr.clean_steps
        self.adv_bias, self.tau, self.norm = tr.adv_bias, tr.adv_tau, tr.adv_norm
        self.clean_schedule = BiasSchedule(net, d=data.d, k=data.k, steps=tr.clean_steps, lr=tr.lr)
        self.adv_schedule = BiasSchedule(net, d=data.d, k=data.k, steps=tr.adv_steps, lr=tr.adv_lr)
        self.frozen: tuple[Tensor, Tensor] | None = None

    def __call__(self, W: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """``(b, σ_ρ)`` of the network with weights ``W`` (m, d) after ``step`` global steps.

        Up to and including ``T_c`` (the first adversarial step too) the clean schedule decides.
        """
        if step <= self.clean_steps:
            return self.clean_schedule(W, step)
        if self.frozen is not None and self.adv_bias == "norm":
            norms = W.norm(dim=1)
            return self.frozen[0] * norms, self.frozen[1] * norms
        if self.frozen is not None:
            return self.frozen
        b, s = self.adv_schedule(W, step - self.clean_steps)
        if self.adv_bias == "radius":
            b, s = radius_floor(W, b, s, self.tau, self.norm)
        return b, s

    def freeze(self, W: Tensor) -> None:
        """Fix the biases of adversarial training from the weights ``W`` (m, d) at ``T_c``."""
        b, s = (t.clone() for t in self.clean_schedule(W, self.clean_steps))
        if self.adv_bias == "radius":
            b, s = radius_floor(W, b, s, self.tau, self.norm)
        elif self.adv_bias == "norm":
            norms = W.norm(dim=1)
            b, s = b / norms, s / norms
        self.frozen = (b, s)

    def release(self) -> None:
        """Forget the frozen biases (adversarial training restarted from init)."""
        self.frozen = None

    def state_dict(self) -> dict:
        """``{"frozen": (b, σ_ρ) on the CPU or None}``."""
        return {"frozen": None if self.frozen is None else tuple(t.cpu() for t in self.frozen)}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        frozen = state["frozen"]
        self.frozen = None if frozen is None else tuple(t.to(device) for t in frozen)

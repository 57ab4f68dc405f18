"""Bias ``b_i`` and smoothing ``σ_ρ,i`` schedules of clean training.

Two named schedules:

``paper``
    §4.1 of Allen-Zhu & Li taken literally: a shared bias ``b⁰ = σ₀ √log d`` that grows by
    ``η c_b / d`` per step until it reaches ``1/k^0.5001``, then stays; ``σ_ρ = b/√log d``
    while it grows and ``b/log d`` after (the paper's ``Θ((logloglog d)³)`` factors set to 1).
``norm`` (default)
    ``b_i = max(b⁰, r_t ‖w_i‖ / √k)`` recomputed every step, with ``r_t`` decaying linearly
    from ``r_start`` to ``r_end`` (1.5 to 0.6) over the first ``r_decay_fraction`` (70 %) of the clean steps,
    and ``σ_ρ,i = 0.05 b_i``.  A neuron ``w_i ≈ α M_j`` then fires on ``|z_j| ≥ r_t/√k``: the
    threshold tracks the neuron's own scale, which the shared schedule cannot do at
    simulable ``d`` (README, "Bias schedules").

In both, the biases are frozen during adversarial training (Algorithm 2 does not move them);
with ``adv_bias = "radius"`` (the default) they are first raised to :func:`radius_floor`
(:class:`purify.bias_policy.BiasPolicy` decides which applies at a step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from purify.attacks import Norm
from purify.config import NetConfig


class BiasSchedule:
    """``(b, σ_ρ)`` of shape ``(m,)`` each, as a function of the weights and the phase step.

    Parameters
    ----------
    net : resolved :class:`~purify.config.NetConfig`.
    d, k : data dimensions.
    steps : length of the phase the schedule runs over (clean steps).
    lr : the phase's learning rate ``η`` (the paper's growth is ``η c_b / d`` per step).
    """

    def __init__(self, net: NetConfig, *, d: int, k: int, steps: int, lr: float) -> None:
        assert net.sigma0 is not None and net.sigma_rho_ratio is not None, "resolve() first"
        self.net = net
        self.d, self.k, self.steps, self.lr = d, k, steps, lr
        self.b0 = net.sigma0 * math.sqrt(math.log(d))
        self.cap = k**-0.5001

    def ratio(self, t: int) -> float:
        """``r_t`` of the norm schedule at phase step ``t``."""
        net = self.net
        horizon = max(1.0, net.r_decay_fraction * self.steps)
        frac = min(1.0, t / horizon)
        return net.r_start + (net.r_end - net.r_start) * frac

    def __call__(self, W: Tensor, t: int) -> tuple[Tensor, Tensor]:
        m = W.shape[0]
        if self.net.bias_schedule == "paper":
            b_value = min(self.b0 + t * self.lr * self.net.c_b / self.d, self.cap)
            grown = b_value >= self.cap
            ratio = 1 / math.log(self.d) if grown else self.net.sigma_rho_ratio
            b = torch.full((m,), b_value, dtype=W.dtype, device=W.device)
            return b, b * ratio
        b = (self.ratio(t) / math.sqrt(self.k)) * W.norm(dim=1)
        b = b.clamp_min(self.b0)
        return b, b * self.net.sigma_rho_ratio


def radius_floor(W: Tensor, b: Tensor, sigma_rho: Tensor, tau: float, norm: str) -> tuple[Tensor, Tensor]:
    """Biases raised to ``b_i ≥ τ ‖w_i‖_q`` (``q`` the dual of the attack's ``p``), ``σ_ρ,i`` scaled along.

    By Hölder, ``|<w_i, δ>| ≤ τ ‖w_i‖_q`` for every ``‖δ‖_p ≤ τ``, so with this bias no
    perturbation of the training radius wakes a neuron on an input where ``<w_i, x> = 0``: the
    neuron can only amplify what is already in the input, which is how the theory's robust
    neurons treat the dense remainder (Allen-Zhu & Li, Thm 5.3; README, "Bias schedules").  For a
    pure neuron ``w_i = α M_j`` under ℓ₂ this is the threshold ``|z_j| ≥ τ``: at the default
    ``τ = 1/√k``, exactly the small coordinates' level.  ``σ_ρ,i / b_i`` is kept.
    """
    raised = torch.maximum(b, tau * Norm(norm).dual_norm(W))
    return raised, sigma_rho * (raised / b)

"""The single gradient step that flips a model's sign (Bubeck et al. 2021 Thm 1-2; Wang et al.
2022 Thm 3.1): the attack of the random-network and lazy-training experiments."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from purify.learners.base import Learner
from purify.norms import sign


@dataclass
class SingleStep:
    """Result of :func:`single_step`, one entry per example.

    ``eta`` is signed (``sign η = −sign f(x)``) and NaN where no ``|η| ≤ eta_max`` flipped the
    sign; ``delta_norm = |η| ‖∇_x f(x)‖₂`` likewise.
    """

    eta: Tensor
    grad_norm: Tensor
    delta_norm: Tensor
    flipped: Tensor


def single_step(
    model: Learner,
    x: Tensor,
    *,
    eta_max: float = 20.0,
    eta_min: float | None = None,
    grid: int = 64,
    bisections: int = 40,
) -> SingleStep:
    """Smallest ``|η| ≤ eta_max`` such that ``δ = η ∇_x f(x)`` flips ``sign f``, per example.

    The step is the one of Bubeck et al. (2021, Thm 1-2, §4: "the smallest η, searched up to
    |η| < 20") and Wang et al. (2022, Thm 3.1 and §5.1): ``sign η = −sign f(x)``.  The search
    brackets the first flip on a geometric grid of ``grid`` values of ``|η|`` from ``eta_min``
    (default ``eta_max·1e-9``) to ``eta_max``, then bisects between the last grid value that did
    not flip and the first that did.  A flip that happens and reverts between two grid values
    is missed; on a model linear along the ray the answer is exact up to the bisection
    tolerance (``|η| = |f(x)|/‖∇f(x)‖²``).
    """
    if not eta_max > 0:
        raise ValueError(f"eta_max must be > 0, got {eta_max}")
    eta_min = eta_max * 1e-9 if eta_min is None else eta_min
    if not 0 < eta_min < eta_max:
        raise ValueError(f"need 0 < eta_min < eta_max, got {eta_min}, {eta_max}")
    out, grad = model.forward_and_input_grad(x)
    s0 = sign(out)
    direction = -s0[:, None] * grad  # moving along it lowers s0·f at first order

    def flips(scale: Tensor) -> Tensor:
        return sign(model.forward(x + scale[:, None] * direction)) != s0

    n = x.shape[0]
    lo = torch.zeros(n, dtype=x.dtype, device=x.device)  # largest |η| known not to flip
    hi = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)  # smallest known to flip (NaN: none yet)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for value in torch.logspace(math.log10(eta_min), math.log10(eta_max), grid, dtype=torch.float64).tolist():
        scale = torch.full((n,), value, dtype=x.dtype, device=x.device)
        now = flips(scale) & ~found
        hi = torch.where(now, scale, hi)
        found |= now
        lo = torch.where(found, lo, scale)
        if bool(found.all()):
            break
    if bool(found.any()):
        a, b = lo[found], hi[found]
        xf, df, sf = x[found], direction[found], s0[found]
        for _ in range(bisections):
            mid = (a + b) / 2
            f = sign(model.forward(xf + mid[:, None] * df)) != sf
            b = torch.where(f, mid, b)
            a = torch.where(f, a, mid)
        hi[found] = b
    grad_norm = grad.norm(dim=1)
    eta = -s0 * hi  # NaN where nothing flipped
    return SingleStep(eta=eta, grad_norm=grad_norm, delta_norm=hi * grad_norm, flipped=found)

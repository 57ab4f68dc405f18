"""Attacks that use what purify knows beyond the model: the data's structure, or another model.

* :class:`Shrink` perturbs along the dictionary atoms that carry an example's label, shrinking
  its active coordinates: the perturbation the feature-purification picture says a network
  that reads pure features is weakest against (Allen-Zhu & Li, §5: a robust network's neurons
  are thresholded atoms ``w_i ≈ ±M_j``, so the cheapest way to flip it is to pull the
  label-carrying ``<M_j, x>`` below the thresholds), alone and mixed with the dense direction
  ``M w*`` of Thm 5.1(c), then polished by a short :func:`purify.attacks.descend`.
* :class:`Transfer` crafts ``δ`` on a surrogate (a smoother copy of the network, see
  :func:`smoother_copy`, or the clean model) and hands it to the target: a gradient-masking
  check, since a target with flat or noisy gradients is still hit by a surrogate's ``δ``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from purify.attacks import SCHEDULES, Attack, AttackOptions, descend
from purify.learners.base import Learner
from purify.learners.symmetric import SymmetricReLUNet


class Shrink(Attack):
    """Shrink the coordinates that carry the label (structure-aware; needs ``M`` and ``w*``).

    With the code estimate ``c = Mᵀx`` (exact for an orthogonal ``M`` and no noise), atom ``j``
    carries the label when ``y w*_j c_j > 0``.  For each ``t`` in ``atoms`` the ``t`` atoms with
    the largest ``y w*_j c_j > 0`` give ``u = Σ_j −y sign(w*_j) M_j`` (fewer if fewer carry
    it), and the candidates are

    * ``ℓ₂``: ``τ u/‖u‖₂`` (for orthonormal atoms the budget split equally, ``τ/√t`` each) and
      ``τ(u/‖u‖₂ − y v)/√2`` with ``v = Mw*/‖Mw*‖₂`` (half the squared budget each, projected);
    * ``ℓ∞``: ``τ sign(u)`` and ``τ(sign(u) − y sign(Mw*))/2``;

    plus the dense direction alone.  The ``polish_starts`` best candidates of each example
    start a ``polish_steps`` run of :func:`~purify.attacks.descend`; the per-example best over
    candidates and polish is returned (broken examples are not polished further).
    """

    def __init__(
        self,
        norm: str,
        dictionary: Tensor,
        teacher: Tensor,
        *,
        atoms: tuple[int, ...] = (1, 2, 3, 5),
        with_dense: bool = True,
        polish_steps: int = 20,
        polish_starts: int = 2,
        rel_step: float = 0.3,
        schedule: str = "cosine",
    ) -> None:
        super().__init__(norm)
        if dictionary.ndim != 2 or teacher.shape != (dictionary.shape[1],):
            raise ValueError(f"need M (d, D) and w* (D,), got {tuple(dictionary.shape)}, {tuple(teacher.shape)}")
        if not atoms or any(t < 1 for t in atoms):
            raise ValueError(f"atoms must be counts >= 1, got {atoms}")
        if polish_steps < 0 or polish_starts < 1:
            raise ValueError(f"need polish_steps >= 0 and polish_starts >= 1, got {polish_steps}, {polish_starts}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
        self.M, self.w_star = dictionary, teacher
        self.atoms, self.with_dense = tuple(sorted(set(atoms))), with_dense
        self.polish_steps, self.polish_starts = polish_steps, polish_starts
        self.rel_step, self.schedule = rel_step, schedule

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> Shrink:
        if options.dictionary is None or options.teacher is None:
            raise ValueError("the shrink attack needs the dictionary M and the teacher w*")
        return cls(norm, options.dictionary, options.teacher, rel_step=options.rel_step)

    def candidates(self, x: Tensor, y: Tensor, tau: float) -> Tensor:
        """The candidate perturbations, ``(K, n, d)``, each inside the ``τ``-ball."""
        M = self.M.to(x.device, x.dtype)
        w = self.w_star.to(x.device, x.dtype)
        score = y[:, None] * w[None, :] * (x @ M)  # y w*_j c_j, (n, D)
        top, idx = score.topk(min(max(self.atoms), M.shape[1]), dim=1)
        dense = -y[:, None] * self.norm.normalize((M @ w)[None, :])  # unit ℓ₂ (or a sign pattern)
        u = torch.zeros_like(x)
        out = [tau * dense] if self.with_dense else []
        for t in range(1, idx.shape[1] + 1):
            j = idx[:, t - 1]
            # only atoms that carry the label: a zero coefficient leaves u unchanged
            coef = -y * torch.sign(w[j]) * (top[:, t - 1] > 0).to(x.dtype)
            u = u + coef[:, None] * M.T[j]
            if t in self.atoms or t == idx.shape[1] < max(self.atoms):
                s = self.norm.normalize(u)
                out.append(tau * s)
                if self.with_dense:
                    mix = (s + dense) / math.sqrt(2) if self.norm.name == "l2" else (s + dense) / 2
                    out.append(tau * mix)
        return torch.stack([self.norm.project(c, tau) for c in out])

    def run(self, model, x, y, tau, *, generator):
        cands = self.candidates(x, y, tau)
        margins = torch.stack([y * model.forward(x + c) for c in cands])  # (K, n)
        order = margins.argsort(dim=0)
        cols = torch.arange(x.shape[0], device=x.device)
        best, best_margin = cands[order[0], cols], margins[order[0], cols]
        if self.polish_steps == 0:
            return best
        for r in range(min(self.polish_starts, cands.shape[0])):
            rows = torch.nonzero(best_margin >= 0).flatten()
            if rows.numel() == 0:
                break
            start = cands[order[r, rows], rows]
            delta, margin = descend(model, x[rows], y[rows], tau, self.norm, start, steps=self.polish_steps,
                                    rel_step=self.rel_step, schedule=self.schedule)
            better = margin < best_margin[rows]
            best[rows] = torch.where(better[:, None], delta, best[rows])
            best_margin[rows] = torch.where(better, margin, best_margin[rows])
        return best


class Transfer(Attack):
    """``δ`` crafted by ``inner`` on ``source`` and evaluated on the target (a surrogate attack).

    The target model passed to the call is ignored while crafting: the attack tests whether
    the target is merely hard to *optimize* against (gradient masking) rather than robust.
    """

    def __init__(self, norm: str, source: Learner, inner: Attack) -> None:
        super().__init__(norm)
        if inner.norm != self.norm:
            raise ValueError(f"Transfer in {norm} needs an inner attack in {norm}, got {inner.norm.name}")
        self.source, self.inner = source, inner

    def run(self, model, x, y, tau, *, generator):
        return self.inner(self.source, x, y, tau, generator=generator)

    def run_masked(self, model, x, y, tau, active, *, generator):
        return self.inner(self.source, x, y, tau, generator=generator, active=active)

    @property
    def masks_paired(self) -> bool:  # type: ignore[override]
        return self.inner.masks_paired


def smoother_copy(net: SymmetricReLUNet, factor: float) -> SymmetricReLUNet:
    """The same weights and biases with ``σ_ρ`` scaled by ``factor`` (a smoother surrogate)."""
    if not factor > 0:
        raise ValueError(f"smoothing factor must be > 0, got {factor}")
    return SymmetricReLUNet(net.W, net.b, net.sigma_rho * factor)

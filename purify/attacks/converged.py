"""Converged PGD: decaying steps, several starts, the per-example best kept.

:class:`ConvergedPGD` is meant for the examples the cheap attackers did not break;
:func:`attack_strength` measures how robust accuracy falls with its effort (steps × starts).
:func:`descend`, one PGD run from one start, is shared with the polish of
:class:`purify.structured_attacks.Shrink`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from purify.attacks.base import Attack, AttackOptions, Norm
from purify.learners.base import Learner
from purify.norms import sign

START_KINDS = ("zero", "dense", "random")
SCHEDULES = ("cosine", "apgd")


def _apgd_checkpoints(steps: int) -> set[int]:
    """Iterations where APGD may halve its step (Croce & Hein 2020, §3.2: ``p₀ = 0``,
    ``p₁ = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, times ``steps``)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(q * steps) for q in p[1:] if 0 < math.ceil(q * steps) < steps}


def descend(
    model: Learner,
    x: Tensor,
    y: Tensor,
    tau: float,
    norm: Norm,
    start: Tensor,
    *,
    steps: int,
    rel_step: float = 0.3,
    schedule: str = "cosine",
    at_start: tuple[Tensor, Tensor] | None = None,
    early_stop: bool = True,
) -> tuple[Tensor, Tensor]:
    """One PGD run on the margin ``y f(x + δ)`` from ``start``: ``(best δ (n, d), best margin (n,))``.

    The best is over the start, the full step ``Π(start − τ normalize(y ∇f))`` from it (from
    zero: the FGM point) and every iterate, per example.  ``schedule="cosine"`` moves
    ``δ ← Π(δ − α_t normalize(y ∇f))`` with ``α_t = rel_step·τ·(1 + cos(π t/steps))/2``;
    ``"apgd"`` is the step-size-free APGD of Croce & Hein (2020, Alg. 1: initial step ``2τ``,
    momentum 0.75, the step halved and the iterate reset to the run's best at checkpoints
    where fewer than 75 % of the steps since the last one improved, or nothing changed),
    ``rel_step`` unused.  ``at_start`` is ``(f, ∇f)`` at ``x + start`` if already known (it
    saves one evaluation).  With ``early_stop`` an example leaves the active set once its
    margin is ``< 0``: it is broken, and a smaller margin would not change that (the returned
    ``δ`` of such a row is the first breaking iterate, not the most damaging one).
    Rows are independent: a subset of rows gives the same rows' results.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    out, grad = model.forward_and_input_grad(x + start) if at_start is None else at_start
    best, best_margin = start.clone(), y * out
    # The full step from the start (from zero: the FGM point) is a candidate too, so a run from
    # the zero start is never weaker than FGM; one forward, no gradient.
    full = norm.project(start - tau * norm.normalize(y[:, None] * grad), tau)
    full_margin = y * model.forward(x + full)
    better = full_margin < best_margin
    best = torch.where(better[:, None], full, best)
    best_margin = torch.where(better, full_margin, best_margin)
    rows = torch.arange(x.shape[0], device=x.device)
    # `st` holds the per-row state of the active rows, compacted together.
    st = {"x": x, "y": y, "delta": start, "grad": grad, "margin": best_margin}
    if schedule == "apgd":
        eta = torch.full_like(y, 2.0 * tau)
        # rbest/rgrad/rmargin: the best iterate of this run (where a halving resets to) and its
        # gradient; the full-step candidate is not an iterate (no gradient known there)
        st |= {"prev": start, "eta": eta, "succ": torch.zeros_like(y), "last_eta": eta,
               "last_best": y * out, "rbest": start, "rgrad": grad, "rmargin": y * out}
        checkpoints = _apgd_checkpoints(steps)
    for t in range(steps):
        if early_stop:
            keep = best_margin[rows] >= 0
            if not bool(keep.all()):
                rows = rows[keep]
                st = {k: v[keep] for k, v in st.items()}
                if rows.numel() == 0:
                    break
        xr, yr, delta = st["x"], st["y"], st["delta"]
        direction = norm.normalize(yr[:, None] * st["grad"])
        if schedule == "cosine":
            alpha = rel_step * tau * 0.5 * (1.0 + math.cos(math.pi * t / steps))
            new = norm.project(delta - alpha * direction, tau)
        elif t == 0:
            new = norm.project(delta - st["eta"][:, None] * direction, tau)
        else:
            z = norm.project(delta - st["eta"][:, None] * direction, tau)
            new = norm.project(delta + 0.75 * (z - delta) + 0.25 * (delta - st["prev"]), tau)
        if t == steps - 1 and schedule == "cosine":
            out, grad = model.forward(xr + new), st["grad"]  # the last gradient is never used
        else:
            out, grad = model.forward_and_input_grad(xr + new)
        margin = yr * out
        better = margin < best_margin[rows]
        best[rows] = torch.where(better[:, None], new, best[rows])
        best_margin[rows] = torch.where(better, margin, best_margin[rows])
        if schedule == "apgd":
            st["succ"] = st["succ"] + (margin < st["margin"]).to(y.dtype)
            improved = margin < st["rmargin"]
            st["rbest"] = torch.where(improved[:, None], new, st["rbest"])
            st["rgrad"] = torch.where(improved[:, None], grad, st["rgrad"])
            st["rmargin"] = torch.where(improved, margin, st["rmargin"])
            st["prev"] = delta
            if t + 1 in checkpoints:
                since = t + 1 - max([0] + [c for c in checkpoints if c < t + 1])
                rb = st["rmargin"]
                halve = (st["succ"] < 0.75 * since) | ((st["eta"] == st["last_eta"]) & (rb == st["last_best"]))
                st["eta"] = torch.where(halve, st["eta"] / 2, st["eta"])
                new = torch.where(halve[:, None], st["rbest"], new)
                grad = torch.where(halve[:, None], st["rgrad"], grad)
                margin = torch.where(halve, rb, margin)
                st["prev"] = torch.where(halve[:, None], new, st["prev"])
                st |= {"succ": torch.zeros_like(st["succ"]), "last_eta": st["eta"], "last_best": rb}
        st |= {"delta": new, "grad": grad, "margin": margin}
    return best, best_margin


class ConvergedPGD(Attack):
    """PGD run to convergence: decaying steps, several starts, the per-example best kept.

    From every start in ``starts`` (``"zero"``; ``"dense"``, the dense direction at radius
    ``τ``: ``−τ y Mw*/‖Mw*‖₂``, in ``ℓ∞`` the corner ``−τ y sign(Mw*)``; ``"random"``, a fresh
    point of the ball, all drawn up front in the order given) it runs :func:`descend` once per
    entry of ``steps`` (an int, or a tuple of run lengths: one full schedule each, all from the
    same start).  The returned ``δ`` has, per example, the smallest margin ``y f(x + δ)`` seen
    over all starts, runs and iterates, so adding starts or runs never weakens it.  Examples
    already broken (margin ``< 0``) are not attacked further (``early_stop``).  Called with
    ``active=mask`` it attacks only those rows but draws the random starts for every row, so a
    row gets the same draws whichever other rows are active.
    """

    masks_paired = True

    def __init__(
        self,
        norm: str,
        *,
        steps: int | tuple[int, ...] = 100,
        starts: tuple[str, ...] = ("zero", "dense", "random", "random"),
        rel_step: float = 0.3,
        dense_direction: Tensor | None = None,
        schedule: str = "cosine",
        early_stop: bool = True,
    ) -> None:
        super().__init__(norm)
        self.steps = (steps,) if isinstance(steps, int) else tuple(steps)
        self.starts = tuple(starts)
        if not self.steps or any(not isinstance(s, int) or s < 1 for s in self.steps):
            raise ValueError(f"ConvergedPGD needs steps >= 1, got {steps}")
        if not self.starts or any(s not in START_KINDS for s in self.starts):
            raise ValueError(f"ConvergedPGD starts {starts!r}: one or more of {', '.join(START_KINDS)}")
        if "dense" in self.starts and dense_direction is None:
            raise ValueError("the dense start needs the direction M w* (dense_direction)")
        if not rel_step > 0:
            raise ValueError(f"rel_step must be > 0, got {rel_step}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
        self.rel_step, self.schedule, self.early_stop = rel_step, schedule, early_stop
        self.direction = None if dense_direction is None else self.norm.normalize(dense_direction[None, :])[0]

    @classmethod
    def from_options(cls, norm: str, options: AttackOptions) -> ConvergedPGD:
        o = options
        return cls(norm, steps=o.steps, starts=o.starts, rel_step=o.rel_step,
                   dense_direction=o.dense_direction, schedule=o.schedule)

    def start_points(self, x: Tensor, y: Tensor, tau: float, *, generator: torch.Generator) -> list[Tensor]:
        """The start ``δ`` of each entry of ``starts``, the random ones drawn in order."""
        points = []
        for kind in self.starts:
            if kind == "zero":
                points.append(torch.zeros_like(x))
            elif kind == "dense":
                assert self.direction is not None
                points.append(-tau * y[:, None] * self.direction.to(x.device, x.dtype)[None, :])
            else:
                points.append(self.norm.random_start(tuple(x.shape), tau, generator=generator,
                                                     device=x.device, dtype=x.dtype))
        return points

    def runs(
        self, model: Learner, x: Tensor, y: Tensor, tau: float, *, generator: torch.Generator
    ) -> Iterator[tuple[int, int, Callable[[Tensor], tuple[Tensor, Tensor]]]]:
        """Yield ``(start index, run index, run)`` in order; ``run(rows)`` returns the best
        ``(δ, margin)`` of that run on ``x[rows]``.

        The forward at a start is computed once per row and shared by its runs.  The caller picks
        the rows of each run (e.g. those not broken yet), which is how :meth:`run` and
        :func:`attack_strength` share one code path.
        """
        for j, start in enumerate(self.start_points(x, y, tau, generator=generator)):
            # (f, ∇f) at this start, filled in for the rows asked so far: later runs of a start
            # ask for subsets of the earlier rows (broken examples only leave), so one evaluation.
            known = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            out0, grad0 = torch.empty_like(y), torch.empty_like(x)
            for i, steps in enumerate(self.steps):

                def one(rows: Tensor, steps: int = steps, start: Tensor = start, known: Tensor = known,
                        out0: Tensor = out0, grad0: Tensor = grad0) -> tuple[Tensor, Tensor]:
                    new = rows[~known[rows]]
                    if new.numel():
                        out0[new], grad0[new] = model.forward_and_input_grad(x[new] + start[new])
                        known[new] = True
                    return descend(model, x[rows], y[rows], tau, self.norm, start[rows], steps=steps,
                                   rel_step=self.rel_step, schedule=self.schedule,
                                   at_start=(out0[rows], grad0[rows]), early_stop=self.early_stop)

                yield j, i, one

    def run(self, model, x, y, tau, *, generator):
        return self.run_masked(model, x, y, tau, torch.ones_like(y, dtype=torch.bool), generator=generator)

    def run_masked(self, model, x, y, tau, active, *, generator):
        # Random starts are drawn for every row (inactive ones included) so that a row's draws do
        # not depend on the mask; inactive rows start "broken" (margin −inf) and are never run.
        best = torch.zeros_like(x)
        best_margin = torch.where(active, float("inf"), float("-inf")).to(y.dtype)
        for _, _, one in self.runs(model, x, y, tau, generator=generator):
            rows = torch.nonzero((best_margin >= 0) if self.early_stop else active).flatten()
            if rows.numel() == 0:
                break
            delta, margin = one(rows)
            better = margin < best_margin[rows]
            best[rows] = torch.where(better[:, None], delta, best[rows])
            best_margin[rows] = torch.where(better, margin, best_margin[rows])
        return best


def strength_starts(n_starts: int, *, dense: bool) -> tuple[str, ...]:
    """The nested start list of :func:`attack_strength`: zero, dense (if given), then random."""
    head = ("zero", "dense") if dense else ("zero",)
    return (head + ("random",) * n_starts)[:n_starts]


def attack_strength(
    model: Learner,
    x: Tensor,
    y: Tensor,
    tau: float,
    *,
    norm: str,
    steps_grid: tuple[int, ...] = (10, 30, 100, 300),
    starts_grid: tuple[int, ...] = (1, 3, 10),
    dense_direction: Tensor | None = None,
    generator: torch.Generator,
    rel_step: float = 0.3,
    schedule: str = "cosine",
    proven: Tensor | None = None,
) -> np.ndarray:
    """Robust accuracy of the :class:`ConvergedPGD` family by effort, ``(len(steps_grid), len(starts_grid))``.

    Cell ``(S, s)`` counts an example robust iff it is clean-correct and no run of
    ``T ≤ S`` steps from any of the first ``s`` starts breaks it.  What is nested: the start
    list is :func:`strength_starts` ``(max(starts_grid))`` (zero, dense, then random points
    drawn once from ``generator`` in order), so ``s`` starts are the first ``s`` of the same
    draws; each start runs one full schedule of every length in ``steps_grid`` (a 30-step
    cosine run is not a prefix of a 100-step one, so each level is a fresh run from the same
    start).  Hence the table is non-increasing along both axes by construction, and its last
    cell is the robust accuracy of ``ConvergedPGD(steps=steps_grid, starts=strength_starts(...))``
    with the same generator state.  A run skips the examples already broken by a run of no
    more steps from no later start: they are broken in every cell that run counts in.
    ``proven`` (boolean ``(n,)``, :func:`purify.certificate.certified`) marks examples no
    perturbation of the ball flips: no run attacks them, which changes no cell.
    """
    steps_grid, starts_grid = tuple(steps_grid), tuple(starts_grid)
    if list(steps_grid) != sorted(set(steps_grid)) or list(starts_grid) != sorted(set(starts_grid)):
        raise ValueError(f"steps_grid {steps_grid} and starts_grid {starts_grid} must be increasing")
    if starts_grid[0] < 1:
        raise ValueError(f"starts_grid must be >= 1, got {starts_grid}")
    attack = ConvergedPGD(norm, steps=steps_grid, rel_step=rel_step, schedule=schedule,
                          starts=strength_starts(starts_grid[-1], dense=dense_direction is not None),
                          dense_direction=dense_direction)
    n = x.shape[0]
    broken = torch.zeros(len(steps_grid), len(attack.starts), n, dtype=torch.bool, device=x.device)
    clean_ok = sign(model.forward(x)) == y
    skip = ~clean_ok if proven is None else ~clean_ok | proven
    for j, i, one in attack.runs(model, x, y, tau, generator=generator):
        done = broken[: i + 1, : j + 1].flatten(0, 1).any(dim=0) | skip
        rows = torch.nonzero(~done).flatten()
        if rows.numel():
            _, margin = one(rows)
            broken[i, j, rows] = (margin < 0) | ((margin == 0) & (y[rows] < 0))
    # cumulative over smaller efforts: cum[i, j] = broken by some (i' ≤ i, j' ≤ j)
    cum = broken.cummax(dim=0).values.cummax(dim=1).values
    robust = clean_ok[None, None, :] & ~cum
    cols = [s - 1 for s in starts_grid]
    return robust[:, cols].to(torch.float64).mean(dim=2).cpu().numpy()

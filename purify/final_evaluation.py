"""The end-of-phase evaluation of a run: every held-out example, paired across models.

Robust accuracy is an upper bound on the truth ``Pr[∀ ‖δ‖_p ≤ τ: sign f(x + δ) = y]``
(Allen-Zhu & Li, Def. 4.1), as tight as the strongest attack.  At completion,
:func:`final_evaluation` reads the stored snapshots back and evaluates five models at the
radius ``τ`` (radius multiple 1) of each evaluated norm on all ``n_test`` held-out examples:

* ``clean``: the network at the end of clean training (Algorithm 1);
* ``robust``: the network at the end of adversarial training (Algorithm 2);
* ``bias_only``: the clean weights under the raised biases adversarial training starts from,
  before any adversarial step (``adv_bias = "radius"`` only);
* ``threshold``: the cheapest explanation of robustness, the clean weights with every bias
  raised to ``b_i = r ‖w_i‖_q/√k`` (``q`` dual to the training norm; the norm schedule's
  rule, so ``r`` is the effective threshold whatever the radius) and
  ``σ_ρ,i = (σ_ρ/b) b_i``, with ``r`` chosen on a grid (:data:`THRESHOLD_GRID`) refined
  where the grid crosses the clean-accuracy target (:func:`refine_threshold`);
* ``ideal``: the thresholded pure-feature classifier of §3.

Each model meets the same **cascade** per norm: the cheap attacks of the per-step evaluation
(FGM, PGD-10, dense, noise) on every example, then on the examples still correct the attacks
of the strength (:data:`SURVIVOR_ATTACKS`).  Every attack draws from a stream named for the
norm and the attack, the same for every model, so the models' outcomes are paired example by
example and their differences have small standard errors.  The streams are the run's own
(``final/...``): a resumed run writes the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from purify import rng
from purify import schema as V
from purify import store as S
from purify.attacks import STRONG_ATTACKS, Attack, Norm, make_attack, strength_starts
from purify.certificate import certified
from purify.config import RunConfig
from purify.data import SparseCodingProblem
from purify.evaluate import CascadeResult, cascade, sign_correct, standard_error
from purify.learners.base import Learner
from purify.learners.ideal import IdealRobustModel
from purify.learners.symmetric import SymmetricReLUNet
from purify.schedules import radius_floor

#: Models of the ``evaluation`` group, in storage order.
MODELS = ("clean", "robust", "bias_only", "threshold", "ideal")
#: Attacks run on the survivors of the cheap ones, per strength: the strong attackers of
#: :data:`purify.registry.ATTACKERS` (converged PGD, shrink), and with ``strong`` the transfers.
SURVIVOR_ATTACKS = {
    "fast": (),
    "standard": tuple(STRONG_ATTACKS),
    "strong": (*STRONG_ATTACKS, "transfer_smooth", "transfer_clean"),
}
#: Threshold multiples ``r`` of the baseline, 0.6, 0.7, ..., 2.0.
THRESHOLD_GRID = tuple(round(0.6 + 0.1 * i, 1) for i in range(15))
#: Candidates of the threshold grid that get the strength's full cascade.
THRESHOLD_CANDIDATES = 3
#: The threshold baseline may give up this much clean accuracy to the robust model.
CLEAN_SLACK = 0.01
#: Bisection steps of :func:`refine_threshold`: ``r`` to ``0.1/2⁶ ≈ 0.0016``.
REFINE_STEPS = 6
#: ``(steps_grid, starts_grid)`` of the attack-strength curve per strength (``fast``: none).
STRENGTH_GRIDS = {"standard": ((10, 30, 100), (1, 3)), "strong": ((10, 30, 100, 300), (1, 3, 10))}
#: The smoother surrogate of ``transfer_smooth`` has this many times the model's σ_ρ.
SMOOTHER = 3.0
#: Whether the survivor attacks leave out the examples proven robust (the same verdicts either
#: way, since none of them can flip; off only to test that).
SKIP_CERTIFIED = True


def threshold_net(W: Tensor, r: float, scale: float, norm: str, sigma_rho_ratio: float) -> SymmetricReLUNet:
    """The threshold baseline: weights ``W`` with ``b_i = r · scale · ‖w_i‖_q``, ``σ_ρ,i = ratio · b_i``.

    The run uses ``scale = 1/√k``: a pure neuron ``w_i = α M_j`` then fires on ``|z_j| ≥ r/√k``
    whatever its norm, the same effective threshold ``r`` the ``norm`` bias schedule sets, so the
    grid is comparable across radii and presets.  ``q`` is the dual of ``norm`` (2 for ℓ₂, 1 for
    ℓ∞), the norm in which a perturbation moves ``<w_i, x>`` most (Hölder).
    """
    b = r * scale * Norm(norm).dual_norm(W)
    return SymmetricReLUNet(W, b, sigma_rho_ratio * b)


def _survivor_attack(name: str, norm: str, problem: SparseCodingProblem, strength: str,
                     sources: dict[str, Learner | None]) -> Attack | None:
    """One attack of the strength's survivor stage; ``None`` when it does not apply (a transfer
    without a source).  ``standard``: converged PGD of 100 steps from zero, the dense direction
    and 2 random points; ``strong``: 300 steps from 10 starts (zero, dense, 8 random).  The
    transfers craft with the standard converged PGD on their source."""
    from purify.structured_attacks import Transfer

    direction = problem.dense_direction()
    standard = {"steps": 100, "starts": strength_starts(4, dense=True)}
    effort = {"steps": 300, "starts": strength_starts(10, dense=True)} if strength == "strong" else standard
    if name in STRONG_ATTACKS:  # each reads what it needs (the effort is converged PGD's)
        return make_attack(name, norm, dense_direction=direction, dictionary=problem.M,
                           teacher=problem.w_star, **effort)
    source = sources.get(name.removeprefix("transfer_"))
    if source is None:
        return None
    return Transfer(norm, source, make_attack("converged_pgd", norm, dense_direction=direction, **standard))


@dataclass
class FinalEvaluation:
    """Evaluates models on the held-out set with the run's cascade (see the module docstring)."""

    config: RunConfig
    problem: SparseCodingProblem
    x: Tensor
    y: Tensor
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        ev = self.config.eval
        self.norms = list(ev.norms)
        self.cheap = list(ev.attacks)
        self.survivors = list(SURVIVOR_ATTACKS[ev.strength])
        self.attack_names = self.cheap + self.survivors
        self.device = self.x.device

    def tau(self, norm: str) -> float:
        ev = self.config.eval
        r1 = int(np.argmin(np.abs(np.asarray(ev.radii) - 1.0)))
        return ev.taus(norm)[r1]

    def _generators(self, norm: str, names: Sequence[str]) -> list[torch.Generator]:
        # One stream per (norm, attack), the same for every model: paired draws.
        return [rng.generator(int(self.config.seed), f"final/{norm}/{name}", self.device) for name in names]

    def fast(self, model: Learner, norm: str) -> CascadeResult:
        """The cheap attacks, each on every example."""
        attacks = [make_attack(a, norm, dense_direction=self.problem.dense_direction(),
                               pgd_steps=self.config.eval.pgd_steps, pgd_rel_step=self.config.eval.pgd_rel_step,
                               pgd_restarts=self.config.eval.pgd_restarts) for a in self.cheap]
        return cascade(model, self.x, self.y, self.tau(norm), attacks,
                       generators=self._generators(norm, self.cheap), attack_all=len(attacks))

    def full(self, model: Learner, norm: str, prior: CascadeResult, sources: dict[str, Learner | None]) -> CascadeResult:
        """Continue ``prior`` (the cheap stage) with the strength's survivor attacks, which leave
        out the examples :func:`purify.certificate.certified` proves robust (they cannot flip)."""
        proven = certified(model, self.x, self.y, self.tau(norm), norm)
        if proven is not None and bool((proven.cpu().numpy() & ~prior.robust_correct).any()):
            raise RuntimeError(f"an attack flipped an example the certificate proves robust ({norm}): the "
                               "certificate is wrong for this model")
        result = prior
        for name in self.survivors:
            attack = _survivor_attack(name, norm, self.problem, self.config.eval.strength, sources)
            if attack is None:  # keep the numbering of `attack_names`: an attack that breaks nothing
                result = dataclasses.replace(result, n_attacks=result.n_attacks + 1)
                continue
            result = cascade(model, self.x, self.y, self.tau(norm), [attack], generators=self._generators(norm, [name]),
                             prior=result, proven=proven if SKIP_CERTIFIED else None)
        return result if proven is None else dataclasses.replace(result, certified=proven.cpu().numpy())

    def model(self, model: Learner, sources: dict[str, Learner | None]) -> dict[str, CascadeResult]:
        return {norm: self.full(model, norm, self.fast(model, norm), sources) for norm in self.norms}


def smoother(net: SymmetricReLUNet) -> SymmetricReLUNet:
    """A copy of ``net`` with ``SMOOTHER`` times its smoothing ``σ_ρ``: gradients of a smoother
    surrogate cross the ReLU kinks the model's own gradients see only locally."""
    from purify.structured_attacks import smoother_copy

    return smoother_copy(net, SMOOTHER)


def stored_models(run, config: RunConfig, problem: SparseCodingProblem, device) -> dict[str, Learner]:
    """The clean, robust, bias-only and ideal models, from the stored snapshots of ``run``."""
    snaps = S.open_run(run, V.SNAPSHOTS)
    tc, ta = config.train.clean_steps, config.train.adv_steps
    tr = config.train

    def net(step: int) -> SymmetricReLUNet:
        s = snaps.sel(step=step)
        return SymmetricReLUNet(*(torch.from_numpy(s[v].values).to(device) for v in (V.W, V.B, V.SIGMA_RHO)))

    models: dict[str, Learner] = {"clean": net(tc)}
    if ta:
        models["robust"] = net(int(snaps.step.values[-1]))
        if tr.adv_bias == "radius" and tr.adv_init == "clean":
            clean = models["clean"]
            assert isinstance(clean, SymmetricReLUNet) and tr.adv_tau is not None
            models["bias_only"] = SymmetricReLUNet(clean.W, *radius_floor(clean.W, clean.b, clean.sigma_rho,
                                                                         tr.adv_tau, tr.adv_norm))
    models["ideal"] = IdealRobustModel(problem.M.to(device), problem.w_star.to(device), config.data.k)
    return models


def final_evaluation(run, config: RunConfig, problem: SparseCodingProblem, x: Tensor, y: Tensor,
                     *, log: Callable[[str], None] | None = None) -> dict[str, xr.Dataset]:
    """The groups ``evaluation``, ``threshold`` and (strengths above ``fast``, runs with
    adversarial training) ``attack_strength`` of a completed run's store."""
    ev = config.eval
    device = x.device
    problem = SparseCodingProblem(problem.M.to(device), problem.w_star.to(device), problem.levels,
                                  problem.sigma_x, problem.spike_level, problem.spike_prob)
    fe = FinalEvaluation(config, problem, x, y, log)
    models = stored_models(run, config, problem, device)
    say = log or (lambda _: None)
    results: dict[str, dict[str, CascadeResult]] = {}
    for name, model in models.items():
        say(f"final evaluation: {name} model ({ev.strength})")
        sources: dict[str, Learner | None] = {
            "smooth": smoother(model) if isinstance(model, SymmetricReLUNet) else None,
            "clean": models["clean"] if name == "robust" else None,
        }
        results[name] = fe.model(model, sources)

    groups: dict[str, xr.Dataset] = {}
    if "robust" in models:
        say("final evaluation: threshold baseline")
        threshold, results["threshold"] = _threshold(fe, models, results)
        groups[V.THRESHOLD] = threshold
        grids = STRENGTH_GRIDS.get(ev.strength)
        if grids is not None and "l2" in ev.norms:
            say("final evaluation: attack strength")
            groups[V.ATTACK_STRENGTH] = _attack_strength(fe, models["robust"], results["robust"]["l2"], *grids)
    groups[V.EVALUATION] = _evaluation_group(fe, results)
    return groups


def format_r(r: float) -> str:
    """A threshold multiple as printed: one decimal on the grid, three for a refined ``r``."""
    return f"{r:.1f}" if round(r, 1) == r else f"{r:.3f}"


def refine_threshold(clean_accuracy: Callable[[float], float], grid: Sequence[float],
                     grid_clean: Sequence[float], target: float, steps: int = REFINE_STEPS) -> float | None:
    """The largest ``r`` found by bisection, between the grid's last ``r`` of clean accuracy
    ``≥ target`` (counting from the smallest) and the next ``r``, whose clean accuracy is still
    ``≥ target``; ``None`` where the grid does not cross the target or bisection finds nothing.

    A larger threshold buys robustness at the cost of clean accuracy, so the best threshold
    baseline of a given clean accuracy sits where the target is crossed.  One step of the grid
    moves the clean accuracy by up to 2.5 points (the default run, ``--seed 2``: 0.873 at
    ``r = 0.9``, 0.848 at 1.0, target 0.859), so on the grid alone the selected ``r`` could keep
    that much more clean accuracy than the target asks, and the robust accuracy it would buy.
    ``clean_accuracy(r)`` is the threshold model's clean accuracy on the held-out set.
    """
    ok = np.asarray(grid_clean) >= target
    if not ok[0] or ok.all():
        return None
    i = int(np.argmin(ok))  # the first r below the target
    lo, hi = float(grid[i - 1]), float(grid[i])
    start = lo
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if clean_accuracy(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo if lo > start else None


def _threshold(fe: FinalEvaluation, models: dict[str, Learner],
               results: dict[str, dict[str, CascadeResult]]) -> tuple[xr.Dataset, dict[str, CascadeResult]]:
    config = fe.config
    tr, net = config.train, config.net
    assert tr.adv_tau is not None and net.sigma_rho_ratio is not None
    clean = models["clean"]
    assert isinstance(clean, SymmetricReLUNet)
    select_norm = tr.adv_norm if tr.adv_norm in fe.norms else fe.norms[0]
    scale = 1.0 / math.sqrt(config.data.k)

    def net_at(r: float) -> SymmetricReLUNet:
        # built when needed, not kept: each keeps packed copies of its weights (purify.matmul.Reused)
        return threshold_net(clean.W, r, scale, tr.adv_norm, net.sigma_rho_ratio)

    def threshold_at(i: int) -> SymmetricReLUNet:
        return net_at(grid[i])

    def clean_accuracy(r: float) -> float:
        return float(sign_correct(net_at(r).forward(fe.x), fe.y).cpu().numpy().mean())

    grid = list(THRESHOLD_GRID)
    fast = [{norm: fe.fast(threshold_at(i), norm) for norm in fe.norms} for i in range(len(grid))]
    target = float(results["robust"][fe.norms[0]].clean_correct.mean()) - CLEAN_SLACK
    refined = refine_threshold(clean_accuracy, grid, [f[fe.norms[0]].clean_correct.mean() for f in fast], target)
    if refined is not None:  # one more point of the frontier, in order, evaluated like the others
        at = int(np.searchsorted(grid, refined))
        grid.insert(at, refined)
        fast.insert(at, {norm: fe.fast(threshold_at(at), norm) for norm in fe.norms})
    clean_acc = np.array([f[fe.norms[0]].clean_correct.mean() for f in fast])
    fast_acc = np.array([[f[norm].robust_correct.mean() for norm in fe.norms] for f in fast])
    eligible = np.flatnonzero(clean_acc >= target)
    if eligible.size == 0:  # no r keeps the clean accuracy: the least damaging one
        eligible = np.array([int(np.argmax(clean_acc))])
    s = fe.norms.index(select_norm)
    candidates = eligible[np.argsort(-fast_acc[eligible, s], kind="stable")][:THRESHOLD_CANDIDATES]
    # The full cascade, in the selection norm, of the candidates in order of their cheap-attack
    # accuracy.  A cascade only lowers accuracy, so a candidate whose cheap-attack accuracy is
    # already at or below the best full accuracy found cannot win: it is skipped (its full
    # accuracy stays NaN; the selection is the one running it would give).  The selected r is
    # then completed in the other norms.
    full_acc = np.full(fast_acc.shape, np.nan)
    full: dict[int, dict[str, CascadeResult]] = {}
    best = -1
    for i in (int(c) for c in candidates):
        if best >= 0 and fast_acc[i, s] <= full_acc[best, s]:
            continue
        model = threshold_at(i)
        full[i] = {select_norm: fe.full(model, select_norm, fast[i][select_norm], {"smooth": smoother(model)})}
        full_acc[i, s] = full[i][select_norm].robust_correct.mean()
        if best < 0 or full_acc[i, s] > full_acc[best, s]:
            best = i
    model = threshold_at(best)
    for j, norm in enumerate(fe.norms):
        if norm != select_norm:
            full[best][norm] = fe.full(model, norm, fast[best][norm], {"smooth": smoother(model)})
            full_acc[best, j] = full[best][norm].robust_correct.mean()
    dims = V.FINAL_LAYOUT[V.THRESHOLD]
    ds = xr.Dataset(
        {
            V.CLEAN_ACCURACY: (dims[V.CLEAN_ACCURACY], clean_acc.astype(np.float64), {"long_name": "held-out clean accuracy"}),
            V.ROBUST_ACCURACY_FAST: (dims[V.ROBUST_ACCURACY_FAST], fast_acc, {
                "long_name": "robust accuracy at tau under the cheap attacks (fgm, pgd, dense, noise)"}),
            V.ROBUST_ACCURACY: (dims[V.ROBUST_ACCURACY], full_acc, {
                "long_name": f"robust accuracy at tau under the {config.eval.strength} cascade (NaN: not computed, "
                             "see the attribute rule)"}),
        },
        coords={V.R: np.array(grid), V.NORM: np.array(fe.norms)},
        attrs={V.SELECTED_R: float(grid[best]), "candidates": ",".join(repr(float(grid[i])) for i in candidates),
               "selection_norm": select_norm, "clean_target": target, "train_norm": tr.adv_norm,
               "rule": "b_i = r * ||w_i||_q / sqrt(k) (q dual to the training norm), sigma_rho_i = "
                       "sigma_rho_ratio * b_i, clean weights; r on the grid 0.6 ... 2.0 plus refined_r, the "
                       f"largest r found by {REFINE_STEPS} bisection steps between the grid's last r that keeps "
                       "the clean target and the next; candidates: clean accuracy >= robust model's - "
                       f"{CLEAN_SLACK}, the best {THRESHOLD_CANDIDATES} by fast robust accuracy in the selection "
                       "norm; full cascade in that norm for each candidate that can still win (fast accuracy "
                       "above the best full one so far); selected: the best full; its other norms completed",
               **({} if refined is None else {"refined_r": refined})},
    )
    return ds, full[best]


def _attack_strength(fe: FinalEvaluation, model: Learner, cheap: CascadeResult,
                     steps_grid: Sequence[int], starts_grid: Sequence[int]) -> xr.Dataset:
    """Robust accuracy of the robust model at ``τ`` (ℓ₂) vs converged-PGD effort, on the first
    ``n_eval`` examples: the cheap attacks' survivors are attacked at each effort by H1a's
    nested :func:`purify.attacks.attack_strength`; the others count as broken."""
    from purify.attacks import attack_strength

    n = fe.config.eval.n_eval
    keep = np.flatnonzero(_cheap_survivors(cheap)[:n])
    acc = np.zeros((len(steps_grid), len(starts_grid)))
    if keep.size:
        idx = torch.as_tensor(keep, device=fe.device)
        proven = None
        if SKIP_CERTIFIED and cheap.certified is not None:
            proven = torch.as_tensor(cheap.certified[keep], device=fe.device)
        sub = attack_strength(model, fe.x[idx], fe.y[idx], fe.tau("l2"), norm="l2", steps_grid=tuple(steps_grid),
                              starts_grid=tuple(starts_grid), dense_direction=fe.problem.dense_direction(),
                              generator=rng.generator(int(fe.config.seed), "final/attack_strength", fe.device),
                              proven=proven)
        acc = np.asarray(sub, dtype=np.float64) * keep.size / n
    return xr.Dataset(
        {V.ACCURACY: (V.FINAL_LAYOUT[V.ATTACK_STRENGTH][V.ACCURACY], acc, {
            "long_name": "robust accuracy at tau (l2) of the robust model: cheap attacks, then converged PGD "
                         "at this effort on their survivors"})},
        coords={V.STEPS: np.array(steps_grid), V.STARTS: np.array(starts_grid)},
        attrs={"n_examples": int(n), "norm": "l2", "tau": fe.tau("l2"),
               "nesting": "attack_strength: the first s start points of the same draws; each effort keeps the "
                          "per-example best over all smaller efforts"},
    )


def _cheap_survivors(result: CascadeResult) -> np.ndarray:
    return result.clean_correct & result.each_correct.all(axis=0)


def _evaluation_group(fe: FinalEvaluation, results: dict[str, dict[str, CascadeResult]]) -> xr.Dataset:
    names = [m for m in MODELS if m in results]
    n = fe.x.shape[0]
    first = fe.norms[0]
    clean = np.stack([results[m][first].clean_correct for m in names]).astype(np.uint8)
    robust = np.stack([[results[m][nm].robust_correct for nm in fe.norms] for m in names]).astype(np.uint8)
    broken = np.stack([[results[m][nm].broken_by for nm in fe.norms] for m in names]).astype(np.int8)
    each = np.stack([[results[m][nm].each_correct for nm in fe.norms] for m in names]).astype(np.uint8)
    has_certificate = [m for m in names if results[m][first].certified is not None]
    proven = np.stack([[np.zeros(n, bool) if results[m][nm].certified is None else results[m][nm].certified
                        for nm in fe.norms] for m in names]).astype(np.uint8)
    ev = fe.config.eval
    dims = V.FINAL_LAYOUT[V.EVALUATION]
    return xr.Dataset(
        {
            V.CLEAN_CORRECT: (dims[V.CLEAN_CORRECT], clean, {"long_name": "sign f(x) = y on held-out example"}),
            V.ROBUST_CORRECT: (dims[V.ROBUST_CORRECT], robust, {
                "long_name": "clean-correct and no attack of the cascade flipped it at tau"}),
            V.BROKEN_BY: (dims[V.BROKEN_BY], broken, {
                "long_name": "index into `attack` of the first attack that flipped it; -1: none did "
                             "(or wrong clean, never attacked)"}),
            V.CHEAP_CORRECT: (dims[V.CHEAP_CORRECT], each, {
                "long_name": "clean-correct and not flipped at tau by this cheap attack alone"}),
            V.CERTIFIED: (dims[V.CERTIFIED], proven, {
                "long_name": "proven robust at tau: y f(x + delta) > 0 for every delta of the ball, by the linear "
                             "relaxation of purify.certificate (net of float error); 0 for models without one"}),
        },
        coords={V.MODEL: np.array(names), V.NORM: np.array(fe.norms), V.EXAMPLE: np.arange(n),
                V.ATTACK: np.array(fe.attack_names), V.CHEAP_ATTACK: np.array(fe.cheap),
                V.TAU: (V.NORM, np.array([fe.tau(nm) for nm in fe.norms]))},
        attrs={"strength": ev.strength, "attacks": ",".join(fe.attack_names), "radius_multiple": 1.0,
               "n_examples": int(n), "certified_models": ",".join(has_certificate),
               "paired": "every model sees the same examples and, per (norm, attack), the same random stream"},
    )


def accuracy_and_se(correct: np.ndarray) -> tuple[float, float]:
    """``(mean, SE)`` of per-example 0/1 outcomes."""
    v = np.asarray(correct, dtype=np.float64)
    return float(v.mean()), standard_error(v)

"""The run store's schema: its groups, dimensions and variables, in one place.

Everything that writes a run store (the recorder, the end-of-phase evaluation) and everything
that reads one back (the summary, :class:`~purify.analysis.rundata.RunData`, the figures)
spells a group or variable name through the constants here, so renaming one is one edit.
The layout of a run store (``RUN/store.zarr``)::

    /                 the training record
      loss, train_accuracy, bias_mean, sigma_rho_mean, weight_norm_mean    (iteration)
      clean_accuracy                                                       (step)
      robust_accuracy                                   (step, norm, attack, radius)
      strongest_accuracy                                        (step, norm, radius)
      ideal_clean_accuracy (), ideal_robust_accuracy (norm, attack, radius),
      ideal_strongest_accuracy (norm, radius)
      coords: step, phase(step), iteration, iteration_phase(iteration), norm, attack,
              radius, tau(norm, radius)
    /snapshots        W (step, neuron, input), b (step, neuron), sigma_rho (step, neuron)
    /problem          M (input, feature), w_star (feature), test_label (example)
    /evaluation       per-example outcomes of the end-of-phase evaluation (model, norm, example)
    /threshold        the threshold baseline along its grid r
    /attack_strength  robust accuracy against converged-PGD effort (steps, starts)
    /analysis/<name>  one group per analysis (written by ``purify analyze``)

``step`` holds the training steps of the evaluation points (a snapshot is taken at each),
``iteration`` those of the log points.  Values not yet written are NaN:
:func:`store_template` pre-allocates every group a run fills as it trains, and the row
functions (:func:`log_row`, :func:`eval_row`, :func:`snapshot_row`) build the rows written
into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr

if TYPE_CHECKING:
    from torch import Tensor

    from purify.config import RunConfig
    from purify.data import Batch, SparseCodingProblem
    from purify.train import Timeline

# -- groups ----------------------------------------------------------------------------
ROOT = ""
SNAPSHOTS = "snapshots"
PROBLEM = "problem"
EVALUATION = "evaluation"
THRESHOLD = "threshold"
ATTACK_STRENGTH = "attack_strength"
#: The groups the end-of-phase evaluation writes (:mod:`purify.final_evaluation`).
FINAL_GROUPS = (EVALUATION, THRESHOLD, ATTACK_STRENGTH)

# -- dimensions and coordinates ---------------------------------------------------------
STEP = "step"  # evaluation points (and snapshots)
PHASE = "phase"  # "clean" / "adversarial" along step
ITERATION = "iteration"  # log points
ITERATION_PHASE = "iteration_phase"  # "clean" / "adversarial" along iteration
NORM = "norm"
ATTACK = "attack"
RADIUS = "radius"  # multiples of tau
TAU = "tau"  # (norm, radius): the radii in input units
NEURON = "neuron"
INPUT = "input"
FEATURE = "feature"
MODEL = "model"
EXAMPLE = "example"
CHEAP_ATTACK = "cheap_attack"
R = "r"  # threshold multiples of the threshold baseline
STEPS = "steps"  # converged-PGD steps of the attack-strength curve
STARTS = "starts"  # its start points

# -- root, per log point (iteration) ------------------------------------------------------
LOSS = "loss"
TRAIN_ACCURACY = "train_accuracy"
BIAS_MEAN = "bias_mean"
SIGMA_RHO_MEAN = "sigma_rho_mean"
WEIGHT_NORM_MEAN = "weight_norm_mean"
# -- root, per evaluation point (step), and the ideal model's once ---------------------------
CLEAN_ACCURACY = "clean_accuracy"
ROBUST_ACCURACY = "robust_accuracy"
STRONGEST_ACCURACY = "strongest_accuracy"
IDEAL_CLEAN_ACCURACY = "ideal_clean_accuracy"
IDEAL_ROBUST_ACCURACY = "ideal_robust_accuracy"
IDEAL_STRONGEST_ACCURACY = "ideal_strongest_accuracy"
# -- snapshots ---------------------------------------------------------------------------
W = "W"
B = "b"
SIGMA_RHO = "sigma_rho"
# -- problem -----------------------------------------------------------------------------
M = "M"
W_STAR = "w_star"
TEST_LABEL = "test_label"  # the held-out labels the run used (ties: see purify.data.labels)
# -- evaluation (per example) -------------------------------------------------------------
CLEAN_CORRECT = "clean_correct"
ROBUST_CORRECT = "robust_correct"
BROKEN_BY = "broken_by"
CHEAP_CORRECT = "cheap_correct"
CERTIFIED = "certified"  # proven robust over the whole ball (purify.certificate)
# -- threshold (also CLEAN_ACCURACY and ROBUST_ACCURACY along r) ----------------------------
ROBUST_ACCURACY_FAST = "robust_accuracy_fast"
SELECTED_R = "selected_r"  # attribute: the selected threshold multiple
# -- attack_strength -----------------------------------------------------------------------
ACCURACY = "accuracy"

# -- the summary (attribute ``summary_json``, written by :mod:`purify.summary`) -----------------
CLEAN_MODEL = "clean_model"
ROBUST_MODEL = "robust_model"
BIAS_ONLY_MODEL = "bias_only_model"
THRESHOLD_MODEL = "threshold_model"
IDEAL_MODEL = "ideal_model"
#: The summary's block of each model of the ``evaluation`` group (its ``model`` coordinate).
SUMMARY_MODELS = {"clean": CLEAN_MODEL, "robust": ROBUST_MODEL, "bias_only": BIAS_ONLY_MODEL,
                  "threshold": THRESHOLD_MODEL, "ideal": IDEAL_MODEL}
# A model block holds CLEAN_ACCURACY, ROBUST_ACCURACY (there: the strongest attack at tau in l2),
ROBUST_ACCURACY_LINF = "robust_accuracy_linf"  # the same in linf
ROBUST_ACCURACY_BY_ATTACK = "robust_accuracy_by_attack"  # {attack: accuracy} in l2
CERTIFIED_ACCURACY = "certified_accuracy"  # proven robust in l2: a lower bound (runs since it existed)
CERTIFIED_ACCURACY_LINF = "certified_accuracy_linf"  # the same in linf
# and the summary, besides TAU (l2, radius multiple 1):
RELATIVE_WEIGHT_CHANGE = "relative_weight_change"
MEDIAN_THETA = "median_theta_clean_robust"
PAIRED = "paired"  # {robust_minus_<model>: {value, se}}: paired differences in the primary norm
PURIFICATION = "purification"  # medians of dense alignment and effective r, and the norm share

#: Variables and their dims of the groups the end-of-phase evaluation writes (it builds them
#: from here); the groups a run fills as it trains are laid out by :func:`store_template`.
FINAL_LAYOUT: dict[str, dict[str, tuple[str, ...]]] = {
    EVALUATION: {CLEAN_CORRECT: (MODEL, EXAMPLE), ROBUST_CORRECT: (MODEL, NORM, EXAMPLE),
                 BROKEN_BY: (MODEL, NORM, EXAMPLE), CHEAP_CORRECT: (MODEL, NORM, CHEAP_ATTACK, EXAMPLE),
                 CERTIFIED: (MODEL, NORM, EXAMPLE)},
    THRESHOLD: {CLEAN_ACCURACY: (R,), ROBUST_ACCURACY_FAST: (R, NORM), ROBUST_ACCURACY: (R, NORM)},
    ATTACK_STRENGTH: {ACCURACY: (STEPS, STARTS)},
}

#: How the per-step robust accuracies are measured (the end-of-phase models get more: the
#: ``evaluation`` group).
FAST_EVALUATION = "fast: fgm, pgd-10, dense, noise on the first n_eval examples"


def by_norm(values: Mapping[str, np.ndarray], norms: Sequence[str]) -> np.ndarray:
    """Per-norm arrays stacked along a leading ``norm`` axis, as float32: ``(len(norms), ...)``."""
    return np.stack([values[n] for n in norms]).astype(np.float32)


def store_template(
    config: RunConfig, timeline: Timeline, problem: SparseCodingProblem, ideal: dict, test_labels: Tensor
) -> dict[str, xr.Dataset]:
    """The pre-allocated groups of a run store (NaN where values are still to come).

    Parameters
    ----------
    config : the resolved run config.
    timeline : its evaluation (``step``) and log (``iteration``) points.
    problem : the dictionary ``M (d, D)`` and teacher ``w* (D,)``.
    test_labels : the held-out labels ``(n_test,)`` the run evaluates with.  They are stored
        because a tie ``<w*, z> = 0`` takes the sign of a float32 round-off that differs
        between CPUs (:func:`purify.data.labels`); everything else of the held-out set is
        regenerated from the seed.
    ideal : the ideal model's evaluation, ``{"clean": float, "robust": {norm: (attack, radius)},
        "strongest": {norm: (radius,)}}``.

    Returns
    -------
    dict
        ``{ROOT: ..., SNAPSHOTS: ..., PROBLEM: ...}``.
    """
    ev = config.eval
    m, d, D = config.net.width, config.data.d, config.data.n_features
    n_eval, n_log = len(timeline.eval_steps), len(timeline.log_steps)
    norms, attacks, radii = list(ev.norms), list(ev.attacks), list(ev.radii)

    def nan(*shape: int) -> np.ndarray:
        # A read-only view of one NaN, not an array: the snapshots' template is 104 MB at the
        # default size (416 MB at d = 2000), and first touching that much fresh memory took
        # 1–5 s here; the store is written chunk by chunk from it, the same bytes either way.
        return np.broadcast_to(np.float32(np.nan), shape)

    phase = timeline.phase(timeline.eval_steps).astype(str)
    coords = {
        STEP: (STEP, timeline.eval_steps),
        PHASE: (STEP, phase),
        ITERATION: (ITERATION, timeline.log_steps),
        ITERATION_PHASE: (ITERATION, timeline.phase(timeline.log_steps).astype(str)),
        NORM: (NORM, np.array(norms)),
        ATTACK: (ATTACK, np.array(attacks)),
        RADIUS: (RADIUS, np.array(radii, np.float64)),
        TAU: ((NORM, RADIUS), np.array([ev.taus(n) for n in norms])),
    }
    fast = {"evaluation": FAST_EVALUATION}
    root = xr.Dataset(
        {
            LOSS: (ITERATION, nan(n_log), {"long_name": "mean training objective since the previous log point"}),
            TRAIN_ACCURACY: (ITERATION, nan(n_log), {"long_name": "mean training-batch accuracy (on perturbed inputs in adversarial training)"}),
            BIAS_MEAN: (ITERATION, nan(n_log), {"long_name": "mean bias b_i"}),
            SIGMA_RHO_MEAN: (ITERATION, nan(n_log), {"long_name": "mean smoothing sigma_rho_i"}),
            WEIGHT_NORM_MEAN: (ITERATION, nan(n_log), {"long_name": "mean ||w_i||_2"}),
            CLEAN_ACCURACY: (STEP, nan(n_eval), {"long_name": "held-out clean accuracy"}),
            ROBUST_ACCURACY: ((STEP, NORM, ATTACK, RADIUS), nan(n_eval, len(norms), len(attacks), len(radii)),
                              {"long_name": "held-out accuracy under each attacker at radius tau", **fast}),
            STRONGEST_ACCURACY: ((STEP, NORM, RADIUS), nan(n_eval, len(norms), len(radii)),
                                 {"long_name": "held-out accuracy under the per-example worst attacker", **fast}),
            IDEAL_CLEAN_ACCURACY: ((), np.float32(ideal["clean"])),
            IDEAL_ROBUST_ACCURACY: ((NORM, ATTACK, RADIUS), by_norm(ideal["robust"], norms), fast),
            IDEAL_STRONGEST_ACCURACY: ((NORM, RADIUS), by_norm(ideal["strongest"], norms), fast),
        },
        coords=coords,
    )
    snapshots = xr.Dataset(
        {
            W: ((STEP, NEURON, INPUT), nan(n_eval, m, d), {"long_name": "hidden weights w_i as rows"}),
            B: ((STEP, NEURON), nan(n_eval, m), {"long_name": "bias b_i"}),
            SIGMA_RHO: ((STEP, NEURON), nan(n_eval, m), {"long_name": "smoothing sigma_rho_i"}),
        },
        coords={STEP: timeline.eval_steps, PHASE: (STEP, phase)},
    )
    prob = xr.Dataset(
        {
            M: ((INPUT, FEATURE), problem.M.cpu().numpy(), {"long_name": "dictionary (unit-norm columns)"}),
            W_STAR: (FEATURE, problem.w_star.cpu().numpy(), {"long_name": "teacher"}),
            TEST_LABEL: (EXAMPLE, test_labels.cpu().numpy().astype(np.int8), {
                "long_name": "held-out labels y = sign(<w*, z>) as the run drew them (the sign of a tie is "
                             "its float32 round-off on the machine that made the run)"}),
        },
        coords={INPUT: np.arange(d), FEATURE: np.arange(D), EXAMPLE: np.arange(len(test_labels))},
    )
    return {ROOT: root, SNAPSHOTS: snapshots, PROBLEM: prob}


# -- rows ------------------------------------------------------------------------------


def log_row(loss: float, accuracy: float, count: int, weights: Tensor, bias: Tensor,
            smoothing: Tensor) -> dict[str, np.ndarray]:
    """One log point of the root group (along ``iteration``).

    Parameters
    ----------
    loss, accuracy : sums of the batch loss and accuracy since the previous log point.
    count : how many batches they sum (0 gives zeros).
    weights, bias, smoothing : the network at the log point: ``W (m, d)``, ``b (m,)``, ``σ_ρ (m,)``.
    """
    return {
        LOSS: np.float32(loss / max(count, 1)),
        TRAIN_ACCURACY: np.float32(accuracy / max(count, 1)),
        BIAS_MEAN: np.float32(bias.mean()),
        SIGMA_RHO_MEAN: np.float32(smoothing.mean()),
        WEIGHT_NORM_MEAN: np.float32(weights.norm(dim=1).mean()),
    }


def eval_row(result: dict, norms: Sequence[str]) -> dict[str, np.ndarray]:
    """One evaluation point of the root group (along ``step``) from
    ``{"clean": float, "robust": {norm: (attack, radius)}, "strongest": {norm: (radius,)}}``."""
    return {
        CLEAN_ACCURACY: np.float32(result["clean"]),
        ROBUST_ACCURACY: by_norm(result["robust"], norms),
        STRONGEST_ACCURACY: by_norm(result["strongest"], norms),
    }


def snapshot_row(weights: Tensor, bias: Tensor, smoothing: Tensor) -> dict[str, np.ndarray]:
    """One snapshot (along ``step``): ``W (m, d)``, ``b (m,)``, ``σ_ρ (m,)``."""
    return {W: weights.cpu().numpy(), B: bias.cpu().numpy(), SIGMA_RHO: smoothing.cpu().numpy()}


def with_stored_labels(test: Batch, problem: xr.Dataset) -> Batch:
    """The held-out set ``test``, regenerated from the run's seed, with the labels the run
    stored in its ``problem`` group; ``test`` itself for stores made before they were stored.

    A tie ``<w*, z> = 0`` takes the sign of a float32 round-off, which differs between CPU
    vendors (:func:`purify.data.labels`); the inputs and codes do not go through those sums.
    The stored labels keep a run resumed or analysed on another machine on the examples its
    own evaluation scored.
    """
    if TEST_LABEL not in problem:
        return test
    y = problem[TEST_LABEL].values
    if y.shape != tuple(test.y.shape):
        raise ValueError(f"the store holds {y.shape[0]} held-out labels for {test.y.shape[0]} held-out examples")
    return dataclasses.replace(test, y=torch.from_numpy(y).to(test.y))

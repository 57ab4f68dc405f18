"""Lottery tickets: which feature each neuron is lucky for at init, and whether it wins it.

Allen-Zhu & Li (2020), §6.1 and Lemma B.2 / Definition B.1.  At initialization
``w_i⁰ ~ N(0, σ₀² I)`` and each correlation ``<M_j, w_i⁰>`` is ``N(0, σ₀²)`` (unit-norm atoms), so
the *score*

    score(i, j) = <M_j, w_i⁰>² / (σ₀² log d)

has a maximum over ``j`` of about 2 for most neurons.  Definition B.1 (with ``σ_w⁰ = σ₀`` and the
thresholds ``c₁ − c₂ = 2.01``, ``c₁ + c₂ = 2.02`` that §6.1 quotes) defines

* ``S_pot(j)``: neurons with ``score(i, j) ≥ 2.01`` (potentially lucky for ``j``);
* ``S_sure(j)``: neurons with ``score(i, j) ≥ 2.02``, ``score(i, j') < 2.01`` for every ``j' ≠ j``,
  **and** ``sign <w_i⁰, M_j> = sign w*_j`` (the third condition of Def. B.1, which the informal
  §6.1 (iii) omits; ``require_sign=False`` drops it).

The lottery-ticket process (Theorem C.1/C.2) says a neuron of ``S_sure(j)`` grows along ``M_j``
faster than along any other atom and keeps that feature as its largest component.  This module
measures whether it does: each neuron's top feature ``argmax_j |<M_j, w_i>|`` at every snapshot,
the ratio of its top to its second coefficient, and summaries at the end of clean training.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from purify.analysis.rundata import RunData

NAME = "lottery"


def init_scores(C0: np.ndarray, sigma0: float, d: int) -> np.ndarray:
    """``<M_j, w_i⁰>² / (σ₀² log d)`` of shape ``(m, D)`` from the init coefficients ``C0 = W⁰M``
    (§6.1, Lemma B.2).

    ``log`` is the natural logarithm of the input dimension ``d``, as in the paper's Gaussian
    tail bounds (proof of Lemma B.2).
    """
    return C0**2 / (sigma0**2 * math.log(d))


def lottery_sets(
    score: np.ndarray,
    coef_sign_agrees: np.ndarray | None,
    *,
    pot: float = 2.01,
    sure: float = 2.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Membership ``i ∈ S_pot(j)`` and ``i ∈ S_sure(j)``, both boolean ``(m, D)`` (Def. B.1).

    Parameters
    ----------
    score : (m, D) init scores (:func:`init_scores`).
    coef_sign_agrees : (m, D) boolean ``sign <w_i⁰, M_j> = sign w*_j``, or ``None`` to drop
        Definition B.1's sign condition (§6.1 (iii) states the set without it).
    pot, sure : the thresholds ``c₁ − c₂`` and ``c₁ + c₂`` (2.01 and 2.02 in §6.1).
    """
    potential = score >= pot
    # Features j' ≠ j at or above pot: all of them minus j itself when j is among them.
    others_at_least_pot = potential.sum(axis=1, keepdims=True) - potential
    sure_mask = (score >= sure) & (others_at_least_pot == 0)
    if coef_sign_agrees is not None:
        sure_mask &= coef_sign_agrees
    return potential, sure_mask


def top_two(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``|C|``: the index of the largest entry, the largest and the second largest."""
    A = np.abs(C)
    top = A.argmax(axis=1)
    if A.shape[1] == 1:
        return top, A[:, 0], np.zeros(A.shape[0])
    two = -np.partition(-A, 1, axis=1)[:, :2]  # the two largest, descending
    return top, two[:, 0], two[:, 1]


def winner_stable_steps(top: np.ndarray, steps: np.ndarray, end: int) -> np.ndarray:
    """First snapshot step from which each neuron's top feature equals its value at snapshot
    index ``end`` and stays so through ``end`` (a Theorem C.2 "keeps its lottery ticket" check).

    ``top`` is ``(n_steps, m)``; the result is ``(m,)`` steps.
    """
    differs = top[: end + 1] != top[end][None, :]
    # index of the last snapshot (≤ end) whose winner differs; −1 when none does
    idx = np.arange(end + 1)[:, None]
    last = np.where(differs, idx, -1).max(axis=0)
    return steps[last + 1]


def compute(
    data: RunData,
    *,
    pot: float = 2.01,
    sure: float = 2.02,
    require_sign: bool = True,
    min_ratio: float = 2.0,
) -> xr.Dataset:
    """Lottery-ticket sets at init and each neuron's winning feature over training (§6.1).

    Parameters
    ----------
    data : the run.
    pot, sure : thresholds of ``S_pot`` and ``S_sure`` on the score (2.01, 2.02 in §6.1).
    require_sign : apply Definition B.1's ``sign <w_i⁰, M_j> = sign w*_j`` condition to ``S_sure``.
    min_ratio : a feature counts as *learned* when it is the top feature of a neuron whose top
        coefficient is at least ``min_ratio`` times its second.

    Returns
    -------
    xr.Dataset
        See the ``long_name`` of each variable; summaries are 0-d.
    """
    cfg = data.config
    M = data.M.astype(np.float64)
    w_star = data.w_star
    steps = np.asarray(data.steps)
    step_list = [int(s) for s in steps]
    m, D = cfg.net.width, M.shape[1]
    i_clean, i_final = step_list.index(data.clean_end), step_list.index(data.final)

    tops = np.empty((len(steps), m), np.int64)
    top_c = np.empty((len(steps), m))
    second_c = np.empty((len(steps), m))
    lucky_c = np.full((len(steps), m), np.nan)
    lucky = None
    for s, step in enumerate(step_list):
        C = data.W(step).astype(np.float64) @ M
        if s == 0:
            # Step 0 is the initialization w⁰ (RunData's contract).
            score = init_scores(C, cfg.net.sigma0, cfg.data.d)
            agrees = np.sign(C) == np.sign(w_star)[None, :] if require_sign else None
            potential, sure_mask = lottery_sets(score, agrees, pot=pot, sure=sure)
            lucky = np.where(sure_mask.any(axis=1), sure_mask.argmax(axis=1), -1)
        tops[s], top_c[s], second_c[s] = top_two(C)
        has = lucky >= 0
        lucky_c[s, has] = C[np.flatnonzero(has), lucky[has]]
    ratio = np.divide(top_c, second_c, out=np.full_like(top_c, np.inf), where=second_c > 0)

    sure_neurons = np.flatnonzero(lucky >= 0)
    top_clean = tops[i_clean]
    if sure_neurons.size:
        win = float(np.mean(top_clean[sure_neurons] == lucky[sure_neurons]))
        # Permutation null: if the clean-end winners were shuffled among the neurons, neuron i
        # would win its lucky feature j with probability (#neurons whose winner is j) / m.
        popularity = np.bincount(top_clean, minlength=D) / m
        chance = float(np.mean(popularity[lucky[sure_neurons]]))
    else:
        win = chance = float("nan")

    def learned(s: int) -> int:
        return int(np.unique(tops[s][ratio[s] >= min_ratio]).size)

    stable = winner_stable_steps(tops, steps, i_clean)
    neuron, feature = np.arange(m), np.arange(D)
    ds = xr.Dataset(
        {
            "score": (("neuron", "feature"), score.astype(np.float32),
                      {"long_name": "init score <M_j, w_i^0>^2 / (sigma0^2 log d) (Lemma B.2)"}),
            "potential": (("neuron", "feature"), potential,
                          {"long_name": f"neuron i in S_pot(j): score >= {pot}"}),
            "sure": (("neuron", "feature"), sure_mask,
                     {"long_name": f"neuron i in S_sure(j): score_j >= {sure}, all other scores < {pot}"
                                   + (", sign <w_i^0,M_j> = sign w*_j (Def. B.1)" if require_sign else "")}),
            "n_potential": ("feature", potential.sum(axis=0).astype(np.int64),
                            {"long_name": "|S_pot(j)|: potentially lucky neurons per feature"}),
            "n_sure": ("feature", sure_mask.sum(axis=0).astype(np.int64),
                       {"long_name": "|S_sure(j)|: surely lucky neurons per feature"}),
            "lucky_feature": ("neuron", lucky.astype(np.int64),
                              {"long_name": "feature j with neuron i in S_sure(j), -1 if none"}),
            "top_feature": (("step", "neuron"), tops,
                            {"long_name": "top feature argmax_j |<M_j, w_i>|"}),
            "top_ratio": (("step", "neuron"), ratio,
                          {"long_name": "largest |<M_j, w_i>| over the second largest"}),
            "top_coef": (("step", "neuron"), top_c, {"long_name": "largest |<M_j, w_i>|"}),
            "second_coef": (("step", "neuron"), second_c, {"long_name": "second largest |<M_j, w_i>|"}),
            "lucky_coef": (("step", "neuron"), lucky_c,
                           {"long_name": "<M_j, w_i> for the neuron's lucky feature j (NaN if not surely lucky)"}),
            "winner_stable_step": ("neuron", stable.astype(np.int64),
                                   {"long_name": "first snapshot step from which the top feature equals its "
                                                 "clean-end value through the end of clean training"}),
            "n_sure_neurons": ((), np.int64(sure_neurons.size),
                               {"long_name": "number of surely lucky neurons (in some S_sure(j))"}),
            "potential_neuron_fraction": ((), float(potential.any(axis=1).mean()),
                                          {"long_name": "fraction of neurons in some S_pot(j) (Sec. 6.1 (ii))"}),
            "sure_neuron_fraction": ((), float(sure_neurons.size / m),
                                     {"long_name": "fraction of neurons in some S_sure(j) (Sec. 6.1 (iii))"}),
            "sure_win_fraction": ((), win,
                                  {"long_name": "fraction of surely lucky neurons whose top feature at the end "
                                                "of clean training is their lucky feature"}),
            "sure_win_chance": ((), chance,
                                {"long_name": "sure_win_fraction expected if the clean-end top features were "
                                              "shuffled among neurons: mean over sure neurons of the share of "
                                              "neurons whose top feature is their lucky feature"}),
            "kept_top_fraction": ((), float(np.mean(top_clean == tops[0])),
                                  {"long_name": "fraction of neurons whose top feature at the end of clean "
                                                "training equals their top feature at init"}),
            "features_learned": ((), np.int64(learned(i_clean)),
                                 {"long_name": f"distinct features that are the top feature of a neuron with "
                                               f"top_ratio >= {min_ratio} at the end of clean training"}),
            "features_learned_final": ((), np.int64(learned(i_final)),
                                       {"long_name": f"distinct features that are the top feature of a neuron "
                                                     f"with top_ratio >= {min_ratio} at the final step"}),
        },
        coords={"step": steps, "neuron": neuron, "feature": feature},
    )
    ds.attrs.update(analysis=NAME, pot=float(pot), sure=float(sure), require_sign=int(require_sign),
                    min_ratio=float(min_ratio), sigma0=float(cfg.net.sigma0), log_d=math.log(cfg.data.d),
                    clean_end=int(data.clean_end), final=int(data.final),
                    paper="Allen-Zhu & Li 2020, Sec. 6.1, Definition B.1, Lemma B.2")
    return ds

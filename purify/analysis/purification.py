"""Feature purification: how far neurons move, and whether directions or norms buy robustness.

Allen-Zhu & Li (2020), §1 (the ``θ`` measures of Figure 2), Theorem 5.1a and Theorem 5.3c.
With ``w⁰_i`` the init, ``w_i`` the clean-trained and ``w'_i`` the adversarially trained neuron
and ``θ(u, v) = |<u, v>| / (‖u‖ ‖v‖)``, the purification principle predicts ``θ(w⁰_i, w_i)`` and
``θ(w⁰_i, w'_i)`` small (features leave the init), ``θ(w_i, w'_i)`` close to 1 (adversarial
training changes features only locally), ``θ(w_i, w_j)`` small for ``i ≠ j``, and
``Σ‖w_i − w'_i‖² = o(1) Σ‖w_i‖²`` along adversarial training (Theorem 5.3c).

**Direction vs norm control** (not in the paper).  Adversarial training keeps the
biases ``b_i`` (Algorithm 2), so shrinking ``‖w_i‖`` alone raises each neuron's effective
threshold ``b_i/‖w_i‖`` and can buy robustness without any purification of directions.  Four
networks share the frozen biases and smoothing of the final step and differ in their weights
(under the default ``adv_bias = "radius"`` those biases were raised when adversarial training
began, so ``clean`` is then the bias-only control of the run's summary, not the clean model):

* ``clean``: ``w_i``;  ``robust``: ``w'_i``;
* ``clean_dir_robust_norm``: ``w_i · ‖w'_i‖/‖w_i‖`` (only the norms of adversarial training);
* ``robust_dir_clean_norm``: ``w'_i · ‖w_i‖/‖w'_i‖`` (only its directions).

Each is attacked with the run's own ℓ₂ attackers on the run's radius grid.  With ``acc`` the
strongest (per-example worst attacker) robust accuracy at radius multiple 1, the gain of
adversarial training ``acc(robust) − acc(clean)`` is set against the norm share
``acc(clean_dir_robust_norm) − acc(clean)`` and the direction share
``acc(robust_dir_clean_norm) − acc(clean)``.  The shares need not add up to the total (the
effects interact); their fractions of the total are reported as they are.

**Dictionary surgery** (Theorem 5.2, eq. (5.1); Theorem 5.3).  The control above asks whether
norms or directions buy robustness; the surgery asks *which part of the direction*.  Each
neuron is split into its pure part (its few top dictionary atoms ``N_i``) and its dense part,
whose component along ``Σ_{j∉N_i} w*_j M_j`` is the mixture eq. (5.1) predicts
(:func:`purify.analysis.alignment.surgery_weights` documents the six variants: ``clean``,
``clean_minus_dense_mwstar``, ``clean_pure``, ``clean_pure_robust_dense``,
``robust_pure_clean_dense``, ``robust``).  Every variant is attacked at ``τ`` with the same
attackers, examples and random stream as the control, once under the clean model's stored
biases and smoothing and once under the robust model's: if removing the clean neurons' dense
``M w*`` component at the clean biases recovers most of the robust model's accuracy, the dense
mixture is what made the clean model fragile; the second bias setting shows how much of the
rest is the raised threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import xarray as xr

from purify import rng
from purify.analysis.alignment import SURGERY, surgery_weights
from purify.analysis.rundata import RunData
from purify.evaluate import evaluate, make_attacks
from purify.summary import cosines, relative_change

NAME = "purification"
VARIANTS = ("clean", "robust", "clean_dir_robust_norm", "robust_dir_clean_norm")
BIASES = ("clean", "robust")  # the surgery's bias settings: stored at the end of clean / adversarial training


def neuron_pairs(m: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``: all of them when there are at most ``n_pairs``, otherwise
    ``n_pairs`` drawn uniformly (with replacement) from the stream ``analysis/purification/pairs``."""
    if m < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if m * (m - 1) // 2 <= n_pairs:
        i, j = np.triu_indices(m, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    g = np.random.default_rng(rng.stream_seed(seed, "analysis/purification/pairs"))
    i = g.integers(0, m, n_pairs)
    j = (i + g.integers(1, m, n_pairs)) % m  # uniform over the m − 1 others
    return np.minimum(i, j), np.maximum(i, j)


def pair_overlap(W: np.ndarray) -> float:
    """``Σ_{i,j} <w_i, w_j>² / (Σ_i ‖w_i‖²)²`` (Theorem 5.1a; ``o(1)`` for nearly orthogonal
    neurons, ``≥ 1/m``).  Uses ``‖W Wᵀ‖_F = ‖Wᵀ W‖_F``, the smaller Gram matrix."""
    G = W.T @ W if W.shape[0] > W.shape[1] else W @ W.T
    return float((G**2).sum() / (W**2).sum() ** 2)


def init_overlap(W: np.ndarray, W0: np.ndarray) -> float:
    """``Σ_i <w_i, w⁰_i>² / Σ_i ‖w_i‖² ‖w⁰_i‖²`` (Theorem 5.1a: ``o(1)`` once features leave init)."""
    num = ((W * W0).sum(axis=1) ** 2).sum()
    return float(num / ((W**2).sum(axis=1) * (W0**2).sum(axis=1)).sum())


def rescale_rows(direction: np.ndarray, norm_from: np.ndarray) -> np.ndarray:
    """Rows of ``direction`` rescaled to the row norms of ``norm_from`` (zero rows stay zero)."""
    a = np.linalg.norm(direction, axis=1, keepdims=True)
    b = np.linalg.norm(norm_from, axis=1, keepdims=True)
    return direction * np.divide(b, a, out=np.zeros_like(a), where=a > 0)


def control_weights(W_clean: np.ndarray, W_robust: np.ndarray) -> dict[str, np.ndarray]:
    """The four weight matrices of the direction/norm control (module docstring), float32."""
    Wc, Wr = W_clean.astype(np.float64), W_robust.astype(np.float64)
    return {
        "clean": W_clean.astype(np.float32),
        "robust": W_robust.astype(np.float32),
        "clean_dir_robust_norm": rescale_rows(Wc, Wr).astype(np.float32),
        "robust_dir_clean_norm": rescale_rows(Wr, Wc).astype(np.float32),
    }


def compute(
    data: RunData,
    *,
    n_pairs: int = 20000,
    control: bool = True,
    control_radii: tuple[float, ...] | None = (1.0,),
    surgery: bool = True,
) -> xr.Dataset:
    """``θ`` distributions, relative change along adversarial training and the direction vs
    norm control (module docstring).

    Parameters
    ----------
    data : the run.
    n_pairs : number of neuron pairs ``i ≠ j`` for ``θ(w_i, w_j)`` (all pairs if fewer exist).
    control : run the direction vs norm control (the costly part: four robust evaluations).
    surgery : run the dictionary surgery (twelve robust evaluations, at ``τ`` only).
    control_radii : ℓ₂ radii of the control as multiples of ``τ``; default ``(1.0,)``, the
        radius the gains are read at; ``None`` → the run's whole grid (``config.eval.radii``),
        which multiplies the control's cost by the grid's length.

    Returns
    -------
    xr.Dataset
    """
    cfg = data.config
    steps = np.asarray(data.steps)
    step_list = [int(s) for s in steps]
    W0 = data.W(step_list[0]).astype(np.float64)
    Wc = data.W(data.clean_end).astype(np.float64)
    Wr = data.W(data.final).astype(np.float64)
    m = W0.shape[0]
    pi, pj = neuron_pairs(m, n_pairs, int(cfg.seed))

    def pair_theta(W: np.ndarray) -> np.ndarray:
        return cosines(W[pi], W[pj])

    rel = np.full(len(steps), np.nan)
    for s, step in enumerate(step_list):
        if step >= data.clean_end:
            rel[s] = relative_change(Wc, data.W(step).astype(np.float64))

    th = {
        "theta_init_clean": cosines(W0, Wc),
        "theta_init_robust": cosines(W0, Wr),
        "theta_clean_robust": cosines(Wc, Wr),
    }
    pairs = {"theta_pairs_init": pair_theta(W0), "theta_pairs_clean": pair_theta(Wc),
             "theta_pairs_robust": pair_theta(Wr)}
    labels = {
        "theta_init_clean": "theta(w_i^0, w_i): init vs clean",
        "theta_init_robust": "theta(w_i^0, w'_i): init vs robust",
        "theta_clean_robust": "theta(w_i, w'_i): clean vs robust",
        "theta_pairs_init": "theta(w_i^0, w_j^0), i != j: init",
        "theta_pairs_clean": "theta(w_i, w_j), i != j: clean",
        "theta_pairs_robust": "theta(w'_i, w'_j), i != j: robust",
    }
    variables: dict = {}
    for name, v in th.items():
        variables[name] = ("neuron", v, {"long_name": labels[name] + " (|cos|)"})
        variables[f"median_{name}"] = ((), float(np.median(v)), {"long_name": "median " + labels[name]})
    for name, v in pairs.items():
        variables[name] = ("pair", v, {"long_name": labels[name] + " (|cos|)"})
        variables[f"median_{name}"] = ((), float(np.median(v)) if v.size else float("nan"),
                                       {"long_name": "median " + labels[name]})
    variables["relative_change"] = ("step", rel, {
        "long_name": "sum_i ||w_i(step) - w_i(clean end)||^2 / sum_i ||w_i(clean end)||^2 (Thm 5.3c); "
                     "NaN before the end of clean training"})
    for tag, W in (("clean", Wc), ("robust", Wr)):
        variables[f"pair_overlap_{tag}"] = ((), pair_overlap(W), {
            "long_name": f"sum_ij <w_i,w_j>^2 / (sum_i ||w_i||^2)^2, {tag} (Thm 5.1a; >= 1/m)"})
        variables[f"init_overlap_{tag}"] = ((), init_overlap(W, W0), {
            "long_name": f"sum_i <w_i,w_i^0>^2 / sum_i ||w_i||^2 ||w_i^0||^2, {tag} (Thm 5.1a)"})
    coords: dict = {"step": steps, "neuron": np.arange(m), "pair": np.arange(pi.size),
                    "pair_i": ("pair", pi), "pair_j": ("pair", pj)}
    attrs: dict = {"analysis": NAME, "n_pairs": int(n_pairs), "control": int(control),
                   "clean_end": int(data.clean_end), "final": int(data.final),
                   "paper": "Allen-Zhu & Li 2020, Sec. 1 (Figure 2), Theorem 5.1a, Theorem 5.3c"}
    if control:
        control_vars, control_coords, control_attrs = _control(data, Wc, Wr, control_radii)
        variables.update(control_vars)
        coords.update(control_coords)
        attrs.update(control_attrs)
    if surgery:
        surgery_vars, surgery_coords = _surgery(data, Wc, Wr)
        variables.update(surgery_vars)
        coords.update(surgery_coords)
    ds = xr.Dataset(variables, coords=coords)
    ds.attrs.update(attrs)
    return ds


def _l2_attacks(data: RunData, radii: tuple[float, ...] | None) -> tuple[dict, np.ndarray, list[float]]:
    """The run's ℓ₂ attackers, radius multiples and radii ``τ`` for the control and the surgery."""
    cfg = data.config
    ev = dataclasses.replace(cfg.eval, norms=("l2",))
    if radii is not None:
        ev = dataclasses.replace(ev, radii=tuple(float(r) for r in radii))
    attacks = make_attacks(dataclasses.replace(cfg, eval=ev), data.problem)["l2"]
    return attacks, np.asarray(ev.radii, np.float64), list(ev.taus("l2"))


def _attacked(data: RunData, W: np.ndarray, step: int, attacks: dict, taus: list[float]):
    """Evaluation of weights ``W`` under the biases and smoothing stored at ``step``, on the
    first ``n_eval`` held-out examples, with a fresh generator of the ``analysis/purification``
    stream: every variant sees the same random numbers, so differences are not attack noise."""
    cfg = data.config
    n = cfg.eval.n_eval
    net = data.network(step, W=np.ascontiguousarray(W, dtype=np.float32))
    g = rng.generator(int(cfg.seed), "analysis/purification")
    with torch.no_grad():
        return evaluate(net, data.test.x[:n], data.test.y[:n], attacks={"l2": attacks}, taus={"l2": taus},
                        generator=g)


def _surgery(data: RunData, Wc: np.ndarray, Wr: np.ndarray) -> tuple[dict, dict]:
    """The dictionary surgery (module docstring): six weight variants × two bias settings at ``τ``."""
    cfg = data.config
    attacks, _, taus = _l2_attacks(data, (1.0,))
    weights = surgery_weights(Wc, Wr, data.M, data.w_star, cfg.data.k)
    steps = {"clean": data.clean_end, "robust": data.final}
    robust = np.empty((len(SURGERY), len(BIASES)))
    by_attack = np.empty((len(SURGERY), len(BIASES), len(attacks)))
    clean = np.empty((len(SURGERY), len(BIASES)))
    for v, name in enumerate(SURGERY):
        for bi, biases in enumerate(BIASES):
            e = _attacked(data, weights[name], steps[biases], attacks, taus)
            robust[v, bi], by_attack[v, bi], clean[v, bi] = e.strongest["l2"][0], e.robust["l2"][:, 0], e.clean
    where = f"l2 tau = {taus[0]:.4g} (radius multiple 1), n_eval held-out examples"
    variables = {
        "surgery_accuracy": (("surgery", "biases"), robust, {
            "long_name": f"accuracy under the per-example worst attacker, {where}; dictionary-surgery "
                         "variant of the weights under the clean or robust model's stored biases"}),
        "surgery_robust_accuracy": (("surgery", "biases", "attack"), by_attack, {
            "long_name": f"accuracy under each attacker, {where}, per surgery variant and biases"}),
        "surgery_clean_accuracy": (("surgery", "biases"), clean, {
            "long_name": "clean accuracy on the n_eval held-out examples, per surgery variant and biases"}),
    }
    coords = {"surgery": np.array(SURGERY), "biases": np.array(BIASES), "attack": np.array(list(attacks))}
    return variables, coords


def _control(
    data: RunData, Wc: np.ndarray, Wr: np.ndarray, radii: tuple[float, ...] | None
) -> tuple[dict, dict, dict]:
    """The direction vs norm control: the four variants attacked with the run's ℓ₂ attackers."""
    attacks, radii, taus = _l2_attacks(data, radii)
    n = data.config.eval.n_eval
    snaps = data.snapshots
    b_clean, b_final = snaps.b.sel(step=data.clean_end).values, snaps.b.sel(step=data.final).values
    s_clean, s_final = (snaps.sigma_rho.sel(step=data.clean_end).values,
                        snaps.sigma_rho.sel(step=data.final).values)
    frozen = bool(np.array_equal(b_clean, b_final) and np.array_equal(s_clean, s_final))

    strongest = np.empty((len(VARIANTS), len(radii)))
    by_attack = np.empty((len(VARIANTS), len(attacks), len(radii)))
    clean = np.empty(len(VARIANTS))
    mean_norm = np.empty(len(VARIANTS))
    weights = control_weights(Wc, Wr)
    for v, name in enumerate(VARIANTS):
        W = weights[name]
        # All variants use the frozen biases of the final step.
        e = _attacked(data, W, data.final, attacks, taus)
        strongest[v], by_attack[v], clean[v] = e.strongest["l2"], e.robust["l2"], e.clean
        mean_norm[v] = float(np.linalg.norm(W.astype(np.float64), axis=1).mean())

    r1 = int(np.argmin(np.abs(radii - 1.0)))
    acc = dict(zip(VARIANTS, strongest[:, r1], strict=True))
    total = acc["robust"] - acc["clean"]
    from_norm = acc["clean_dir_robust_norm"] - acc["clean"]
    from_dir = acc["robust_dir_clean_norm"] - acc["clean"]

    def share(x: float) -> float:
        return float(x / total) if total != 0 else float("nan")

    at = f"at radius multiple {radii[r1]:g} (l2 tau = {taus[r1]:.4g}), strongest attacker"
    variables = {
        "control_accuracy": (("variant", "radius"), strongest, {
            "long_name": "held-out accuracy under the per-example worst l2 attacker, frozen final biases"}),
        "control_robust_accuracy": (("variant", "attack", "radius"), by_attack, {
            "long_name": "held-out accuracy under each l2 attacker, frozen final biases"}),
        "control_clean_accuracy": ("variant", clean, {
            "long_name": "clean accuracy on the n_eval held-out examples, frozen final biases"}),
        "control_mean_norm": ("variant", mean_norm, {"long_name": "mean ||w_i|| of the variant"}),
        "biases_frozen": ((), frozen, {
            "long_name": "b and sigma_rho identical at the end of clean and of adversarial training"}),
        "gain_total": ((), float(total), {"long_name": f"robust - clean accuracy {at}"}),
        "gain_from_norm": ((), float(from_norm), {
            "long_name": f"clean_dir_robust_norm - clean accuracy {at}"}),
        "gain_from_direction": ((), float(from_dir), {
            "long_name": f"robust_dir_clean_norm - clean accuracy {at}"}),
        "gain_fraction_norm": ((), share(from_norm), {
            "long_name": "gain_from_norm / gain_total (NaN if no gain)"}),
        "gain_fraction_direction": ((), share(from_dir), {
            "long_name": "gain_from_direction / gain_total (NaN if no gain)"}),
    }
    coords = {"variant": np.array(VARIANTS), "radius": radii, "tau": ("radius", np.asarray(taus)),
              "attack": np.array(list(attacks))}
    attrs = {"control_n_eval": int(n), "control_radius_multiple": float(radii[r1]),
             "control_radii": ",".join(f"{r:g}" for r in radii),
             "control_seed_stream": "analysis/purification"}
    return variables, coords, attrs

"""Anatomy of adversarial perturbations in the dictionary basis, before and after adversarial training.

Allen-Zhu & Li (2020), §5.1 "Density of adversarial perturbation" and Figure 7: the clean
network's neurons carry a dense mixture aligned with ``M w*`` (Theorem 5.2), so its adversarial
perturbations are *dense* in the basis ``{M_j}`` and correlate with ``M w*``; after adversarial
training removes the mixture they should be sparser, closer to actual inputs ``M z``.

Each perturbation ``δ`` is written in the dictionary basis — ``c = Mᵀδ`` for an orthonormal
``M`` (exact expansion ``δ = M c``); for an over-complete ``M`` the minimum-norm least-squares
code ``c = M⁺δ`` (which spreads mass over correlated atoms, so it overstates density somewhat:
compare clean and robust, not absolute values) — and measured by

* ``participation_ratio = (Σc²)² / (D Σc⁴)``: 1 for a flat ``|c|`` (fully dense), ``1/D`` for
  a single atom;
* ``topk_mass``: the fraction of ``Σc²`` in the ``k`` largest coordinates (``k`` the run's
  sparsity scale);
* ``cos_mwstar = |<δ, M w*>| / (‖δ‖ ‖M w*‖)``: alignment with Theorem 5.1c's universal dense
  direction.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import xarray as xr

from purify import rng
from purify.analysis.mixture import is_orthonormal
from purify.analysis.rundata import RunData
from purify.attacks import make_attack

NAME = "perturbations"
MODELS = ("clean", "robust")


def dictionary_coefficients(delta: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Codes ``c`` with ``δ ≈ M c``, one row per row of ``delta`` ``(n, d) → (n, D)``.

    ``Mᵀδ`` when ``MᵀM = I``; otherwise the minimum-norm least-squares solution ``M⁺δ``.
    """
    M = M.astype(np.float64)
    delta = delta.astype(np.float64)
    if is_orthonormal(M):
        return delta @ M
    return np.linalg.lstsq(M, delta.T, rcond=None)[0].T


def anatomy(delta: np.ndarray, M: np.ndarray, w_star: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """``participation_ratio``, ``topk_mass``, ``cos_mwstar`` and ``norm`` of each row of ``delta``.

    See the module docstring for the definitions; rows with ``δ = 0`` get NaN.
    """
    c = dictionary_coefficients(delta, M)
    D = c.shape[1]
    c2 = c**2
    s2 = c2.sum(axis=1)
    s4 = (c2**2).sum(axis=1)
    kk = min(int(k), D)
    top = -np.partition(-c2, kk - 1, axis=1)[:, :kk] if kk < D else c2
    v = M.astype(np.float64) @ w_star.astype(np.float64)
    delta = delta.astype(np.float64)
    norms = np.linalg.norm(delta, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pr = np.where(s4 > 0, s2**2 / (D * s4), np.nan)
        mass = np.where(s2 > 0, top.sum(axis=1) / s2, np.nan)
        cos = np.where(norms > 0, np.abs(delta @ v) / (norms * np.linalg.norm(v)), np.nan)
    return {"participation_ratio": pr, "topk_mass": mass, "cos_mwstar": cos, "norm": norms}


def compute(
    data: RunData,
    *,
    attacks: tuple[str, ...] = ("fgm", "pgd"),
    radius: float = 1.0,
) -> xr.Dataset:
    """Dictionary-basis anatomy of the ℓ₂ perturbations of the clean and the robust model.

    Parameters
    ----------
    data : the run.
    attacks : attackers (``fgm``, ``pgd``, …, built with the run's PGD settings).
    radius : ℓ₂ radius as a multiple of the run's ``τ``.

    Returns
    -------
    xr.Dataset
        ``participation_ratio``, ``topk_mass``, ``cos_mwstar``, ``delta_norm`` over
        ``(model, attack, example)`` and their means over examples.
    """
    cfg = data.config
    ev = cfg.eval
    tau = float(radius * ev.tau_for("l2"))
    n = ev.n_eval
    x, y = data.test.x[:n], data.test.y[:n]
    M, w_star, k = data.M, data.w_star, cfg.data.k
    dense = data.problem.dense_direction()
    steps = {"clean": data.clean_end, "robust": data.final}
    names = ("participation_ratio", "topk_mass", "cos_mwstar", "norm")
    out = {name: np.full((len(MODELS), len(attacks), n), np.nan) for name in names}
    for a, attack_name in enumerate(attacks):
        attack = make_attack(attack_name, "l2", dense_direction=dense, pgd_steps=ev.pgd_steps,
                             pgd_rel_step=ev.pgd_rel_step, pgd_restarts=ev.pgd_restarts)
        for mi, model in enumerate(MODELS):
            net = data.network(steps[model])
            # Same random numbers for both models (PGD's random start), one stream per attacker.
            g = rng.generator(int(cfg.seed), f"analysis/perturbations/{attack_name}")
            with torch.no_grad():
                delta = attack(net, x, y, tau, generator=g).cpu().numpy()
            res = anatomy(delta, M, w_star, k)
            for name in names:
                out[name][mi, a] = res[name]
    ref = anatomy((M.astype(np.float64) @ w_star.astype(np.float64))[None, :], M, w_star, k)

    def mean(v: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # an all-NaN row (every δ = 0) has a NaN mean
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(v, axis=-1)

    dims = ("model", "attack", "example")
    kd = f"top k = {k}"
    ds = xr.Dataset(
        {
            "participation_ratio": (dims, out["participation_ratio"], {
                "long_name": "(sum c^2)^2 / (D sum c^4) of delta's dictionary code: 1 dense, 1/D one atom"}),
            "topk_mass": (dims, out["topk_mass"], {"long_name": f"fraction of sum c^2 in the {kd} coordinates"}),
            "cos_mwstar": (dims, out["cos_mwstar"], {"long_name": "|cos(delta, M w*)|"}),
            "delta_norm": (dims, out["norm"], {"long_name": "||delta||_2"}),
            "participation_ratio_mean": (dims[:2], mean(out["participation_ratio"]), {
                "long_name": "mean participation ratio over examples"}),
            "topk_mass_mean": (dims[:2], mean(out["topk_mass"]), {"long_name": f"mean {kd} mass over examples"}),
            "cos_mwstar_mean": (dims[:2], mean(out["cos_mwstar"]), {"long_name": "mean |cos(delta, M w*)| over examples"}),
            "participation_ratio_mwstar": ((), float(ref["participation_ratio"][0]), {
                "long_name": "participation ratio of M w* itself (reference: the dense attack)"}),
            "topk_mass_mwstar": ((), float(ref["topk_mass"][0]), {
                "long_name": f"{kd} mass of M w* itself (reference: the dense attack)"}),
        },
        coords={"model": np.array(MODELS), "attack": np.array(attacks), "example": np.arange(n),
                "model_step": ("model", np.array([steps[mo] for mo in MODELS], np.int64))},
    )
    ds.attrs.update(analysis=NAME, attacks=",".join(attacks), radius=float(radius), tau=tau, n_eval=int(n),
                    k=int(k), coefficients="M^T delta" if is_orthonormal(M.astype(np.float64)) else "least squares M^+ delta",
                    paper="Allen-Zhu & Li 2020, Sec. 5.1 'Density of adversarial perturbation', Figure 7")
    return ds

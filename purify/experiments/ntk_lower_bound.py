"""NTK lower bound vs adversarial training in ℓ∞ with M = I, σ_x = 0 (Allen-Zhu & Li Thm 5.6 vs Thm 5.4).

Theorem 5.6 (Theorem G.1): with ``M = I`` and no noise — a linearly separable concept class —
every NTK function ``p(x) = Σ_i <x, v_i> E_ρ[…]`` of Definition 5.5 (``w_i ~ N(0, I)``, any
``|b_i|, σ_i ≤ d^{o(1)}``) has ℓ∞ robust error at least ``(1 − o(1))/2`` at radius
``τ = 1/k``.  Theorem 5.4: the adversarially trained network is robust against every ℓ∞
perturbation of radius ``1/k^{1.75+2c₀}`` (``m = d^{1+c₀}``), while the clean one is not
robust at ``1/k^{2−c₁}``.

This experiment trains NTK models with several biases to fit a fixed clean training set, the
feature-learning network of §4 cleanly and then adversarially (FGM ℓ∞ at Thm 5.4's radius,
:func:`purify.experiments.comparison.train_feature_nets`), and attacks all of them (FGM,
PGD and the dense direction ``−τ y sign(w*)``, ℓ∞) on a grid of radii ``τ = k^{-e}``.

Store layout (``RUN/store.zarr``; ``purify.store.load_run(RUN)``), root group only, dims
``seed``, ``learner`` (``ntk_b<β>`` for each NTK bias ``b = β √E‖x‖²``, ``feature_clean``,
``feature_adv``, ``linear_oracle``, ``ideal``), ``attack`` (``fgm``, ``pgd``, ``dense``),
``radius`` (index of the grid), coordinates ``tau(radius)`` (ℓ∞ radius), ``exponent(radius)``
(``τ = k^{-exponent}``), ``bias(learner)`` (the NTK's ``β``; NaN for the other learners):

* ``clean_accuracy(seed, learner)`` — held-out;
* ``train_accuracy(seed, learner)`` — NTK models: on their whole training set; feature nets:
  last training batches (perturbed ones in adversarial training); NaN otherwise;
* ``robust_accuracy(seed, learner, radius)`` — ℓ∞, per-example strongest attacker;
* ``attack_accuracy(seed, learner, attack, radius)`` — each attacker alone;
* ``tie_fraction(seed)`` — held-out fraction with ``<w*, z> = 0`` (labelled ``+1``).

Root attributes ``tau_thm54``, ``tau_thm56`` (``1/k``) and ``c0`` give the theorems' radii.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure

from purify.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from purify.evaluate import accuracy, evaluate
from purify.experiments.comparison import (
    ATTACKS,
    cpu_generator,
    make_attacks,
    train_feature_nets,
    typical_norm,
)
from purify.experiments.framework import Claim, Context, Result
from purify.fit import FitConfig, fit
from purify.learners import IdealRobustModel, LinearModel, NTKModel
from purify.plots.style import finish, new_figure

TITLE = "NTK lower bound (Thm 5.6) vs ℓ∞ adversarial training of the network (Thm 5.4), M = I, σ_x = 0"
PAPER = "Allen-Zhu & Li 2020, §5.2: Def. 5.5, Thm 5.4, Thm 5.6 (Thm G.1), Thm E.1"
FULL_TIME = "7.5 min measured on 2 cores shared with other jobs (d = 200, k = 8, 2 seeds)"

#: Robust error the NTK must keep at τ = 1/k to agree with "≥ (1 − o(1))/2" (fixed before measuring).
HALF_TOLERANCE = 0.05


@dataclass(frozen=True)
class Setting:
    """Sizes and hyper-parameters of one mode (recorded in ``params_json``)."""

    d: int
    k: int  # Thm 5.4 needs k ≤ d^0.399
    seeds: int
    n_train: int  # fixed clean training set of the NTK models
    n_eval: int  # held-out examples attacked
    exponents: tuple[float, ...]  # radii τ = k^{-e}; Thm 5.4's exponent 1.75 + 2c₀ is added
    eval_pgd_steps: int
    feature_clean_steps: int | None  # None: purify's default 4d
    ntk_width: int
    ntk_biases: tuple[float, ...]  # b in units of √E‖x‖² (0: p is linear in x)
    ntk_sigma_ratio: float  # σ_ρ / b
    ntk_steps: int  # full-batch gradient steps on the training set
    ntk_lr: float


QUICK = Setting(d=100, k=5, seeds=1, n_train=600, n_eval=300, exponents=(2.5, 2.0, 1.5, 1.0), eval_pgd_steps=10,
                feature_clean_steps=None, ntk_width=200, ntk_biases=(0.0, 0.5, 1.0), ntk_sigma_ratio=0.05,
                ntk_steps=400, ntk_lr=128.0)
FULL = Setting(d=200, k=8, seeds=2, n_train=2000, n_eval=1000, exponents=(3.0, 2.5, 2.25, 2.0, 1.75, 1.5, 1.25, 1.0),
               eval_pgd_steps=20, feature_clean_steps=None, ntk_width=400, ntk_biases=(0.0, 0.5, 1.0),
               ntk_sigma_ratio=0.05, ntk_steps=600, ntk_lr=128.0)


def thm54_exponent(d: int, m: int) -> tuple[float, float]:
    """``(1.75 + 2c₀, c₀)`` with ``m = d^{1+c₀}`` (Theorem 5.4's ℓ∞ radius is ``k^{-(1.75+2c₀)}``)."""
    c0 = math.log(m / d) / math.log(d)
    return 1.75 + 2 * c0, c0


def _ntk_name(beta: float) -> str:
    return f"ntk_b{beta:g}"


def _feature_config(s: Setting, seed: int, device: str, tau: float) -> RunConfig:
    return RunConfig(data=DataConfig(d=s.d, k=s.k, dictionary="identity", sigma_x=0.0, n_test=max(2000, s.n_eval)),
                     train=TrainConfig(clean_steps=s.feature_clean_steps, adv_norm="linf", adv_tau=tau),
                     eval=EvalConfig(n_eval=s.n_eval, pgd_steps=s.eval_pgd_steps, norms=("linf",)),
                     seed=seed, device=device, preset="boundary")  # the measured setting: raised biases, clean/5 steps


def _one_seed(ctx: Context, s: Setting, seed: int, learners: list[str], taus: list[float], tau54: float) -> dict:
    device = torch.device(ctx.device)
    nets = train_feature_nets(_feature_config(s, seed, ctx.device, tau54), bar=ctx.bar, desc=f"feature net seed {seed}")
    trainer, problem = nets.trainer, nets.trainer.problem
    models = {"feature_clean": nets.clean, "feature_adv": nets.robust}
    train_acc = {"feature_clean": nets.clean_train_accuracy, "feature_adv": nets.adv_train_accuracy}
    train = problem.sample(s.n_train, generator=cpu_generator(ctx.seed_for(f"ntk-train-set/{seed}")))
    xt, yt = train.x.to(device), train.y.to(device)
    scale = typical_norm(problem)
    for beta in s.ntk_biases:
        name = _ntk_name(beta)
        # The same random features w_i for every bias: only b (and σ_ρ = ratio·b) changes.
        ntk = NTKModel.init(s.d, s.ntk_width, generator=ctx.generator(f"ntk-init/{seed}"), bias=beta * scale,
                            sigma_rho=s.ntk_sigma_ratio * beta * scale, device=device)
        fit(ntk, (xt, yt), FitConfig(steps=s.ntk_steps, lr=s.ntk_lr, batch=s.n_train),
            generator=ctx.generator(f"ntk-fit/{seed}/{name}"), progress=ctx.progress)
        models[name] = ntk
        train_acc[name] = accuracy(ntk, xt, yt)
    M, w_star = problem.M.to(device), problem.w_star.to(device)
    models["linear_oracle"] = LinearModel.oracle(M, w_star)
    models["ideal"] = IdealRobustModel(M, w_star, s.k)

    attacks = make_attacks(problem, ("linf",), pgd_steps=s.eval_pgd_steps, device=device)
    x, y = trainer.test.x, trainer.test.y
    L, R = len(learners), len(taus)
    out = {"clean_accuracy": np.full(L, np.nan), "train_accuracy": np.full(L, np.nan),
           "robust_accuracy": np.full((L, R), np.nan), "attack_accuracy": np.full((L, len(ATTACKS), R), np.nan)}
    # <w*, z> = 0 happens with positive probability (discrete levels): labelled +1 by convention, and
    # an odd classifier (NTK, the symmetric net) can be right on x or on −x, never both.
    out["tie_fraction"] = float((trainer.test.z.to(device) @ w_star == 0).to(torch.float64).mean())
    for i, name in enumerate(ctx.bar(learners, total=L, desc=f"attacking seed {seed}")):
        ev = evaluate(models[name], x[: s.n_eval], y[: s.n_eval], attacks=attacks, taus={"linf": taus},
                      generator=ctx.generator(f"eval/{seed}/{name}"))
        out["clean_accuracy"][i] = accuracy(models[name], x, y)
        out["train_accuracy"][i] = train_acc.get(name, np.nan)
        out["robust_accuracy"][i] = ev.strongest["linf"]
        out["attack_accuracy"][i] = ev.robust["linf"]
    return out


def error_figure(root: xr.Dataset, caption: str, *, k: int, tau54: float) -> Figure:
    """ℓ∞ robust error vs ``τ`` per learner, with the theorems' radii marked."""
    fig = new_figure(11.0, 4.8)
    ax = fig.subplots()
    tau = root.tau.values.astype(np.float64)
    colors = {"feature_clean": "tab:blue", "feature_adv": "tab:red", "linear_oracle": "tab:gray", "ideal": "black"}
    purples = iter(["#6a3d9a", "#9e7cc1", "#cab2d6", "#e0d0ee"])
    for learner in [str(v) for v in root.learner.values]:
        err = 1.0 - root.robust_accuracy.sel(learner=learner).mean("seed").values
        is_ntk = learner.startswith("ntk")
        ax.plot(tau, err, marker="o", ms=4, lw=2.4 if learner.startswith("feature") else 1.6,
                ls="-." if is_ntk else ("--" if learner == "ideal" else "-"),
                color=next(purples) if is_ntk else colors[learner],
                label=(f"NTK, b = {float(root.bias.sel(learner=learner)):.3g}·√E‖x‖²" if is_ntk else learner))
    ax.axhline(0.5, color="0.4", lw=0.9, ls=":")
    for t, text in ((1.0 / k, "1/k (Thm 5.6)"), (tau54, "1/k^(1.75+2c₀) (Thm 5.4)"), (1.0 / k**2, "1/k² (Thm 5.4, clean)")):
        ax.axvline(t, color="0.5", lw=0.9, ls="--")
        ax.text(t, 0.02, text + " ", rotation=90, ha="right", va="bottom", fontsize=7.5, color="0.25")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("ℓ∞ radius τ")
    ax.set_ylabel("held-out robust error, strongest of FGM / PGD / dense")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    return finish(fig, "ℓ∞ robust error with M = I, σ_x = 0: NTK models vs the (adversarially trained) network",
                  caption)


def run(ctx: Context) -> Result:
    s = QUICK if ctx.quick else FULL
    m = 2 * s.d  # purify's default width (NetConfig), m = d^{1+c₀}
    e54, c0 = thm54_exponent(s.d, m)
    tau54, tau56, tau_clean = s.k ** -e54, 1.0 / s.k, s.k ** -2.0
    exponents = sorted(set(s.exponents) | {round(e54, 6)}, reverse=True)  # ascending radii
    taus = [s.k ** -e for e in exponents]
    learners = [_ntk_name(b) for b in s.ntk_biases] + ["feature_clean", "feature_adv", "linear_oracle", "ideal"]
    seeds = [ctx.seed + i for i in range(s.seeds)]
    runs = [_one_seed(ctx, s, seed, learners, taus, tau54) for seed in seeds]

    def stack(key):
        return np.stack([r[key] for r in runs]).astype(np.float32)

    bias = [b for b in s.ntk_biases] + [np.nan] * 4
    root = xr.Dataset(
        {"clean_accuracy": (("seed", "learner"), stack("clean_accuracy"), {"long_name": "held-out clean accuracy"}),
         "train_accuracy": (("seed", "learner"), stack("train_accuracy"),
                            {"long_name": "training accuracy (NTK: whole training set)"}),
         "robust_accuracy": (("seed", "learner", "radius"), stack("robust_accuracy"),
                             {"long_name": "held-out l-inf accuracy under the per-example strongest attacker"}),
         "attack_accuracy": (("seed", "learner", "attack", "radius"), stack("attack_accuracy"),
                             {"long_name": "held-out l-inf accuracy under each attacker"}),
         "tie_fraction": ("seed", np.array([r["tie_fraction"] for r in runs]),
                          {"long_name": "held-out fraction with <w*, z> = 0 (label +1 by convention)"})},
        coords={"seed": seeds, "learner": learners, "attack": list(ATTACKS), "radius": np.arange(len(taus)),
                "tau": ("radius", np.asarray(taus)), "exponent": ("radius", np.asarray(exponents)),
                "bias": ("learner", np.asarray(bias, np.float64))},
        attrs={"tau_thm54": tau54, "tau_thm56": tau56, "c0": c0},
    )
    mean = root.mean("seed")
    ntks = [_ntk_name(b) for b in s.ntk_biases]
    r54, r56, rclean = (int(np.argmin(np.abs(np.log(np.asarray(taus) / t)))) for t in (tau54, tau56, tau_clean))

    def err(learner: str, r: int) -> float:
        return 1.0 - float(mean.robust_accuracy.sel(learner=learner).isel(radius=r))

    # b = 0 makes c_i ≡ 1: p is then linear in x, not a kernel model; it is reported in the table only.
    fit_acc = {n: float(mean.train_accuracy.sel(learner=n)) for n in ntks if float(root.bias.sel(learner=n)) > 0}
    ntk_err56 = {n: err(n, r56) for n in ntks}
    ntk_err54 = {n: err(n, r54) for n in ntks}
    adv54, clean54 = err("feature_adv", r54), err("feature_clean", r54)
    clean_at_k2 = err("feature_clean", rclean)
    dense_clean_k2 = 1.0 - float(mean.attack_accuracy.sel(learner="feature_clean", attack="dense").isel(radius=rclean))

    def listing(values: dict) -> str:
        return ", ".join(f"b={float(root.bias.sel(learner=n)):.2g}: {v:.3f}" for n, v in values.items())

    claims = [
        Claim("the NTK models (b > 0) fit the clean training data (M = I, σ_x = 0: linearly separable)",
              f"training accuracy {listing(fit_acc)} (n = {s.n_train}); held-out "
              f"{', '.join(f'{float(mean.clean_accuracy.sel(learner=n)):.3f}' for n in fit_acc)}",
              "the lower bound holds for every NTK function, including those that fit the data (Thm 5.6 setting)",
              min(fit_acc.values()) >= 0.99),
        Claim(f"NTK ℓ∞ robust error at τ = 1/k = {tau56:.3g} is at least about 1/2",
              f"robust error {listing(ntk_err56)} (for reference at the same radius: linear oracle "
              f"{err('linear_oracle', r56):.3f}, ideal model {err('ideal', r56):.3f}, adversarially trained "
              f"network {err('feature_adv', r56):.3f})",
              "robust error ≥ (1 − o(1))/2 at ℓ∞ τ = 1/k for every NTK p (Thm 5.6 / G.1)",
              min(ntk_err56.values()) >= 0.5 - HALF_TOLERANCE),
        Claim(f"the adversarially trained network is robust at Thm 5.4's ℓ∞ radius 1/k^(1.75+2c₀) = {tau54:.3g} "
              f"(c₀ = {c0:.3f} from m = 2d)",
              f"robust error {adv54:.3f} (clean-trained network {clean54:.3f}; NTK {listing(ntk_err54)})",
              "robust error o(1) against any ℓ∞ perturbation of radius 1/k^(1.75+2c₀) (Thm 5.4, F.4)",
              adv54 <= 0.1),
        Claim(f"the clean-trained network is not robust at ℓ∞ 1/k^(2−c₁) (measured at 1/k² = {tau_clean:.3g})",
              f"robust error {clean_at_k2:.3f} (dense direction −τ y sign(w*) alone: {dense_clean_k2:.3f})",
              "accuracy e^{−Ω(log² d)} under the dense perturbation −y M w*·poly/k² (Thm 5.4, E.1)",
              clean_at_k2 >= 0.9),
        Claim("at Thm 5.4's radius the adversarially trained network beats every NTK model",
              f"robust error: network {adv54:.3f} vs best NTK {min(ntk_err54.values()):.3f}",
              "not stated at this radius (Thm 5.6 is at 1/k); the paper's contrast of Thm 5.4 with Thm 5.6",
              None),
    ]
    cap = (f"d={s.d}  k={s.k}  M=I  σ_x=0  network m={m}  NTK m={s.ntk_width} (n_train={s.n_train})  "
           f"seeds={seeds}  n_eval={s.n_eval}  {'quick' if ctx.quick else 'full'} mode")
    tau_text = " | ".join(f"{t:.3g}" for t in taus)
    table = ["| learner | clean | train | " + tau_text + " |", "|---" * (len(taus) + 3) + "|"]
    for n in learners:
        errs = 1.0 - mean.robust_accuracy.sel(learner=n).values
        tr = float(mean.train_accuracy.sel(learner=n))
        table.append(f"| {n} | {float(mean.clean_accuracy.sel(learner=n)):.3f} | "
                     f"{'' if np.isnan(tr) else f'{tr:.3f}'} | " + " | ".join(f"{e:.3f}" for e in errs) + " |")
    notes = "\n".join([
        "## Table", "", "ℓ∞ robust error (1 − strongest robust accuracy; seed mean) at τ = k^{-e}, "
        f"e = {', '.join(f'{e:g}' for e in exponents)}:", "", *table, "",
        "## Reading", "",
        f"Theorem 5.6 is asymptotic (k = d^c, m ≤ d^C, d → ∞); here d = {s.d}, k = {s.k}. The network is "
        f"purify's default (m = 2d, `norm` bias schedule, {4 * s.d if s.feature_clean_steps is None else s.feature_clean_steps} "
        f"clean steps) adversarially trained by FGM ℓ∞ at τ = {tau54:.3g}. c₀ is read off m = d^(1+c₀), so "
        f"at these sizes 1.75 + 2c₀ = {e54:.3f}, close to (or past) Thm 5.4's clean-model radius exponent 2 − c₁: the "
        f"gap the theorem opens for small c₀, c₁ is not visible at this d. The NTK models use the same random "
        f"features w_i ~ N(0, I) for every bias b (σ_ρ = {s.ntk_sigma_ratio:g} b) and are trained by full-batch "
        f"gradient descent on {s.n_train} examples; b = 0 makes p linear in x. A fraction "
        f"{float(root.tie_fraction.mean()):.3f} of the held-out inputs has <w*, z> = 0 exactly (label +1 by "
        "convention); x and −x are then both labelled +1, so an odd classifier (the NTK, the symmetric network) "
        "errs on at least half of them unless it outputs exactly 0: this caps their clean accuracy below the "
        "oracle's 1.0, which outputs exactly 0 there. Robust error is estimated from "
        f"below by the strongest of FGM, PGD ({s.eval_pgd_steps} steps, random start) and the dense direction. "
        "Theorem 5.6 prints its radius as τ = 1/k^1.00 while Theorem G.1 takes τ = 1/d^{c₆} with "
        "k ∈ [d^{c₆/100}, d^{0.5−c₆/100}]; we measure at 1/k as stated and on the whole grid.",
    ])
    params = {"setting": asdict(s), "seeds": seeds, "width": m, "c0": c0, "thm54_exponent": e54,
              "tau_thm54": tau54, "tau_thm56": tau56, "tau_clean_k2": tau_clean, "exponents": exponents,
              "taus": taus, "learners": learners, "half_tolerance": HALF_TOLERANCE,
              "feature_config": _feature_config(s, seeds[0], ctx.device, tau54).resolve().to_json()}
    figures = {"robust_error_vs_tau": error_figure(root, cap, k=s.k, tau54=tau54)}
    return Result(groups={"": root}, figures=figures, claims=claims, params=params, notes=notes)

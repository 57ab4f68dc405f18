"""Gao et al. 2019: adversarial training of wide two-layer nets converges; robust fitting needs more width.

Two parts, on ``n`` random points of the unit sphere ``S^{d−1}`` with random ``±1`` labels and
the ``ℓ₂`` perturbation set ``B_τ(x)`` (``τ`` a fixed fraction of the largest radius compatible
with the data, their Definition 3.1: balls of opposite labels do not meet).

* **Convergence (Thm 4.1 / 5.1).**  The two-layer net of their eq. (4),
  ``f(W, x) = (1/√m) Σ_r a_r ReLU(<w_r, x>)`` with paired neurons (``w̄_r = w_r``,
  ``a'_r = −a_r``, so ``f(W₀, ·) = 0``; :meth:`LazyReLUNet.init` with ``paired=True``), trained
  by full-batch projected gradient descent on the surrogate loss
  ``L_A(W) = (1/n) Σ ℓ(f(W, A(W, x_i)), y_i)`` (logistic ``ℓ``, ``A`` = ℓ₂ PGD of radius ``τ``)
  in ``B(R) = {‖W − W₀‖_F ≤ R}`` (:func:`purify.fit.fit`, ``ball="frobenius"``).  In eq. (4)'s
  parametrization the ``1/√m`` sits in ``f``, so this is their §4 ball ``R/√m`` (footnote 7).
  Observable: ``min_t L_A(W_t)`` against the width ``m`` for each ``R`` — the theorem bounds it
  by ``min_{B(R)} L_* + ε`` with ``ε → 0`` as ``m = Ω(R⁴/ε²)`` grows — and the robust loss
  ``L_*`` of the trained net, estimated by a stronger PGD (more steps, restarts).
* **Capacity (§6, Thm 6.1).**  Robust interpolation needs VC dimension ``Ω(nd)`` against
  ``O(n log n)`` for interpolation.  Observable: the training error of clean gradient descent
  and the robust training error (strong PGD) of adversarial training, both without projection
  (Thm 5.1 needs none), against ``m``: the width at which each first fits the data.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from matplotlib.figure import Figure
from torch import Tensor

from purify.attacks import Attack, make_attack
from purify.evaluate import sign_correct
from purify.experiments.framework import Claim, Context, Result, one_thread
from purify.fit import FitConfig, fit
from purify.learners.lazy import LazyReLUNet
from purify.plots.style import MODEL_COLORS, finish, new_figure

TITLE = "Adversarial training in the NTK regime: convergence in B(R) and the width robust fitting needs"
PAPER = "Gao, Cai, Li, Wang, Hsieh & Lee 2019, Thm 4.1, Thm 5.1 (eq. 4), §6 Thm 6.1"
FULL_TIME = "about 12 min (one thread; n = 100 points in d = 10, widths up to 4096, 3 seeds)"


@dataclass(frozen=True)
class Settings:
    """Data, grids and optimization of one mode."""

    d: int  # input dimension (points on S^{d−1})
    n: int  # training points
    tau_frac: float  # τ as a fraction of half the smallest distance between opposite labels
    seeds: int  # datasets × initializations
    widths: tuple[int, ...]  # m of the convergence part (even: paired neurons)
    radii: tuple[float, ...]  # R of B(R) = {‖W − W₀‖_F ≤ R}
    steps: int  # projected GD steps of the convergence part
    capacity_widths: tuple[int, ...]  # m of the capacity part
    capacity_steps: int  # GD steps of the capacity part
    lr: float = 8.0  # full-batch step size α (‖∇_W f‖_F ≈ 1/√2 with NTK scaling; stable here)
    pgd_steps: int = 10  # training attack A: ℓ₂ PGD steps (step 2.5τ/steps)
    strong_steps: int = 50  # evaluation attack for L_*: PGD steps …
    strong_restarts: int = 5  # … and random restarts


QUICK = Settings(d=10, n=40, tau_frac=0.6, seeds=2, widths=(16, 64, 256, 1024), radii=(1.0, 4.0, 16.0),
                 steps=200, capacity_widths=(4, 16, 64, 256), capacity_steps=600, pgd_steps=5,
                 strong_steps=20, strong_restarts=3)
FULL = Settings(d=10, n=100, tau_frac=0.6, seeds=3, widths=(16, 64, 256, 1024, 4096),
                radii=(1.0, 3.0, 10.0, 30.0), steps=1000,
                capacity_widths=(4, 8, 16, 32, 64, 128, 256, 512, 1024), capacity_steps=3000)

#: "Fits the training set": mean training error over seeds at most this.
FITS = 0.05


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def sphere_dataset(n: int, d: int, *, generator: torch.Generator, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """``n`` points uniform on ``S^{d−1}`` (Gao et al. §3.3: inputs on the unit sphere) and random
    ``±1`` labels (§6: robust interpolation of arbitrary labels).  Shapes ``(n, d)``, ``(n,)``."""
    x = torch.randn(n, d, generator=generator, dtype=dtype, device=generator.device)
    y = torch.randint(0, 2, (n,), generator=generator, device=generator.device).to(dtype) * 2 - 1
    return x / x.norm(dim=1, keepdim=True), y


def compatible_radius(x: Tensor, y: Tensor) -> float:
    """Half the smallest distance between points of opposite labels: the largest ``τ`` for which
    the ``ℓ₂`` balls ``B_τ(x_i)`` are compatible with the data (Definition 3.1)."""
    opposite = y[:, None] != y[None, :]
    return float(torch.cdist(x, x)[opposite].min()) / 2


# --------------------------------------------------------------------------------------
# Training and evaluation of one network
# --------------------------------------------------------------------------------------


def losses(model, x: Tensor, y: Tensor, attack: Attack | None, tau: float, generator) -> tuple[float, float]:
    """``(mean logistic loss, error)`` of ``model`` on ``x + A(x)`` (clean if ``attack`` is None)."""
    if attack is not None:
        x = x + attack(model, x, y, tau, generator=generator)
    out = model.forward(x)
    return float(F.softplus(-y * out).mean()), float(1 - sign_correct(out, y).double().mean())


@dataclass
class Trained:
    """One training run: the per-step surrogate loss and the final net's losses and errors."""

    surrogate: np.ndarray  # L_A(W_t) per step t (clean loss for clean training)
    clean_loss: float
    clean_error: float
    robust_loss: float  # strong-PGD estimate of L_*(W_T)
    robust_error: float
    fro_deviation: float  # ‖W_T − W₀‖_F
    seconds: float


def train_and_measure(
    m: int,
    x: Tensor,
    y: Tensor,
    tau: float,
    *,
    s: Settings,
    adversarial: bool,
    radius: float | None,
    generators: tuple[torch.Generator, torch.Generator, torch.Generator],
) -> Trained:
    """Train the paired net of eq. (4) by full-batch GD (projected onto ``B(radius)`` unless None),
    on ``L_A`` with PGD if ``adversarial`` else on the clean loss; measure the final net.

    ``generators`` drive the initialization, the training attack and the evaluation attack.
    """
    start = time.perf_counter()
    gens = generators
    net = LazyReLUNet.init(x.shape[1], m, generator=gens[0], paired=True, dtype=x.dtype)
    config = FitConfig(steps=s.steps if radius is not None else s.capacity_steps, lr=s.lr, batch=x.shape[0],
                       constraint="project" if radius is not None else None, radius=radius, ball="frobenius")
    attack = make_attack("pgd", "l2", pgd_steps=s.pgd_steps) if adversarial else None
    history = fit(net, (x, y), config, attack=attack, tau=tau if adversarial else 0.0, generator=gens[1])
    strong = make_attack("pgd", "l2", pgd_steps=s.strong_steps, pgd_restarts=s.strong_restarts)
    clean_loss, clean_error = losses(net, x, y, None, tau, None)
    robust_loss, robust_error = losses(net, x, y, strong, tau, gens[2])
    return Trained(history.loss, clean_loss, clean_error, robust_loss, robust_error,
                   float(history.fro_deviation[-1]) if history.steps else 0.0, time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------


def _streams(ctx: Context, key: str, m: int, seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """Initialization, training-attack and evaluation-attack streams of run ``key``; the net's
    initialization depends on the width and seed only, so every R and both trainings start alike."""
    run = f"{key}/m{m}/{seed}"
    return ctx.generator(f"init/m{m}/{seed}"), ctx.generator(f"{run}/fit"), ctx.generator(f"{run}/eval")


def run(ctx: Context) -> Result:
    """Both parts for :data:`QUICK` or :data:`FULL`; see the module docstring."""
    with one_thread():
        return _run(ctx, QUICK if ctx.quick else FULL)


def _run(ctx: Context, s: Settings) -> Result:
    seeds = list(range(s.seeds))
    data = []
    for seed in seeds:
        x, y = sphere_dataset(s.n, s.d, generator=ctx.generator(f"data/{seed}"))
        limit = compatible_radius(x, y)
        data.append((x, y, s.tau_frac * limit, limit))

    shape = (len(s.radii), len(s.widths), len(seeds))
    conv = {v: np.full(shape, np.nan) for v in ("min_surrogate_loss", "final_surrogate_loss", "clean_loss",
                                                 "clean_error", "robust_loss", "robust_error", "fro_deviation",
                                                 "seconds")}
    curves = np.full((*shape, s.steps), np.nan)
    jobs = [(r, w, seed) for r in range(len(s.radii)) for w in range(len(s.widths)) for seed in seeds]
    for r, w, seed in ctx.bar(jobs, total=len(jobs), desc="ntk-adversarial: projected GD on L_A"):
        x, y, tau, _ = data[seed]
        t = train_and_measure(s.widths[w], x, y, tau, s=s, adversarial=True, radius=s.radii[r],
                              generators=_streams(ctx, f"conv/R{s.radii[r]:g}", s.widths[w], seed))
        curves[r, w, seed, : len(t.surrogate)] = t.surrogate
        for name, value in (("min_surrogate_loss", t.surrogate.min()), ("final_surrogate_loss", t.surrogate[-1]),
                            ("clean_loss", t.clean_loss), ("clean_error", t.clean_error),
                            ("robust_loss", t.robust_loss), ("robust_error", t.robust_error),
                            ("fro_deviation", t.fro_deviation), ("seconds", t.seconds)):
            conv[name][r, w, seed] = value

    trainings = ["clean", "adversarial"]
    cshape = (len(trainings), len(s.capacity_widths), len(seeds))
    cap = {v: np.full(cshape, np.nan) for v in ("clean_error", "robust_error", "clean_loss", "robust_loss",
                                                "train_loss", "fro_deviation", "seconds")}
    jobs = [(i, w, seed) for i in range(2) for w in range(len(s.capacity_widths)) for seed in seeds]
    for i, w, seed in ctx.bar(jobs, total=len(jobs), desc="ntk-adversarial: capacity"):
        x, y, tau, _ = data[seed]
        t = train_and_measure(s.capacity_widths[w], x, y, tau, s=s, adversarial=trainings[i] == "adversarial",
                              radius=None, generators=_streams(ctx, f"cap/{trainings[i]}", s.capacity_widths[w], seed))
        for name, value in (("clean_error", t.clean_error), ("robust_error", t.robust_error),
                            ("clean_loss", t.clean_loss), ("robust_loss", t.robust_loss),
                            ("train_loss", t.surrogate[-1]), ("fro_deviation", t.fro_deviation),
                            ("seconds", t.seconds)):
            cap[name][i, w, seed] = value

    coords = {"R": list(s.radii), "m": list(s.widths), "seed": seeds}
    ds = xr.Dataset({k: (("R", "m", "seed"), v) for k, v in conv.items()}, coords=coords)
    ds["tau"] = ("seed", np.array([t for _, _, t, _ in data]))
    ds["compatible_radius"] = ("seed", np.array([c for *_, c in data]))
    for name, text in DESCRIPTIONS.items():
        if name in ds:
            ds[name].attrs["description"] = text
    cu = xr.Dataset({"surrogate_loss": (("R", "m", "seed", "step"), curves)},
                    coords={**coords, "step": np.arange(s.steps)})
    cu["surrogate_loss"].attrs["description"] = "L_A(W_t): logistic loss on the PGD-perturbed training set"
    cp = xr.Dataset({k: (("training", "m", "seed"), v) for k, v in cap.items()},
                    coords={"training": trainings, "m": list(s.capacity_widths), "seed": seeds})
    for name, text in CAPACITY_DESCRIPTIONS.items():
        cp[name].attrs["description"] = text
    return Result(
        groups={"": ds, "curves": cu, "capacity": cp},
        figures={"surrogate_loss_vs_width": convergence_figure(ds, cu, s), "capacity": capacity_figure(cp, s)},
        claims=claims(ds, cp, s),
        params={**asdict(s), "mode": "quick" if ctx.quick else "full", "labels": "random ±1",
                "loss": "logistic", "attack": "pgd l2 (train), pgd l2 with restarts (evaluation)",
                "network": "eq. (4): paired ReLU neurons, a'_r = −a_r, w ~ N(0, I), f(W0) = 0"},
        notes=notes(s, ds),
    )


DESCRIPTIONS = {
    "min_surrogate_loss": "min_t L_A(W_t) over the projected-GD run (Thm 4.1 / 5.1, eq. 3)",
    "final_surrogate_loss": "L_A(W_t) at the last step",
    "clean_loss": "logistic loss of the final net on the clean training set",
    "clean_error": "training error of the final net, clean",
    "robust_loss": "logistic loss under the strong PGD attack: estimate of L_*(W_T)",
    "robust_error": "training error under the strong PGD attack",
    "fro_deviation": "‖W_T − W₀‖_F (≤ R by projection)",
    "seconds": "wall time of the run",
    "tau": "ℓ₂ attack radius τ of the dataset",
    "compatible_radius": "half the smallest distance between opposite labels (largest compatible τ)",
}
CAPACITY_DESCRIPTIONS = {
    "clean_error": "clean training error of the final net",
    "robust_error": "training error under the strong PGD attack (robust training error)",
    "clean_loss": "clean logistic training loss",
    "robust_loss": "logistic loss under the strong PGD attack",
    "train_loss": "last-step training objective (clean loss or L_A)",
    "fro_deviation": "‖W_T − W₀‖_F (no projection)",
    "seconds": "wall time of the run",
}


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


def spearman(x, y) -> float:
    """Rank correlation of two sequences without ties (NaN with fewer than three points)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3:
        return math.nan
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def first_fit(errors: xr.DataArray) -> float:
    """Smallest ``m`` whose seed-mean error is at most :data:`FITS` (``inf`` if none)."""
    mean = errors.mean("seed")
    ok = mean.m.values[mean.values <= FITS]
    return float(ok.min()) if ok.size else math.inf


def _width(m: float) -> str:
    return f"{m:g}" if math.isfinite(m) else "none in the grid"


def claims(ds: xr.Dataset, cp: xr.Dataset, s: Settings) -> list[Claim]:
    """One :class:`Claim` per statement of Gao et al. this experiment tests."""
    out = []
    best = ds.min_surrogate_loss.mean("seed")
    rhos = {R: spearman(best.m.values, best.sel(R=R).values) for R in best.R.values.tolist()}
    falls = {R: float(best.sel(R=R).isel(m=-1)) < float(best.sel(R=R).isel(m=0)) for R in rhos}
    out.append(Claim(
        "Projected GD on the surrogate loss reaches a lower min_t L_A(W_t) as the width m grows, R fixed "
        "(Thm 4.1 / 5.1)",
        "; ".join(f"R={R:g}: {float(best.sel(R=R).isel(m=0)):.3f} → {float(best.sel(R=R).isel(m=-1)):.3f} "
                  f"(m {s.widths[0]}→{s.widths[-1]}, rank corr. {rhos[R]:+.2f})" for R in rhos),
        "min_t L_A(W_t) ≤ min_{B(R)} L_* + ε once m = Ω(R⁴/ε²)",
        bool(all(falls.values()) and all(rho <= -0.8 for rho in rhos.values())),
    ))
    wide = best.isel(m=-1)
    values = wide.values.tolist()
    out.append(Claim(
        "A larger ball B(R) allows a lower robust loss (Remark after Thm 4.1)",
        f"min_t L_A at m = {s.widths[-1]}: " + ", ".join(f"R={R:g}: {v:.3f}" for R, v in zip(wide.R.values, values,
                                                                                             strict=True)),
        "the greater R, the less L_*(W_*)",
        bool(all(b < a for a, b in zip(values, values[1:], strict=False))),
    ))
    gap = (ds.robust_loss - ds.final_surrogate_loss).mean("seed").isel(m=-1)
    err = ds.robust_error.mean("seed").isel(m=-1)
    out.append(Claim(
        "The trained net resists attacks: robust loss under a stronger PGD vs the training attack's L_A "
        "(Remark after Thm 4.1)",
        f"m = {s.widths[-1]}: strong-PGD loss of W_T − last-step L_A = "
        + ", ".join(f"R={R:g}: {g:+.3f}" for R, g in zip(gap.R.values, gap.values, strict=True))
        + "; robust training error " + ", ".join(f"{e:.3f}" for e in err.values),
        "guarantee is for the training attack only",
        None,
    ))
    m_clean = first_fit(cp.clean_error.sel(training="clean"))
    m_robust = first_fit(cp.robust_error.sel(training="adversarial"))
    out.append(Claim(
        f"Robust interpolation needs more width than clean interpolation (§6, Thm 6.1); n = {s.n}, d = {s.d}",
        f"first width with training error ≤ {FITS:.0%}: clean GD m = {_width(m_clean)}, adversarial training "
        f"(robust error, strong PGD) m = {_width(m_robust)}; trained weights m·d = {_width(m_clean * s.d)} vs "
        f"{_width(m_robust * s.d)} (n = {s.n}, nd = {s.n * s.d})",
        "VC dimension Ω(nd) for robust vs O(n log n) for clean interpolation",
        bool(math.isfinite(m_clean) and m_robust > m_clean),
    ))
    clean_rob = cp.robust_error.sel(training="clean").mean("seed")
    out.append(Claim(
        "Clean interpolation is not robust: robust training error of clean-trained nets (§6)",
        f"{float(clean_rob.isel(m=-1)):.3f} at m = {s.capacity_widths[-1]} (clean error "
        f"{float(cp.clean_error.sel(training='clean').mean('seed').isel(m=-1)):.3f}); adversarially trained: "
        f"{float(cp.robust_error.sel(training='adversarial').mean('seed').isel(m=-1)):.3f}",
        "motivates §6 (robust fitting needs more capacity)",
        None,
    ))
    return out


def notes(s: Settings, ds: xr.Dataset) -> str:
    tau = ds.tau.values
    return (
        f"Data: n = {s.n} points uniform on S^{s.d - 1}, random ±1 labels, a new dataset per seed ({s.seeds} seeds); "
        f"τ = {s.tau_frac:g} × half the smallest distance between opposite labels (τ = {tau.min():.3f}–"
        f"{tau.max():.3f}), ℓ₂ balls in R^d (Gao et al. keep perturbations on the sphere; with a ReLU net, "
        "positively homogeneous, only the direction of x + δ matters).  Network: eq. (4), ReLU (their §4 and "
        "footnote 8; §5 assumes a smooth σ), paired init so f(W₀, ·) = 0, logistic loss.  Convergence part: "
        f"full-batch projected GD, α = {s.lr:g}, {s.steps} steps, R ∈ {list(s.radii)}, m ∈ {list(s.widths)}, "
        f"training attack PGD-{s.pgd_steps} (ℓ₂, step 2.5τ/{s.pgd_steps}, random start).  L_* is estimated "
        f"by PGD-{s.strong_steps} with {s.strong_restarts} restarts, a lower bound on the true L_* of the "
        "trained net; min_{B(R)} L_* itself is not computed.  For the narrow nets L_A(W_t) is still falling at "
        "the last step (right panel of the figure), so their min_t L_A is partly limited by the step budget.  "
        "Capacity part: plain GD (no projection, as "
        f"Thm 5.1 allows), {s.capacity_steps} steps, m ∈ {list(s.capacity_widths)}; 'fits' means seed-mean "
        f"training error ≤ {FITS:.0%}.  Thm 6.1 is a statement about function classes (VC dimension), so the "
        "width at which gradient descent fits is an optimization-dependent proxy for it.  Gao et al.'s "
        "Assumption 5.2 (a robust classifier exists in the NTK's RKHS) is what Wang et al. (2022) question "
        "in the lazy regime: compare lazy-adversarial."
    )


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def convergence_figure(ds: xr.Dataset, cu: xr.Dataset, s: Settings) -> Figure:
    """``min_t L_A(W_t)`` and the strong-attack robust loss against ``m`` per ``R``; ``L_A(W_t)``
    over ``t`` for the largest ``R``."""
    fig = new_figure(12.0, 4.6)
    left, right = fig.subplots(1, 2)
    colors = _colors(ds.R.size)
    m = np.asarray(ds.m.values, np.float64)
    for color, R in zip(colors, ds.R.values.tolist(), strict=True):
        part = ds.sel(R=R)
        mean, std = part.min_surrogate_loss.mean("seed").values, part.min_surrogate_loss.std("seed").values
        left.errorbar(m, mean, yerr=std, fmt="o-", ms=4, color=color, capsize=2, label=f"min_t L_A, R={R:g}")
        left.plot(m, part.robust_loss.mean("seed").values, "s--", ms=3, lw=1, color=color,
                  label=f"L_* est. of W_T, R={R:g}")
    left.set_xscale("log", base=2)
    left.set_xlabel("width m")
    left.set_ylabel("logistic loss on the training set")
    left.set_title("surrogate loss min_t L_A(W_t) vs width, per ball radius R", fontsize=10)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    R = ds.R.values.tolist()[-1]
    wcolors = _colors(ds.m.size)
    for color, width in zip(wcolors, ds.m.values.tolist(), strict=True):
        curve = cu.surrogate_loss.sel(R=R, m=width).mean("seed").values
        right.plot(np.arange(curve.size) + 1, curve, color=color, lw=1.3, label=f"m={width}")
    right.set_xscale("log")
    right.set_xlabel("projected GD step t")
    right.set_ylabel("L_A(W_t) (seed mean)")
    right.set_title(f"L_A(W_t) during adversarial training, R={R:g}", fontsize=10)
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    return finish(fig, "Adversarial training of the paired two-layer net in B(R) (Gao et al. Thm 4.1 / 5.1)",
                  f"n={s.n} on S^{s.d - 1}, random labels, ℓ₂ PGD-{s.pgd_steps} at τ={s.tau_frac:g}×compatible radius, "
                  f"α={s.lr:g}, {s.steps} steps, {s.seeds} seeds (bars: std); dashed: strong PGD "
                  f"({s.strong_steps} steps × {s.strong_restarts})")


def capacity_figure(cp: xr.Dataset, s: Settings) -> Figure:
    """Clean and robust training error against ``m`` for clean GD and adversarial training."""
    fig = new_figure(7.4, 4.6)
    ax = fig.subplots()
    m = np.asarray(cp.m.values, np.float64)
    for training, color in (("clean", MODEL_COLORS["clean"]), ("adversarial", MODEL_COLORS["robust"])):
        part = cp.sel(training=training)
        for var, style, what in (("clean_error", "o-", "clean error"), ("robust_error", "s--", "robust error")):
            ax.plot(m, part[var].mean("seed").values, style, color=color, ms=4, lw=1.4,
                    label=f"{training} training: {what}")
    ax.axhline(FITS, color="0.4", ls=":", lw=1, label=f"fit level {FITS:.0%}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, max(0.6, float(cp.robust_error.max()) + 0.05))
    ax.set_xlabel("width m")
    ax.set_ylabel("training error (seed mean)")
    ax.set_title("robust fitting needs more width than clean fitting", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return finish(fig, "Capacity: clean vs robust training error against width (Gao et al. §6)",
                  f"n={s.n} random labels on S^{s.d - 1}, GD without projection, {s.capacity_steps} steps, "
                  f"robust error under PGD-{s.strong_steps}×{s.strong_restarts}, {s.seeds} seeds")

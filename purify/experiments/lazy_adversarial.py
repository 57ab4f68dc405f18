"""Wang et al. 2022 §5.2: projected adversarial training in the lazy regime; robustness collapses near 5/√d.

Protocol (Wang, Ullah, Mianjy & Arora 2022, §5.2, Fig. 4, Appendix Algorithm 1; docs/theory.md §5): the
lazy two-layer ReLU net ``f(x) = (1/√m) Σ_s a_s ReLU(<w_s, x>)`` is trained adversarially —
every mini-batch replaced by its ℓ₂ PGD adversarial examples of budget ``R`` (``T₂`` steps of
size ``α = 2.5R/T₂``, i.e. ``2.5R/100`` at ``T₂ = 100``), one SGD step with ``β = 0.01`` on the
batch's *summed* logistic loss, then projection of ``W`` onto ``B_{2,∞}(W₀, V)`` — epoch after
epoch until the robust training accuracy stops increasing.  Robust test accuracy is then
measured with the same PGD attack at ``‖δ‖ = R``.

* Fig. 4 left: robust accuracy over ``(‖δ‖, d)`` at ``m = 1000``, ``V = 10/√1000``; the paper
  sees it fall to 0 just above ``‖δ‖ ≈ 5/√d``.
* Fig. 4 right: robust accuracy over ``(m, V)`` at ``‖δ‖ = 0.2``, ``d = 784``; the paper sees
  a phase transition at ``V ≈ 25/√m``: below it robust accuracy 0, slightly above it 1.

The measured thresholds are where the seed-mean robust accuracy crosses 1/2 (linear in
``log R`` / ``log V`` between grid points), fitted against ``d`` and ``m`` on log-log axes
(theory: slope −1/2 for both).  Data: the Gaussian mixture on the sphere of
:mod:`.lazy_single_step` (``σ = 1/2``: a linear classifier is robust up to ``‖δ‖ ≈ 0.89``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from purify.attacks import make_attack
from purify.evaluate import robust_correct, sign_correct
from purify.experiments.digits import BinaryTask
from purify.experiments.framework import Claim, Context, Result
from purify.experiments.lazy_single_step import mixture_task
from purify.experiments.scaling import loglog_slope
from purify.fit import FitConfig, fit
from purify.learners.lazy import LazyReLUNet
from purify.plots.style import finish, new_figure

TITLE = "Lazy adversarial training: robustness collapses near ‖δ‖ ≈ 5/√d unless V ≳ 25/√m (Wang et al. 2022, §5.2)"
PAPER = "Wang, Ullah, Mianjy & Arora 2022, §5.2, Fig. 4, Appendix Algorithm 1"
FULL_TIME = (
    "about 3 h on 2 cores (T₂ = 100 PGD steps; (‖δ‖, d): 6 d × 9 radii at m = 1000; (m, V): "
    "m ∈ {100, 1000, 10000} × 8 V at d = 784; 1 seed; the same grid with T₂ = 20 and 10 epochs took 33 min)"
)

#: Paper: robust accuracy drops to 0 slightly above ‖δ‖ = 5/√d (Fig. 4 left) ...
PAPER_RADIUS_CONSTANT = 5.0
#: ... and jumps to 1 slightly above V = 25/√m (Fig. 4 right).
PAPER_DEVIATION_CONSTANT = 25.0
THEORY_SLOPE = -0.5
SLOPE_TOLERANCE = 0.25


@dataclass(frozen=True)
class AdversarialGrid:
    """Both panels of Fig. 4 and the training protocol of Algorithm 1."""

    sides: tuple[int, ...]  # left panel: d = side²
    radii: tuple[float, ...]  # left panel: ‖δ‖ = R (train and test budget)
    left_width: int  # left panel: m (paper 1000)
    left_c0: float  # left panel: V = C₀/√m (paper C₀ = 10)
    right_side: int  # right panel: d = side² (paper 28)
    right_radius: float  # right panel: ‖δ‖ (paper 0.2)
    widths: tuple[int, ...]  # right panel: m
    deviations: tuple[float, ...]  # right panel: V
    seeds: int = 1
    pgd_steps: int = 100  # T₂ (α = 2.5R/T₂)
    max_epochs: int = 15  # T₁ cap
    patience: int = 2  # epochs without a better robust training accuracy before stopping
    beta: float = 0.01  # Algorithm 1's β on the summed batch loss
    batch: int = 32
    n_train: int = 512
    n_test: int = 256
    sigma: float = 0.5


QUICK = AdversarialGrid(
    sides=(5, 10, 20), radii=(0.1, 0.2, 0.4, 0.8), left_width=200, left_c0=10.0,
    right_side=20, right_radius=0.2, widths=(100, 400), deviations=(0.1, 0.25, 0.5, 1.0, 2.0),
    pgd_steps=10, max_epochs=12, patience=2, n_train=256, n_test=128,
)
FULL = AdversarialGrid(
    sides=(5, 7, 10, 14, 20, 28), radii=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0), left_width=1000,
    left_c0=10.0, right_side=28, right_radius=0.2, widths=(100, 1000, 10_000),
    deviations=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2),
)


def adversarial_train(
    ctx: Context, task: BinaryTask, m: int, deviation: float, radius: float, seed: int, grid: AdversarialGrid
) -> tuple[LazyReLUNet, dict[str, float]]:
    """Projected adversarial training (Algorithm 1) of a fresh lazy net; return it and its record.

    Each epoch is one pass of mini-batch SGD (``n_train // batch`` steps, learning rate
    ``β · batch`` on the mean loss = ``β`` on the summed loss), the PGD attack run against the
    current weights at every batch, and ``W`` projected onto ``B_{2,∞}(W₀, V)`` after every
    step (§5.2: "after each gradient step, we project").  Training stops ("when the robust
    training accuracy is not increasing") when for ``patience`` epochs neither the epoch's robust
    training accuracy rose nor its robust training loss fell by 1 % — the loss keeps a run that
    sits at accuracy 0 while it learns from stopping at once — or when the accuracy reaches 1,
    or at ``max_epochs``.
    """
    d = task.d
    net = LazyReLUNet.init(d, m, generator=ctx.generator(f"init/d{d}/m{m}/r{seed}"), device=ctx.device)
    attack = make_attack("pgd", "l2", pgd_steps=grid.pgd_steps)
    config = FitConfig(steps=max(1, grid.n_train // grid.batch), lr=grid.beta * grid.batch, batch=grid.batch,
                       constraint="project", radius=deviation)
    g = ctx.generator(f"train/d{d}/m{m}/V{deviation:g}/R{radius:g}/r{seed}")
    best, best_loss, stale, epochs, last = -1.0, math.inf, 0, 0, 0.0
    for _ in range(grid.max_epochs):
        history = fit(net, (task.x_train, task.y_train), config, attack=attack, tau=radius, generator=g)
        epochs += 1
        last, loss = float(history.accuracy.mean()), float(history.loss.mean())
        if last > best + 1e-3 or loss < 0.99 * best_loss:
            stale = 0
        else:
            stale += 1
        best, best_loss = max(best, last), min(best_loss, loss)
        if last >= 1.0 or stale >= grid.patience:
            break
    return net, {"epochs": float(epochs), "train_robust_accuracy": last,
                 "deviation_c0": float(net.deviation().max()) * math.sqrt(m)}


def evaluate_cell(ctx: Context, net: LazyReLUNet, task: BinaryTask, radius: float, grid: AdversarialGrid,
                  stream: str) -> dict[str, float]:
    """Clean and PGD-robust test accuracy at ``‖δ‖ = radius`` (a misclassified input is not robust)."""
    attack = make_attack("pgd", "l2", pgd_steps=grid.pgd_steps)
    clean = sign_correct(net(task.x_test), task.y_test)
    robust = robust_correct(net, task.x_test, task.y_test, attack, radius, generator=ctx.generator(stream)) & clean
    return {"clean_accuracy": float(clean.double().mean()), "robust_accuracy": float(robust.double().mean())}


CELL_VARS = ("robust_accuracy", "clean_accuracy", "train_robust_accuracy", "epochs", "deviation_c0", "seconds")


def _task(ctx: Context, side: int, grid: AdversarialGrid, cache: dict[int, BinaryTask]) -> BinaryTask:
    if side not in cache:
        g = ctx.generator(f"data/d{side * side}")
        t = mixture_task(side * side, n_train=grid.n_train, n_test=grid.n_test, sigma=grid.sigma, generator=g)
        cache[side] = BinaryTask(*(v.to(ctx.device) for v in (t.x_train, t.y_train, t.x_test, t.y_test)))
    return cache[side]


def run_panels(ctx: Context, grid: AdversarialGrid) -> tuple[xr.Dataset, xr.Dataset]:
    """Train and evaluate every cell of both panels; return ``(by_radius, by_deviation)``."""
    left = [("left", s, grid.left_width, grid.left_c0 / math.sqrt(grid.left_width), r, k)
            for s in grid.sides for r in grid.radii for k in range(grid.seeds)]
    right = [("right", grid.right_side, m, v, grid.right_radius, k)
             for m in grid.widths for v in grid.deviations for k in range(grid.seeds)]
    shape_l = (len(grid.sides), len(grid.radii), grid.seeds)
    shape_r = (len(grid.widths), len(grid.deviations), grid.seeds)
    vals = {"left": {v: np.full(shape_l, np.nan) for v in CELL_VARS},
            "right": {v: np.full(shape_r, np.nan) for v in CELL_VARS}}
    cache: dict[int, BinaryTask] = {}
    cells = sorted(left + right, key=lambda c: c[2] * c[1] ** 2)
    for panel, side, m, dev, radius, seed in ctx.bar(cells, total=len(cells), desc="lazy-adversarial"):
        start = time.perf_counter()
        task = _task(ctx, side, grid, cache)
        net, info = adversarial_train(ctx, task, m, dev, radius, seed, grid)
        info |= evaluate_cell(ctx, net, task, radius, grid, f"eval/{panel}/d{side * side}/m{m}/V{dev:g}/R{radius:g}/r{seed}")
        info["seconds"] = time.perf_counter() - start
        if panel == "left":
            idx = (grid.sides.index(side), grid.radii.index(radius), seed)
        else:
            idx = (grid.widths.index(m), grid.deviations.index(dev), seed)
        for v in CELL_VARS:
            vals[panel][v][idx] = info[v]
    by_radius = xr.Dataset(
        {v: (("d", "radius", "seed"), vals["left"][v]) for v in CELL_VARS},
        coords={"d": np.array([s * s for s in grid.sides]), "radius": np.array(grid.radii, dtype=float),
                "seed": np.arange(grid.seeds)},
        attrs={"m": grid.left_width, "V": grid.left_c0 / math.sqrt(grid.left_width), "C0": grid.left_c0},
    )
    by_deviation = xr.Dataset(
        {v: (("m", "V", "seed"), vals["right"][v]) for v in CELL_VARS},
        coords={"m": np.array(grid.widths), "V": np.array(grid.deviations, dtype=float),
                "seed": np.arange(grid.seeds)},
        attrs={"d": grid.right_side**2, "radius": grid.right_radius},
    )
    for ds in (by_radius, by_deviation):
        ds["robust_accuracy"].attrs["long_name"] = "PGD-robust test accuracy at ‖δ‖₂ = radius"
        ds["deviation_c0"].attrs["long_name"] = "√m max_s ‖w_s − w_s0‖ after training"
    return by_radius, by_deviation


def crossing(x: np.ndarray, acc: np.ndarray, *, falling: bool, level: float = 0.5) -> float:
    """Where ``acc`` (on increasing grid ``x``) first crosses ``level``, linear in ``log x``.

    ``falling=True``: the first ``x`` where it drops below ``level`` after being above it (the
    robustness radius); ``falling=False``: where it first rises to ``level`` (the deviation
    needed).  NaN when the grid does not bracket a crossing.
    """
    for i in range(len(x) - 1):
        a, b = acc[i], acc[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        hit = (a >= level > b) if falling else (a < level <= b)
        if hit:
            t = (a - level) / (a - b)
            return float(np.exp(np.log(x[i]) + t * (np.log(x[i + 1]) - np.log(x[i]))))
    return math.nan


def thresholds(by_radius: xr.Dataset, by_deviation: xr.Dataset) -> xr.Dataset:
    """Measured ``R*(d)`` (robust accuracy falls through 1/2) and ``V*(m)`` (rises through 1/2)."""
    acc_l = by_radius["robust_accuracy"].mean("seed", skipna=True)
    acc_r = by_deviation["robust_accuracy"].mean("seed", skipna=True)
    r_star = np.array([crossing(by_radius["radius"].values, acc_l.sel(d=d).values, falling=True)
                       for d in by_radius["d"].values])
    v_star = np.array([crossing(by_deviation["V"].values, acc_r.sel(m=m).values, falling=False)
                       for m in by_deviation["m"].values])
    return xr.Dataset(
        {"radius_star": ("d", r_star), "radius_star_sqrt_d": ("d", r_star * np.sqrt(by_radius["d"].values)),
         "V_star": ("m", v_star), "V_star_sqrt_m": ("m", v_star * np.sqrt(by_deviation["m"].values))},
        coords={"d": by_radius["d"].values, "m": by_deviation["m"].values},
    )


# ----------------------------------------------------------------------------- figures


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges of a log-spaced grid (geometric midpoints, extended by half a step)."""
    lv = np.log(v.astype(float))
    mid = (lv[1:] + lv[:-1]) / 2
    first = lv[0] - (mid[0] - lv[0]) if len(lv) > 1 else lv[0] - 0.5
    last = lv[-1] + (lv[-1] - mid[-1]) if len(lv) > 1 else lv[-1] + 0.5
    return np.exp(np.concatenate([[first], mid, [last]]))


def _panel(ax, fig: Figure, ds: xr.Dataset, x: str, y: str, paper: tuple[float, str], measured: np.ndarray,
           labels: tuple[str, str, str]) -> None:
    """One panel of Fig. 4: the mean robust accuracy of ``ds`` over its log grid ``(x, y)``, the
    paper's threshold ``x = C/√y`` (``paper = (C, label)``, white dashes) and the ``measured`` one.

    ``labels`` are the x label, y label and title.
    """
    xs, ys = ds[x].values, ds[y].values.astype(float)
    z = ds["robust_accuracy"].mean("seed", skipna=True).values
    mesh = ax.pcolormesh(_edges(xs), _edges(ys), z, cmap="viridis", vmin=0, vmax=1, shading="flat")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, labels=[f"{v:g}" for v in xs])
    ax.set_yticks(ys, labels=[f"{v:g}" for v in ys])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    fig.colorbar(mesh, ax=ax, label="robust test accuracy")
    dense = np.geomspace(ys.min(), ys.max(), 50)
    ax.plot(paper[0] / np.sqrt(dense), dense, "w--", lw=2, label=paper[1])
    ax.plot(measured, ys, "o-", color="tab:red", label="measured: accuracy = ½")
    ax.set_xlim(_edges(xs)[0], _edges(xs)[-1])
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2], fontsize=10)
    ax.legend(fontsize=8, loc="upper right")


def heatmaps(by_radius: xr.Dataset, by_deviation: xr.Dataset, th: xr.Dataset) -> Figure:
    """Fig. 4: robust accuracy over (‖δ‖, d) and over (m, V), paper's and measured thresholds."""
    fig = new_figure(13, 5)
    left, right = fig.subplots(1, 2)
    _panel(left, fig, by_radius, "radius", "d", (PAPER_RADIUS_CONSTANT, "paper: 5/√d"), th["radius_star"].values,
           ("perturbation size ‖δ‖₂ (train and test budget R)", "input dimension d",
            f"(‖δ‖, d) at m = {by_radius.attrs['m']}, V = {by_radius.attrs['V']:.3g}"))
    _panel(right, fig, by_deviation, "V", "m", (PAPER_DEVIATION_CONSTANT, "paper: 25/√m"), th["V_star"].values,
           ("allowed deviation V = max_s ‖w_s − w_s0‖", "width m",
            f"(m, V) at d = {by_deviation.attrs['d']}, ‖δ‖ = {by_deviation.attrs['radius']:g}"))
    return finish(fig, "Robust accuracy after projected adversarial training in the lazy regime (paper Fig. 4)",
                  "ℓ₂ PGD (α = 2.5R/T₂) for training and test; Gaussian mixture on the sphere; mean over seeds")


# ----------------------------------------------------------------------------- claims


def _scaling_claim(th: xr.Dataset, x: str, var: str, scaled: str, claim: str, paper: str) -> Claim:
    """The claim that ``th[var]`` scales as ``x^{-1/2}``: the fitted log-log slope, and the constants
    ``th[var]·√x`` (``th[var + "_sqrt_" + x]``, labelled ``scaled``) that should then be flat."""
    xs = th[x].values.astype(float)
    s = loglog_slope(xs, th[var].values)
    consts = ", ".join(f"{c:.1f}" if np.isfinite(c) else "—" for c in th[f"{var}_sqrt_{x}"].values)
    return Claim(claim, f"slope {s:+.2f}; {scaled} = {consts} at {x} = {', '.join(str(int(v)) for v in xs)}", paper,
                 bool(abs(s - THEORY_SLOPE) <= SLOPE_TOLERANCE) if np.isfinite(s) else None)


def claims(by_radius: xr.Dataset, by_deviation: xr.Dataset, th: xr.Dataset) -> list[Claim]:
    out = [_scaling_claim(
        th, "d", "radius_star", "R*·√d",
        f"robustness radius R*(d) where robust accuracy falls through ½ scales as 1/√d (Fig. 4 left, "
        f"m={by_radius.attrs['m']}; agreement: slope within ±{SLOPE_TOLERANCE} of −1/2)",
        "sharp drop at ‖δ‖ ≈ 5/√d (R*·√d ≈ 5)")]
    acc = by_radius["robust_accuracy"].mean("seed", skipna=True)
    scaled = by_radius["radius"] * np.sqrt(by_radius["d"]) / PAPER_RADIUS_CONSTANT  # R / (5/√d)
    below = float(acc.where(scaled <= 0.5).mean())
    above = float(acc.where(scaled >= 1.5).mean())
    out.append(Claim(
        "robust below 5/√d, not robust above it (Fig. 4 left; agreement: ≥ 0.9 at R ≤ ½·5/√d and ≤ 0.1 at "
        "R ≥ 1.5·5/√d)",
        f"mean robust accuracy {below:.2f} at R ≤ ½·5/√d, {above:.2f} at R ≥ 1.5·5/√d",
        "robust to smaller perturbations; accuracy 0 slightly above 5/√d",
        (below >= 0.9 and above <= 0.1) if np.isfinite(below) and np.isfinite(above) else None,
    ))
    out.append(_scaling_claim(
        th, "m", "V_star", "V*·√m",
        f"deviation V*(m) needed for robust accuracy ½ scales as 1/√m (Fig. 4 right, d={by_deviation.attrs['d']}, "
        f"‖δ‖={by_deviation.attrs['radius']:g}; agreement: slope within ±{SLOPE_TOLERANCE} of −1/2)",
        "phase transition at V = O(1/√m), about 25/√m (V*·√m ≈ 25, d = 784)"))
    acc_r = by_deviation["robust_accuracy"].mean("seed", skipna=True)
    top = acc_r.isel(V=-1).values
    bottom = acc_r.isel(V=0).values
    out.append(Claim(
        "small V: not robust; large V: completely robust (Fig. 4 right; agreement: ≤ 0.1 at the smallest V and "
        "≥ 0.95 at the largest, every m)",
        f"robust accuracy at V={float(acc_r['V'][0]):g}: {', '.join(f'{a:.2f}' for a in bottom)}; "
        f"at V={float(acc_r['V'][-1]):g}: {', '.join(f'{a:.2f}' for a in top)} (m = {', '.join(str(int(x)) for x in th['m'].values)})",
        "robust accuracy 0 below the transition, 1 slightly above it",
        bool(np.all(bottom <= 0.1) and np.all(top >= 0.95)),
    ))
    clean_left = float(by_radius["clean_accuracy"].min())
    clean_r = by_deviation["clean_accuracy"].mean("seed", skipna=True)
    robust_enough = acc_r >= 0.5
    clean_above = float(clean_r.where(robust_enough).min()) if bool(robust_enough.any()) else math.nan
    out.append(Claim(
        "projection does not hurt clean accuracy (§5.2; agreement: ≥ 0.99 in every left-panel cell)",
        f"smallest clean test accuracy: {clean_left:.3f} over (‖δ‖, d) at V = C₀/√m; {clean_above:.3f} over "
        f"(m, V) cells above the transition; {float(clean_r.min()):.3f} over all (m, V) cells"
        + (" (the smallest V·√m leaves too little movement to fit even clean data)"
           if float(clean_r.min()) < 0.9 else ""),
        "the projection step does not hurt the test accuracy",
        clean_left >= 0.99,
    ))
    return out


def run(ctx: Context, grid: AdversarialGrid | None = None) -> Result:
    """Run both panels (``QUICK`` or ``FULL`` unless ``grid`` is given) and assemble the result."""
    grid = grid if grid is not None else (QUICK if ctx.quick else FULL)
    by_radius, by_deviation = run_panels(ctx, grid)
    th = thresholds(by_radius, by_deviation)
    cut = ("Quick mode: m = 200 instead of 1000 on the left (V = 10/√200), d = 400 instead of 784 on the right, "
           f"T₂ = {grid.pgd_steps}, at most {grid.max_epochs} epochs.  " if ctx.quick else
           "Cut from the paper's grid for time (2 cores): 1 seed instead of 5; 6 of the 24 dimensions; 9 radii; "
           "widths 100–10 000 on the right (m = 1e5 at d = 784 with T₂ = 100 would take hours per cell).  ")
    notes = (
        f"{cut}Data: Gaussian mixture on the sphere x ∝ yμ + σξ (σ = {grid.sigma}), {grid.n_train} train / "
        f"{grid.n_test} test inputs per d — a linear classifier is robust to ‖δ‖ ≈ 0.89, so a collapse below that "
        "is the lazy network's.  Training: Algorithm 1 with the attack recomputed at every mini-batch against the "
        f"current weights (batch {grid.batch}, β = {grid.beta} on the summed loss), projection onto "
        "B_{2,∞}(W₀, V) after every step, stop when for "
        f"{grid.patience} epochs neither the robust training accuracy rose nor the robust training loss fell by "
        f"1 %, or the accuracy reaches 1, at most {grid.max_epochs} epochs.  Test: ℓ₂ PGD with the same "
        f"T₂ = {grid.pgd_steps} steps, α = 2.5R/T₂, random start.  Thresholds are where the seed-mean robust "
        "accuracy crosses ½ (interpolated in log scale); '—' means the grid does not bracket it."
    )
    return Result(
        groups={"": by_radius, "by_deviation": by_deviation, "thresholds": th},
        figures={"fig4_robust_accuracy": heatmaps(by_radius, by_deviation, th)},
        claims=claims(by_radius, by_deviation, th),
        params={**asdict(grid), "quick": ctx.quick},
        notes=notes,
    )

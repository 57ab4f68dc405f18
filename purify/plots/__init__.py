"""Figures of a run: one function per figure, and :func:`plot_run`.

Every figure function takes xarray datasets (or plain arrays wrapped as DataArrays) and
returns a :class:`matplotlib.figure.Figure` built without pyplot, so drawing has no global
state, works under any backend (``Agg`` included) and never touches files.  :func:`plot_run`
is the only function that reads a run and writes files: it draws every figure the run has
data for into ``RUN/figures/<name>.<fmt>``, each file written atomically (temp file in the
same folder, then ``os.replace``), and skips — without error — the figures whose analysis
(``purify analyze``) has not been stored.

Figures (name: source → what it shows):

* ``training_curves``: root group → loss, training accuracy, held-out clean and robust
  accuracy over training, the two phases separated;
* ``robust_vs_tau``: root group → accuracy vs ``τ`` per norm and attacker, clean vs robust vs
  ideal model;
* ``theta_histograms``: ``purification`` → the ``θ`` distributions of Figure 2;
* ``direction_norm_control``: ``purification`` (its control) → robustness bought by directions
  vs by norms;
* ``lottery_trajectories``: ``lottery`` + snapshots → ``<M_j, w_i>²`` of a few surely lucky
  neurons (Figure 8);
* ``pure_vs_dense``: ``mixture`` → pure vs dense norms over training (Figure 9);
* ``coefficient_heatmap``: snapshots → ``|<M_j, w_i>|`` of sampled neurons before/after
  adversarial training;
* ``lasso_curves``: ``lasso`` → reconstruction error vs sparsity (Figure 12);
* ``perturbation_density``: ``perturbations`` → density of attack perturbations (Figure 7);
* ``threshold_frontier``: ``threshold`` + ``evaluation`` groups → clean vs robust accuracy of
  the threshold baseline along ``r``, the clean, bias-only and robust models as points;
* ``attack_strength``: ``attack_strength`` group → robust accuracy vs attack steps and starts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from purify import rng
from purify import schema as V
from purify import store as S
from purify.analysis import done, open_analysis
from purify.analysis.rundata import RunData
from purify.plots.evaluation import attack_strength, threshold_frontier
from purify.plots.lasso import lasso_curves
from purify.plots.neurons import (
    as_coefficients,
    coefficient_heatmap,
    lottery_trajectories,
    pure_vs_dense,
    theta_histograms,
)
from purify.plots.robustness import direction_norm_control, perturbation_density, robust_vs_tau
from purify.plots.style import caption
from purify.plots.training import training_curves

__all__ = [
    "FIGURES", "GROUPS_NEEDED", "NEEDS", "attack_strength", "caption", "coefficient_heatmap", "direction_norm_control", "draw", "lasso_curves",
    "lottery_trajectories", "perturbation_density", "plan", "plot_run", "pure_vs_dense",
    "robust_vs_tau", "theta_histograms", "threshold_frontier", "training_curves",
]

#: Every figure :func:`plot_run` can draw, in drawing order.
FIGURES = (
    "training_curves", "robust_vs_tau", "coefficient_heatmap", "theta_histograms",
    "direction_norm_control", "lottery_trajectories", "pure_vs_dense", "perturbation_density",
    "lasso_curves", "threshold_frontier", "attack_strength",
)
#: The stored analysis each figure needs (figures not listed need only the training record).
NEEDS = {
    "theta_histograms": "purification",
    "direction_norm_control": "purification",
    "lottery_trajectories": "lottery",
    "pure_vs_dense": "mixture",
    "perturbation_density": "perturbations",
    "lasso_curves": "lasso",
}
#: The store groups each figure needs beyond the training record (written at completion by
#: :mod:`purify.final_evaluation`; absent in older stores, ``attack_strength`` in fast runs).
GROUPS_NEEDED = {
    "threshold_frontier": (V.THRESHOLD, V.EVALUATION),
    "attack_strength": (V.ATTACK_STRENGTH,),
}
#: Neurons in the lottery-trajectory and heatmap figures.
N_LOTTERY_NEURONS = 6
N_HEATMAP_NEURONS = 20


@dataclass
class _Run:
    """What the drawers share: the run, its caption and the analyses opened so far."""

    data: RunData
    caption: str
    available: list[str]
    _analyses: dict[str, xr.Dataset] = field(default_factory=dict)

    def analysis(self, name: str) -> xr.Dataset:
        if name not in self._analyses:
            self._analyses[name] = open_analysis(self.data.run, name).load()
        return self._analyses[name]

    def numpy_rng(self, stream: str) -> np.random.Generator:
        return np.random.default_rng(rng.stream_seed(int(self.data.config.seed), stream))


# --------------------------------------------------------------------------------------
# Drawers: read the run, call a figure function; None when the run lacks the data.
# --------------------------------------------------------------------------------------


def _training_curves(r: _Run) -> Figure | None:
    return training_curves(r.data.root.load(), caption=r.caption)


def _robust_vs_tau(r: _Run) -> Figure | None:
    return robust_vs_tau(r.data.root.load(), clean_step=r.data.clean_end, robust_step=r.data.final,
                         caption=r.caption)


def _coefficient_heatmap(r: _Run) -> Figure | None:
    d = r.data
    m = d.config.net.width
    pick = np.sort(r.numpy_rng("plots/coefficient_heatmap").choice(m, size=min(N_HEATMAP_NEURONS, m),
                                                                    replace=False))
    M = d.M.astype(np.float64)
    # Only the sampled rows: W M for all m neurons costs m·d·D per step (2·10⁹ at the default size).
    before = as_coefficients(d.W(d.clean_end)[pick].astype(np.float64) @ M, pick)
    after = as_coefficients(d.W(d.final)[pick].astype(np.float64) @ M, pick)
    return coefficient_heatmap(before, after, before_label=f"clean model (step {d.clean_end})",
                               after_label=f"robust model (step {d.final})", caption=r.caption)


def _theta_histograms(r: _Run) -> Figure | None:
    return theta_histograms(r.analysis("purification"), caption=r.caption)


def _direction_norm_control(r: _Run) -> Figure | None:
    ds = r.analysis("purification")
    if "control_accuracy" not in ds:  # the analysis was run with control=False
        return None
    return direction_norm_control(ds, caption=r.caption)


def _lottery_trajectories(r: _Run) -> Figure | None:
    d, lot = r.data, r.analysis("lottery")
    lucky = np.asarray(lot.lucky_feature.values)
    sure = np.flatnonzero(lucky >= 0)
    if sure.size:
        # A seeded random sample, not the best-looking neurons: the figure should be typical.
        chosen = np.sort(r.numpy_rng("plots/lottery_trajectories").choice(
            sure, size=min(N_LOTTERY_NEURONS, sure.size), replace=False))
        highlight = {int(i): int(lucky[i]) for i in chosen}
        note = f"{chosen.size} of {sure.size} surely lucky neurons (S_sure, Def. B.1), drawn at random"
    else:
        score = np.asarray(lot.score.values)
        chosen = np.sort(np.argsort(-score.max(axis=1), kind="stable")[:N_LOTTERY_NEURONS])
        highlight = {int(i): int(score[i].argmax()) for i in chosen}
        note = (f"no surely lucky neuron: the {chosen.size} neurons with the highest init score, "
                "their highest-score feature highlighted")
    steps, M = d.steps, d.M.astype(np.float64)
    C = np.stack([d.W(int(s))[chosen].astype(np.float64) @ M for s in steps])
    return lottery_trajectories(as_coefficients(C, chosen, steps), highlight, clean_end=d.clean_end,
                                note=note, caption=r.caption)


def _pure_vs_dense(r: _Run) -> Figure | None:
    return pure_vs_dense(r.analysis("mixture"), clean_end=r.data.clean_end, caption=r.caption)


def _perturbation_density(r: _Run) -> Figure | None:
    return perturbation_density(r.analysis("perturbations"), caption=r.caption)


def _lasso_curves(r: _Run) -> Figure | None:
    return lasso_curves(r.analysis("lasso"), caption=r.caption)


def _threshold_frontier(r: _Run) -> Figure | None:
    run = r.data.run
    if not (S.has_group(run, V.THRESHOLD) and S.has_group(run, V.EVALUATION)):  # older stores
        return None
    return threshold_frontier(S.load_run(run, V.THRESHOLD), S.load_run(run, V.EVALUATION), caption=r.caption)


def _attack_strength(r: _Run) -> Figure | None:
    if not S.has_group(r.data.run, V.ATTACK_STRENGTH):  # fast strength, or an older store
        return None
    return attack_strength(S.load_run(r.data.run, V.ATTACK_STRENGTH), caption=r.caption)


_DRAWERS: dict[str, Callable[[_Run], Figure | None]] = {
    "training_curves": _training_curves,
    "robust_vs_tau": _robust_vs_tau,
    "coefficient_heatmap": _coefficient_heatmap,
    "theta_histograms": _theta_histograms,
    "direction_norm_control": _direction_norm_control,
    "lottery_trajectories": _lottery_trajectories,
    "pure_vs_dense": _pure_vs_dense,
    "perturbation_density": _perturbation_density,
    "lasso_curves": _lasso_curves,
    "threshold_frontier": _threshold_frontier,
    "attack_strength": _attack_strength,
}


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _check_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure {unknown[0]!r}; allowed: {', '.join(FIGURES)}")
    return list(names)


def plan(run: str | Path, names: Sequence[str] | None = None) -> dict[str, str | None]:
    """For each figure: ``None`` if :func:`plot_run` can draw it, else why it is skipped."""
    available = done(run)
    reasons: dict[str, str | None] = {}
    for n in _check_names(names):
        missing = [g for g in GROUPS_NEEDED.get(n, ()) if not S.has_group(run, g)]
        if NEEDS.get(n) not in (None, *available):
            reasons[n] = f"no {NEEDS[n]} analysis (run: purify analyze {S.run_dir(run)})"
        elif missing:
            reasons[n] = (f"no {missing[0]} group (written at completion; attack_strength needs "
                          "--eval-attack standard or strong)")
        else:
            reasons[n] = None
    return reasons


def save_figure(fig: Figure, path: Path, fmt: str, *, dpi: int = 150) -> None:
    """Write ``fig`` to ``path`` atomically: a temp file in the same folder, then ``os.replace``
    (a reader never sees a half-written figure, a crash leaves the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def draw(run: str | Path, names: Sequence[str] | None = None) -> Iterator[tuple[str, Figure]]:
    """Yield ``(name, figure)`` for every figure of ``names`` (default all) that ``run`` has data
    for, in :data:`FIGURES` order; figures whose analysis is not stored are skipped.

    Nothing is written: :func:`plot_run` saves what this yields.  Raises ``ValueError`` for an
    unknown name and ``purify.store.StoreError`` when ``run`` is not a complete run.
    """
    todo = _check_names(names)
    data = RunData.open(run)
    folder = S.run_dir(run)
    r = _Run(data, caption(data.config, folder.name), done(folder))
    for name in todo:
        need = NEEDS.get(name)
        if need is not None and need not in r.available:
            continue
        fig = _DRAWERS[name](r)
        if fig is not None:
            yield name, fig


def plot_run(
    run: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Draw every figure ``run`` has data for into ``RUN/figures/<name>.<fmt>``.

    Parameters
    ----------
    run : the run folder (or its ``store.zarr``); the run must be complete.
    formats : file formats (``png``, ``pdf``, ``svg``, ...; anything matplotlib writes).
    names : figures to draw (default all of :data:`FIGURES`); a figure whose analysis is not
        stored is skipped (see :func:`plan`), not an error.

    Returns
    -------
    list of Path
        The files written, in :data:`FIGURES` order and then ``formats`` order.

    Raises
    ------
    ValueError
        An unknown figure name or format.
    purify.store.StoreError
        ``run`` is not a complete run.
    """
    _check_names(names)
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ValueError(f"unknown figure format {bad[0]!r}; allowed: {', '.join(sorted(supported))}")
    out_dir = S.run_dir(run) / S.FIGURES_NAME
    written: list[Path] = []
    for name, fig in draw(run, names):
        out_dir.mkdir(exist_ok=True)
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            save_figure(fig, path, fmt)
            written.append(path)
    return written

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Quickstart: one small run, its summary, its figures
#
# purify trains the two-layer network of Allen-Zhu & Li, *Feature Purification* (2020), on
# sparse-coding data `x = Mz + ξ`: first with clean gradient descent, then adversarially
# (FGM at radius `τ`), and attacks it along the way. This notebook is the shortest path
# through it: make a small run from Python, read its summary, look at its figures and open
# its store with xarray. It takes about a minute on two CPU cores.
#
# The run goes into `runs/notebooks-d200-k10-seed0` relative to the kernel's working folder
# (in Jupyter, the notebook's own folder). Notebooks 01 and 03 use the same run, so
# whichever of them you open first pays for the training and the others reuse it.

# %%
from IPython.display import Image, display

from purify import (
    ensure_run,
    format_summary,
    open_run,
    summarize,
)
from purify.pipeline import NOTEBOOK_RUN, notebook_config

# %% [markdown]
# ## The config
#
# `d = 200` input dimensions, sparsity `k = 10`, seed 0: the smallest size at which the
# README's story (a non-robust clean model that adversarial training makes robust) is
# clearly visible. Everything else — width `m = 2d`, `4d` clean steps, the bias schedule, and
# through the default `purification` preset the radius `τ = 0.5/√k`, `2d` adversarial steps
# and biases that keep each neuron's `b_i/‖w_i‖` — is derived from `d` and `k`, as in
# `purify simulate`. Two departures from the
# command's defaults: more weight snapshots (notebook 01 follows neurons through them) and
# only ℓ₂ attacks, to halve the evaluation time. Notebooks 01 and 03 use the same run, so the
# config is written once, as `purify.pipeline.notebook_config()`.

# %%
config = notebook_config()
RUN = NOTEBOOK_RUN

resolved = config.resolve()
print(f"width m = {resolved.net.width}, clean steps = {resolved.train.clean_steps}, "
      f"adversarial steps = {resolved.train.adv_steps}, tau = {resolved.eval.tau:.4f}")

# %% [markdown]
# ## The run
#
# `ensure_run` is the library form of
# `purify simulate --d 200 --k 10 --seed 0 --clean-snapshots 12 --adv-snapshots 6 --norms l2 --out RUN`:
# it trains and evaluates, computes the per-neuron analyses and draws the figures. If `RUN`
# already holds this run (same config), it only adds what is missing; if it holds a run of
# another config it refuses rather than overwrite it.

# %%
ensure_run(config, RUN)

# %% [markdown]
# ## The summary
#
# Four models at the evaluation radius `τ = 0.5/√k` (the `purification` preset's): the
# network at the end of clean training, the threshold model (its baseline, below), the same
# network after adversarial training, and the ideal thresholded
# classifier `f*(x) = Σ w*_i <M_i,x> 1[|<M_i,x>| ≥ 1/(2√k)]` of the paper (§3; docs/theory.md §4.11).
# "robust acc" counts an example only if no attack of the `standard` cascade flips it: FGM,
# PGD-10, the dense direction and random noise on every example, then converged PGD (100
# steps from 4 starts) and `shrink` on those still correct (README, "Strength levels").
# "dense-only" is the attack `−τ y Mw*/‖Mw*‖`, which never looks at the network.

# %%
summary = summarize(RUN)
print(format_summary(summary))

# %% [markdown]
# **Reading it** (seed 0; a different thread count changes round-off, so the last digit can
# move). The clean model classifies about 93 % of held-out inputs but keeps only about
# 51 % under attack at `τ ≈ 0.16` — and the dense direction alone, which ignores the
# network, already costs it 35 points (≈ 57 % left): the weakness is along `M w*`, as
# Theorem 5.1 says. 400 steps of adversarial training raise the robust accuracy to ≈ 62 %
# for one point of clean accuracy, moving the weights by 13 % of their squared norm (median
# neuron at `θ ≈ 0.95` from where it was): the change is local, as in Theorem 5.3.
#
# Is that purification or thresholding? The *threshold model* row is the answer's baseline:
# the clean weights with their biases raised to `b_i = r‖w_i‖/√k`, the best `r` whose clean
# accuracy is within 0.01 of the robust model's, attacked on the same examples. It gains
# nothing here (≈ 52 %), and the paired difference robust − threshold is +0.10 ± 0.01. The
# last line says why: the dense part's alignment with `M w*` falls by 71 % while the
# effective thresholds stay at 0.60 — adversarial training purified the neurons. The ideal
# model (≈ 75 %) stays ahead at this radius.

# %% [markdown]
# ## The figures
#
# `ensure_run` drew every figure into `RUN/figures/` (the same files `purify plot RUN`
# writes). Three of them:

# %%
figures = sorted((RUN / "figures").glob("*.png"))
print("\n".join(p.name for p in figures))

# %% [markdown]
# **Training curves.** Loss, training accuracy and held-out clean and robust accuracy, the
# adversarial phase shaded. Watch the robust accuracy *during clean training*: it rises
# with the clean accuracy at first and falls again in the last stretch, while the clean
# accuracy still improves — that late stretch is where the dense mixture grows (notebook 01).

# %%
display(Image(filename=RUN / "figures" / "training_curves.png"))

# %% [markdown]
# **Accuracy vs radius.** Each attacker (line style) at radii `(0.25 … 2) τ` for the clean
# (blue) and robust (red) models; thick lines: the strongest attack per example; dashed
# black: the ideal model. Adversarial training gains at every radius, least at the smallest
# (0.85 → 0.86) and most from `τ` on (0.54 → 0.63 at `τ`, the radius it was trained at; 0.22
# → 0.36 at `2τ`). The ideal model stays ahead at every radius of the grid here. Random noise of the same norm (the flat dotted
# lines) barely hurts either network: the weakness is directional.

# %%
display(Image(filename=RUN / "figures" / "robust_vs_tau.png"))

# %% [markdown]
# **Pure vs dense parts.** Each neuron written in the dictionary basis splits into a few
# large "pure" coefficients and a dense remainder (Theorem 5.2). The dense part grows late
# in clean training, points along `M w*` (right panel), and halves during adversarial
# training while the pure part stays where it was; notebook 01 follows it neuron by neuron.

# %%
display(Image(filename=RUN / "figures" / "pure_vs_dense.png"))

# %% [markdown]
# ## The store, with xarray
#
# Every number above is a labelled array in `RUN/store.zarr`. `open_run` opens one group
# lazily (values are read when used); the root group holds the curves and accuracies.

# %%
root = open_run(RUN)
root

# %%
robust_at_tau = root.strongest_accuracy.sel(norm="l2", radius=1.0)
robust_at_tau.to_dataframe()[["phase", "strongest_accuracy"]].T

# %% [markdown]
# The same numbers per snapshot step and phase: where the robust accuracy peaks during clean
# training, how low it ends, and how adversarial training brings it back. The weights
# themselves are in `open_run(RUN, "snapshots").W` (`step × neuron × input`) and the
# dictionary and teacher in `open_run(RUN, "problem")`; notebook 01 works with them.
#
# ## Checks
#
# The reading above, as assertions: if a change to purify breaks the story this notebook
# tells, running it (the test suite does) fails here.

# %%
clean, robust = summary["clean_model"], summary["robust_model"]
assert clean["clean_accuracy"] > 0.85, clean
assert clean["robust_accuracy"] < 0.6 and clean["robust_accuracy_by_attack"]["dense"] < 0.7, clean
assert robust["robust_accuracy"] > clean["robust_accuracy"] + 0.05, (clean, robust)
assert robust["clean_accuracy"] > clean["clean_accuracy"] - 0.03, (clean, robust)
paired = summary["paired"]["robust_minus_threshold"]  # not thresholding: it beats the baseline
assert paired["value"] > max(0.05, 3 * paired["se"]), paired
purity = summary["purification"]
assert purity["dense_alignment_robust"] < 0.5 * purity["dense_alignment_clean"], purity
assert summary["relative_weight_change"] < 0.25, summary["relative_weight_change"]
assert summary["median_theta_clean_robust"] > 0.9, summary["median_theta_clean_robust"]
print("the quickstart's reading holds")

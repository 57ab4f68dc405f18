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
# # 01 · Neuron trajectories: lottery tickets, pure features and the dense mixture
#
# Allen-Zhu & Li's account of why clean training is not robust is about single neurons.
# Written in the dictionary basis, `w_i = Σ_j c_ij M_j`, each neuron after clean training is
# (Theorem 5.2, eq. 6.1)
#
# `w_i ≈ Σ_{j ∈ N_i} α_ij w*_j M_j  +  Σ_{j ∉ N_i} β_ij w*_j M_j`,
#
# a few large *pure* coefficients `α` on the features the neuron has learned — which feature
# is decided at initialization, by a *lottery ticket* (§6.1) — plus a small *dense mixture*
# `β ≈ k/d`, positive on average, i.e. pointing along `M w*`. That dense part is what an
# attacker exploits; adversarial training should remove it (Theorem 5.3).
#
# This notebook opens a run and follows neurons through it: three chosen neurons' coefficients
# over the clean and adversarial phases, their pure and dense parts, where the dense part
# points, and how the robust accuracy moves as the dense part grows and shrinks.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

from purify import (
    RunData,
    ensure_run,
    open_analysis,
    open_run,
)
from purify.analysis.alignment import purification_summary
from purify.analysis.mixture import pure_mask
from purify.pipeline import NOTEBOOK_RUN, notebook_config

# %% [markdown]
# ## The run
#
# The same small run as notebook 00 (`d = 200`, `k = 10`, seed 0, 12 + 6 weight snapshots);
# if 00 already made it, it is reused. Only the three analyses used here are computed.

# %%
config = notebook_config()
RUN = NOTEBOOK_RUN
ensure_run(config, RUN, analyses=("lottery", "mixture", "purification"), figures=False)

# %% [markdown]
# ## Opening it with xarray
#
# The weights of every snapshot are in the `snapshots` group (`step × neuron × input`, lazy:
# nothing is read until used), the dictionary `M` and the teacher `w*` in `problem`.
# `RunData` wraps the same store for analysis code; its `trajectories(neurons)` gives the
# coefficients `c_ij = <M_j, w_i>` of chosen neurons at every snapshot. `M` is orthogonal
# here, so the coefficients are an exact change of basis.

# %%
snaps = open_run(RUN, "snapshots")
problem = open_run(RUN, "problem")
data = RunData.open(RUN)
print(snaps.W)
print("snapshot steps:", snaps.step.values, "\nphase:", snaps.phase.values)
w_star = problem.w_star.values
clean_end, final = data.clean_end, data.final

# %% [markdown]
# ## Lottery tickets
#
# At initialization `<M_j, w_i⁰> ~ N(0, σ₀²)`. A neuron is *surely lucky* for feature `j`
# (Definition B.1) when its score `<M_j, w_i⁰>²/(σ₀² log d)` is at least 2.02 for `j`, below
# 2.01 for every other feature, and the sign agrees with `w*_j`. The theory says such a neuron
# grows along `M_j` fastest and ends with `j` as its top feature.

# %%
lot = open_analysis(RUN, "lottery").load()
print(f"surely lucky neurons: {int(lot.n_sure_neurons)} of {data.config.net.width}")
print(f"of those, top feature at the end of clean training = lucky feature: {float(lot.sure_win_fraction):.0%}"
      f"  (if winners were shuffled among neurons: {float(lot.sure_win_chance):.1%})")
print(f"features that are the clear top feature (>= 2x the second) of some neuron: "
      f"{int(lot.features_learned)} of {data.config.data.n_features}")

# %% [markdown]
# Three neurons to follow: the first surely lucky neuron that keeps its ticket, the first that
# loses it, and one chosen by index (change `CHOSEN` to look at another).

# %%
CHOSEN = 42
lucky = lot.lucky_feature.values
top_clean = lot.top_feature.sel(step=clean_end).values
sure = np.flatnonzero(lucky >= 0)
winners, losers = sure[top_clean[sure] == lucky[sure]], sure[top_clean[sure] != lucky[sure]]
picks = {}
if winners.size:
    picks["keeps its ticket"] = int(winners[0])
if losers.size:
    picks["lost its ticket"] = int(losers[0])
picks["chosen by index"] = CHOSEN
for label, i in picks.items():
    tops = lot.top_feature.sel(neuron=i)
    print(f"neuron {i:3d} ({label}): lucky for {lucky[i] if lucky[i] >= 0 else '-'}, top feature at init "
          f"{int(tops.sel(step=0))}, at clean end {int(tops.sel(step=clean_end))}, at the end {int(tops.sel(step=final))}"
          f"; top/second at clean end {float(lot.top_ratio.sel(step=clean_end, neuron=i)):.1f}")

# %% [markdown]
# ## Each neuron's coefficients over training
#
# Below, `α_ij(t) = c_ij(t) · w*_j` (the coefficient with the teacher's sign taken out, so a
# positive value helps classify): every feature in light grey, the neuron's five next-largest
# in darker grey, the feature it ends clean training with in orange, and its lucky feature
# dashed red when that is a different one. The adversarial phase is shaded.

# %%
traj = data.trajectories(list(picks.values()))
alpha = traj * w_star  # (step, neuron, feature)
steps = traj.step.values
fig, axes = plt.subplots(1, len(picks), figsize=(5.2 * len(picks), 4.0), sharey=True)
for ax, (label, i) in zip(np.atleast_1d(axes), picks.items(), strict=True):
    a = alpha.sel(neuron=i).values
    winner = int(top_clean[i])
    ax.plot(steps, a, color="0.85", lw=0.5)
    for j in [j for j in np.argsort(-np.abs(a).max(axis=0)) if j != winner][:5]:
        ax.plot(steps, a[:, j], color="0.45", lw=1.0)
    ax.plot(steps, a[:, winner], "o-", color="tab:orange", lw=2.4, ms=3, label=f"top feature j={winner}")
    if lucky[i] >= 0 and lucky[i] != winner:
        ax.plot(steps, a[:, lucky[i]], "--", color="tab:red", lw=1.8, label=f"lucky feature j={lucky[i]}")
    ax.axvspan(clean_end, final, color="tab:red", alpha=0.07, lw=0)
    ax.set_title(f"neuron {i}: {label}")
    ax.set_xlabel("training step")
    ax.legend(fontsize=8, loc="upper left")
np.atleast_1d(axes)[0].set_ylabel(r"$\alpha_{ij} = \langle M_j, w_i\rangle\, w^*_j$")
fig.tight_layout()

# %% [markdown]
# **Reading it** (seed 0). For the first 130 steps nothing visible happens: every
# coefficient sits at its initial `σ₀`-scale value. Between steps 200 and 800 one feature
# per neuron takes off and ends near 0.9 while all others stay below 0.1 — a pure feature.
# The neuron that keeps its ticket grows exactly along the feature it was lucky for. The one
# that loses it starts with its lucky feature on top, but another feature overtakes it
# around step 200 and wins; its lucky coefficient stays small. Of all surely lucky neurons,
# most keep their ticket (the percentage above), hundreds of times more often than chance,
# but not all: the lottery decides much, not everything. A neuron in no lottery set (neuron
# 42 here) learns a feature too, sometimes with runners-up up to half its size: `|N_i| > 1`.
# During adversarial training (shaded) the winning coefficients barely move (the median
# pure part changes by about 1 %) and every neuron keeps its top feature.

# %% [markdown]
# ## Pure part and dense part
#
# The `mixture` analysis splits every neuron at every snapshot: `N_i` holds the
# coefficients at least `√(k/d)` times the neuron's largest (at most 5), the pure part is
# `‖Σ_{j∈N_i} c_ij M_j‖`, the dense part `‖Σ_{j∉N_i} c_ij M_j‖`. Below: the three neurons
# (colours) and the median over all active neurons (black), pure solid, dense dashed; and on
# the right the cosine of each dense part with `M w*` restricted to the same coordinates.

# %%
mix = open_analysis(RUN, "mixture").load()
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.0))
for (label, i), color in zip(picks.items(), ["tab:orange", "tab:red", "tab:blue"], strict=False):
    ax0.plot(steps, mix.pure_norm.sel(neuron=i), "-", color=color, label=f"neuron {i}: pure")
    ax0.plot(steps, mix.dense_norm.sel(neuron=i), "--", color=color, label=f"neuron {i}: dense")
    ax1.plot(steps, mix.dense_cos_mwstar.sel(neuron=i), "-", color=color, label=f"neuron {i} ({label})")
ax0.plot(steps, mix.median_pure_norm, "k-", lw=2.2, label="median: pure")
ax0.plot(steps, mix.median_dense_norm, "k--", lw=2.2, label="median: dense")
ax1.plot(steps, mix.median_dense_cos_mwstar, "k-", lw=2.2, label="median over neurons")
for ax in (ax0, ax1):
    ax.axvspan(clean_end, final, color="tab:red", alpha=0.07, lw=0)
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
ax0.set_yscale("log")
ax0.set_ylabel("norm")
ax1.set_ylabel(r"cos(dense part, $M w^*$)")
fig.tight_layout()

# %% [markdown]
# Before step 200 a neuron is all "dense": no coefficient stands out, `N_i` is capped at 5
# and the dense part is about twice the pure one. Once a feature wins, the pure part grows
# to ≈ 0.85 and the dense part to ≈ 0.45, about half the pure part — not the `k/d = 5 %`
# scale of the theory's `β`, but spread over 199 coordinates. And it is not noise: its cosine
# with `M w*` climbs from ≈ 0 to ≈ 0.9 at the end of clean training, for lucky and unlucky
# neurons alike. Adversarial training halves the dense part (median 0.45 → 0.23) and leaves
# the pure part where it was (0.85 → 0.84), so the ratio falls from 0.53 to 0.27; and what
# is left of the dense part turns away from `M w*` (cosine 0.88 → 0.49).
#
# ## Where the dense part points, coefficient by coefficient
#
# The same statement without the `N_i` rule: for every neuron, the off-`N_i` coefficients
# `β_ij = c_ij w*_j`, divided by the neuron's largest `|α|`. Theorem 5.2 says they are
# small and positive on average (`≈ k/d`); at initialization they are symmetric around 0.

# %%
f = np.sqrt(data.config.data.k / data.config.data.d)
fig, ax = plt.subplots(figsize=(7, 3.6))
beta_mean = {}
for step, color, name in [(0, "0.5", "init"), (clean_end, "tab:blue", "clean end"), (final, "tab:red", "robust")]:
    C = data.coefficients(step).astype(np.float64)
    off = ~pure_mask(C, f, 5)
    beta = (C * w_star)[off] / np.repeat(np.abs(C).max(axis=1), off.sum(axis=1))
    beta_mean[name] = float(beta.mean())
    ax.hist(beta, bins=np.linspace(-0.08, 0.12, 81), histtype="step", density=True, color=color, lw=1.6,
            label=f"{name} (step {step}): mean {beta.mean():+.3f}")
ax.axvline(data.config.data.k / data.config.data.d, color="k", ls=":", label="k/d")
ax.set_xlabel(r"$\beta_{ij} / \max_j |\alpha_{ij}|$ over $j \notin N_i$, all neurons")
ax.set_ylabel("density")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# At init the ratios are spread wide around 0, flat across this window (nothing has been
# learned, so "largest" means little). At the end of clean training almost all of them are positive, around half of
# `k/d`: every neuron carries a small copy of `M w*`, the direction the dense attack uses.
# After adversarial training the distribution moves most of the way back toward 0 (the
# `mixture` analysis's median over neurons of the mean `β`, in units of `k/d`, falls from
# 0.68 to 0.18).

# %% [markdown]
# ## Purified in direction, or only shrunk?
#
# A smaller dense part is not yet a purified one: a neuron that just shrinks under fixed
# biases raises its effective threshold `r_i = b_i √k/‖w_i‖` and silences its dense part
# along with everything else. (The default `purification` preset keeps each neuron's
# `b_i/‖w_i‖` through adversarial training, so that route is closed here; with
# `preset="boundary"` it is the main one.) The *dense alignment* measures direction alone:
# `a_i = <P_{¬N_i} Mᵀw_i, w*/‖w*‖> / ‖w_i‖`, the share of the neuron, in norm, that lies along
# `M w*` outside its pure coordinates (oriented so its top coefficient agrees with `w*`). It
# does not change when a neuron is rescaled. The `mixture` analysis stores it for every neuron
# at every snapshot; below its median (black) and the three neurons, next to the median dense
# norm, both relative to their values at the end of clean training.

# %%
align = mix.median_dense_alignment.values
i_clean = list(steps).index(clean_end)
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.0))
for (label, i), color in zip(picks.items(), ["tab:orange", "tab:red", "tab:blue"], strict=False):
    ax0.plot(steps, mix.dense_alignment.sel(neuron=i), "-", color=color, lw=1, label=f"neuron {i} ({label})")
ax0.plot(steps, align, "o-", color="k", lw=2.2, label="median over active neurons")
ax0.set_ylabel(r"dense alignment $a_i$")
ax1.plot(steps, align / align[i_clean], "o-", color="k", label="median dense alignment")
ax1.plot(steps, mix.median_dense_norm / mix.median_dense_norm[i_clean], "s--", color="0.4",
         label="median dense norm")
ax1.set_ylabel("relative to the end of clean training")
for ax in (ax0, ax1):
    ax.axvspan(clean_end, final, color="tab:red", alpha=0.07, lw=0)
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
fig.tight_layout()
snap = data.snapshots
purity = purification_summary(data.W(clean_end), snap.b.sel(step=clean_end).values, data.W(final),
                              snap.b.sel(step=final).values, data.M, w_star, data.config.data.k)
print("dense alignment {dense_alignment_clean:.3f} -> {dense_alignment_robust:.3f}, effective r "
      "{effective_r_clean:.2f} -> {effective_r_robust:.2f}, norm share of the change {norm_share_of_change:.2f}"
      .format(**purity))

# %% [markdown]
# **Reading it** (seed 0). At init the dense alignment is 0: the small coefficients point
# nowhere. It grows through clean training to ≈ 0.4 — four tenths of every neuron, in norm,
# is a copy of `M w*` — while the robust accuracy falls (next section). Adversarial training
# turns it back by ≈ 70 % (0.405 → 0.119), more than the dense *norm* falls (−50 %), with
# the effective threshold unchanged (0.60 → 0.60): the neurons are purified in direction,
# not shrunk. Most of the weight change is change of direction (the "norm share" printed
# above is about a quarter of `Σ‖w − w'‖²`).
#
# ## Robust accuracy as the dense part moves
#
# The root group holds the accuracy under the strongest attack at `τ` at every snapshot.
# Left: it and the median dense part over training. Right: one against the other, in time
# order (blue: clean phase, red: adversarial).

# %%
root = open_run(RUN)
robust_acc = root.strongest_accuracy.sel(norm="l2", radius=1.0).values
dense = mix.median_dense_norm.values
adv = np.asarray(root.phase.values) == "adversarial"
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.0))
ax0.plot(steps, robust_acc, "o-", color="tab:purple", label="robust accuracy at τ")
ax0.set_ylabel("accuracy (strongest attack, ℓ₂, τ)")
twin = ax0.twinx()
twin.plot(steps, dense, "s--", color="0.3", label="median dense part")
twin.set_ylabel("median dense norm")
ax0.axvspan(clean_end, final, color="tab:red", alpha=0.07, lw=0)
ax0.set_xlabel("training step")
lines = ax0.get_lines() + twin.get_lines()
ax0.legend(lines, [ln.get_label() for ln in lines], loc="upper center", fontsize=8)
late = steps >= 100  # before that the network has learned nothing; its "dense part" is its init
ax1.plot(dense[late & ~adv], robust_acc[late & ~adv], "o-", color="tab:blue", label="clean training")
ax1.plot(dense[late & adv], robust_acc[late & adv], "o-", color="tab:red", label="adversarial training")
for s, x, y in zip(steps[late], dense[late], robust_acc[late], strict=True):
    ax1.annotate(str(s), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
ax1.set_xlabel("median dense norm")
ax1.set_ylabel("robust accuracy at τ")
ax1.legend(fontsize=8)
fig.tight_layout()

# %%
purif = open_analysis(RUN, "purification").load()
print(f"robust accuracy at tau: clean model {robust_acc[steps == clean_end][0]:.3f}, "
      f"robust model {robust_acc[-1]:.3f}")
print(f"direction-vs-norm control, gain in robust accuracy at tau: total {float(purif.gain_total):+.3f}; "
      f"clean directions at robust norms {float(purif.gain_from_norm):+.3f}; "
      f"robust directions at clean norms {float(purif.gain_from_direction):+.3f}")
surgery = purif.surgery_accuracy.to_pandas()
print("\ndictionary surgery: robust accuracy at tau under the clean / robust model's biases")
print(surgery.round(3))

# %% [markdown]
# **Reading it** (seed 0; `τ = 0.5/√k`). A quarter of the way through clean training
# (step ≈ 200) the network is at its most robust (≈ 0.65); from there to the end of clean
# training the dense part grows fourfold and the robust accuracy falls to ≈ 0.54, while the
# clean accuracy still rises. (Over the same steps the bias schedule lowers `r_t` from 1.5 to
# 0.6, so part of that fall is the thresholds falling.) During adversarial training the
# dense part shrinks and the robust accuracy climbs back to ≈ 0.63, with a dense part still
# about twice as large as at step 201 but turned away from `M w*` (right panel: the red path
# lies right of the blue peak).
#
# The control printed above says which change carries the gain: the robust neurons'
# *directions* at the clean neurons' *norms* (biases frozen) buy almost all of it, the clean
# directions at the robust norms almost nothing. At this size and radius the robustness
# comes from purified directions, not from a higher effective threshold. (With
# `preset="boundary"` — radius `1/√k`, biases raised to the radius — the same notebook shows
# the opposite split; the README's "Purification or thresholding?" has both.)
#
# The dictionary surgery (the table above) asks the complementary question — which *part*
# of the clean neurons is fragile. Deleting each clean neuron's dense `M w*` component and
# nothing else raises the robust accuracy under either set of biases, most of the way to the
# robust model; deleting the whole dense part raises it further. The fragility sits in the
# dense mixture, as Theorem 5.2 says, and adversarial training removes it.
#
# ## Checks
#
# What the prose above claims, as assertions (the test suite runs this notebook).

# %%
assert float(lot.sure_win_fraction) > 0.5 and float(lot.sure_win_fraction) > 10 * float(lot.sure_win_chance)
i_clean, i_final = list(steps).index(clean_end), len(steps) - 1
assert float(mix.median_dense_cos_mwstar[i_clean]) > 0.5  # the dense part points along M w*
assert beta_mean["clean end"] > 0 and abs(beta_mean["init"]) < beta_mean["clean end"]
assert dense[i_final] < dense[i_clean]  # adversarial training shrinks it ...
assert robust_acc[i_final] > robust_acc[i_clean]  # ... and robust accuracy rises
assert robust_acc[:i_clean].max() > robust_acc[i_clean]  # clean training was more robust half-way
assert abs(align[0]) < 0.05 and align[i_clean] > 0.2  # the aligned dense part forms in clean training
fall = 1 - align[i_final] / align[i_clean]
assert fall > 0.5  # adversarial training turns it back by more than half ...
assert fall > 1 - float(mix.median_dense_norm[i_final] / mix.median_dense_norm[i_clean])  # ... more than its norm
assert abs(purity["effective_r_robust"] / purity["effective_r_clean"] - 1) < 0.1  # thresholds kept
assert purity["norm_share_of_change"] < 0.5  # the change is mostly direction
assert float(purif.gain_from_direction) > 2 * max(float(purif.gain_from_norm), 0.0)
assert float(purif.gain_total) > 0.05
for biases in ("clean", "robust"):  # deleting the dense M w* component makes the clean neurons more robust
    assert surgery.loc["clean_minus_dense_mwstar", biases] > surgery.loc["clean", biases]
    assert surgery.loc["clean_pure", biases] >= surgery.loc["clean_minus_dense_mwstar", biases]
assert surgery.loc["robust", "robust"] > surgery.loc["clean", "robust"]
print("the notebook's reading holds")

"""The headline numbers of a run, read back from its store.

The summary compares the network at the end of clean training (``clean_model``), at the end
of adversarial training (``robust_model``) and the ideal thresholded classifier of Allen-Zhu &
Li §3 (``ideal_model``) at the evaluation radius ``τ`` (radius multiple 1), and measures how
far adversarial training moved the neurons (Thm 5.3c): the relative change
``Σ‖w_i − w'_i‖² / Σ‖w_i‖²`` and the median ``θ(w_i, w'_i) = |<w_i,w'_i>|/(‖w_i‖‖w'_i‖)``.
With the default ``adv_bias = "radius"`` it adds ``bias_only_model``: the clean weights under
the raised biases of adversarial training, the control that separates what the biases buy
from what adversarial training does.

Stores with an ``evaluation`` group (:mod:`purify.final_evaluation`) take the models' numbers
from it — every held-out example, the cascade of the run's strength — with standard errors
(``*_se``), and add ``threshold_model`` (the clean weights with biases raised on a grid, the
cheapest explanation of robustness), ``paired`` differences of the robust model with the
others on the same examples, ``attack_strength`` and ``warnings``.  Older stores summarize from
the per-step evaluation (first ``n_eval`` examples, cheap attacks), without those fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from purify import schema as V
from purify import store as S
from purify.analysis.alignment import purification_summary
from purify.config import RunConfig
from purify.evaluate import paired_difference, standard_error
from purify.final_evaluation import format_r


def cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Row-wise ``θ(a_i, b_i) = |<a_i, b_i>| / (‖a_i‖ ‖b_i‖)`` (0 where a row is zero)."""
    num = np.abs((A * B).sum(axis=1))
    den = np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def relative_change(W_from: np.ndarray, W_to: np.ndarray) -> float:
    """``Σ_i ‖w_i − w'_i‖² / Σ_i ‖w_i‖²`` (Thm 5.3c)."""
    return float(((W_to - W_from) ** 2).sum() / (W_from**2).sum())


def model_block(clean: float, strongest: dict[str, float], l2_by_attack: dict[str, float]) -> dict:
    """One model's entry of the summary: clean accuracy, and per evaluated norm the
    strongest-attack accuracy at ``τ`` (``robust_accuracy`` for ℓ₂ with its per-attacker
    break-down, ``robust_accuracy_linf`` for ℓ∞)."""
    block: dict = {V.CLEAN_ACCURACY: clean}
    if "l2" in strongest:
        block[V.ROBUST_ACCURACY] = strongest["l2"]
        block[V.ROBUST_ACCURACY_BY_ATTACK] = l2_by_attack
    if "linf" in strongest:
        block[V.ROBUST_ACCURACY_LINF] = strongest["linf"]
    return block


def _model_block(root: xr.Dataset, step: int | None, radius: float) -> dict:
    if step is None:  # the ideal model: stored once, not per step
        pick = {"radius": radius}
        clean = float(root[V.IDEAL_CLEAN_ACCURACY])
        strongest, by_attack = root[V.IDEAL_STRONGEST_ACCURACY].sel(pick), root[V.IDEAL_ROBUST_ACCURACY].sel(pick)
    else:
        pick = {"step": step, "radius": radius}
        clean = float(root[V.CLEAN_ACCURACY].sel(step=step))
        strongest, by_attack = root[V.STRONGEST_ACCURACY].sel(pick), root[V.ROBUST_ACCURACY].sel(pick)
    norms = [str(n) for n in root.norm.values]
    l2_by_attack = ({str(a): float(by_attack.sel(norm="l2", attack=a)) for a in root.attack.values}
                    if "l2" in norms else {})
    return model_block(clean, {n: float(strongest.sel(norm=n)) for n in norms}, l2_by_attack)


def _se(p: float, n: int) -> float:
    """SE of an accuracy ``p`` over ``n`` 0/1 outcomes, as :func:`standard_error` computes it."""
    return float(np.sqrt(p * (1 - p) / (n - 1))) if n >= 2 else float("nan")


def evaluation_blocks(ev: xr.Dataset, primary: str) -> dict:
    """Model blocks, ``paired`` differences from the stored per-example ``evaluation`` group.

    ``primary`` is the norm of ``robust_accuracy`` and of the paired differences (ℓ₂ when it
    was evaluated).  Paired SE: ``sd(a_j − b_j)/√n`` over the examples ``j``.
    """
    out: dict = {}
    strength, n = str(ev.attrs["strength"]), int(ev.sizes["example"])
    norms = [str(v) for v in ev.norm.values]
    robust = {m: ev[V.ROBUST_CORRECT].sel(model=m).values.astype(np.float64) for m in map(str, ev.model.values)}
    for m in map(str, ev.model.values):
        clean = ev[V.CLEAN_CORRECT].sel(model=m).values.astype(np.float64)
        block: dict = {V.CLEAN_ACCURACY: float(clean.mean()), f"{V.CLEAN_ACCURACY}_se": standard_error(clean)}
        for i, norm in enumerate(norms):
            key = V.ROBUST_ACCURACY if norm == "l2" else V.ROBUST_ACCURACY_LINF
            block[key] = float(robust[m][i].mean())
            block[f"{key}_se"] = standard_error(robust[m][i])
            if m in str(ev.attrs.get("certified_models", "")).split(","):  # not in stores made before it
                proven = ev[V.CERTIFIED].sel(model=m, norm=norm).values.astype(np.float64)
                block[V.CERTIFIED_ACCURACY if norm == "l2" else V.CERTIFIED_ACCURACY_LINF] = float(proven.mean())
        if "l2" in norms:
            each = ev[V.CHEAP_CORRECT].sel(model=m, norm="l2")
            block[V.ROBUST_ACCURACY_BY_ATTACK] = {str(a): float(each.sel(cheap_attack=a).mean())
                                                  for a in each.cheap_attack.values}
        block["n_examples"] = n
        block["evaluation"] = strength
        out[V.SUMMARY_MODELS[m]] = block
    p = norms.index(primary)
    if "robust" in robust:
        out[V.PAIRED] = {f"robust_minus_{m}": paired_difference(robust["robust"][p], robust[m][p])
                         for m in ("threshold", "clean", "bias_only") if m in robust}
    return out


def attack_strength_block(ds: xr.Dataset) -> tuple[dict, list[str]]:
    """``attack_strength`` summary and its warnings: one when the last step of effort along
    either axis (e.g. 100 → 300 steps, 3 → 10 starts, at the largest other effort) still lowers
    robust accuracy by more than one SE of the accuracy reached."""
    acc = ds[V.ACCURACY].values
    steps, starts = [int(v) for v in ds.steps.values], [int(v) for v in ds.starts.values]
    n = int(ds.attrs["n_examples"])
    best = float(acc[-1, -1])
    se = _se(best, n)
    warnings = []
    if len(steps) > 1 and acc[-2, -1] - best > se:
        warnings.append(f"attack not converged: {steps[-2]} -> {steps[-1]} PGD steps still lowers robust "
                        f"accuracy by {acc[-2, -1] - best:.3f} > 1 SE ({se:.3f}); the reported robust "
                        "accuracy may be too high")
    if len(starts) > 1 and acc[-1, -2] - best > se:
        warnings.append(f"attack not converged: {starts[-2]} -> {starts[-1]} starts still lowers robust "
                        f"accuracy by {acc[-1, -2] - best:.3f} > 1 SE ({se:.3f}); the reported robust "
                        "accuracy may be too high")
    block = {"steps": steps, "starts": starts, "accuracy": acc.tolist(), "n_examples": n,
             "converged": not warnings}
    return block, warnings


def threshold_warnings(ds: xr.Dataset, n: int) -> list[str]:
    """A warning when the threshold baseline took the last ``r`` of its grid while the cheap
    attacks' robust accuracy was still rising there (by more than one SE from the ``r`` before,
    in the selection norm): a larger ``r`` might have been a stronger baseline, so the robust
    model's margin over it may be too high."""
    r = [float(v) for v in ds[V.R].values]
    selected = float(ds.attrs[V.SELECTED_R])
    if len(r) < 2 or selected != max(r):
        return []
    fast = ds[V.ROBUST_ACCURACY_FAST].sel(norm=ds.attrs["selection_norm"]).values
    rise = float(fast[-1] - fast[-2])
    if rise <= _se(float(fast[-1]), n):
        return []
    return [f"threshold baseline capped by its grid: it took the grid's last r = {format_r(selected)}, where the "
            f"cheap attacks' robust accuracy still rises ({fast[-2]:.3f} at r = {format_r(r[-2])} -> "
            f"{fast[-1]:.3f}, > 1 SE); a larger r might be a stronger baseline, so robust minus threshold may be "
            "too high"]


def summarize(run: str | Path, *, allow_running: bool = False) -> dict:
    """Summary of the run at ``run`` (see the module docstring for its fields).

    A complete run returns the summary stored at completion; ``allow_running`` computes it
    from whatever a running or stopped store holds (values not yet written are NaN).
    """
    attrs = S.read_attrs(run)
    if attrs.get("status") == "complete" and attrs.get("summary_json"):
        return json.loads(attrs["summary_json"])
    S.open_run(run, require_complete=not allow_running)
    root = S.load_run(run)
    config = RunConfig.from_json(attrs["config_json"])
    tc, ta = config.train.clean_steps, config.train.adv_steps
    radius = float(root.radius.values[np.argmin(np.abs(root.radius.values - 1.0))])
    final = int(root.step.values[-1])
    summary: dict = {
        V.TAU: float(root[V.TAU].sel(norm="l2", radius=radius)) if "l2" in root.norm.values else None,
        "tau_linf": float(root[V.TAU].sel(norm="linf", radius=radius)) if "linf" in root.norm.values else None,
        "norm": "l2",
        "radius_multiple": radius,
        "seed": int(attrs["seed"]),
        "d": config.data.d,
        "k": config.data.k,
        "m": config.net.width,
        "clean_steps": tc,
        "adv_steps": ta,
        V.CLEAN_MODEL: _model_block(root, tc, radius),
        V.ROBUST_MODEL: _model_block(root, final, radius) if ta else None,
        V.IDEAL_MODEL: _model_block(root, None, radius),
        V.RELATIVE_WEIGHT_CHANGE: None,
        V.MEDIAN_THETA: None,
    }
    if ta:
        snaps = S.open_run(run, V.SNAPSHOTS)
        W_clean = snaps[V.W].sel(step=tc).values
        W_robust = snaps[V.W].sel(step=final).values
        summary[V.RELATIVE_WEIGHT_CHANGE] = relative_change(W_clean, W_robust)
        summary[V.MEDIAN_THETA] = float(np.median(cosines(W_clean, W_robust)))
        # Purification in direction vs in norm (Allen-Zhu & Li Thm 5.2/5.3): purify.analysis.alignment.
        problem = S.open_run(run, V.PROBLEM)
        summary[V.PURIFICATION] = purification_summary(
            W_clean, snaps[V.B].sel(step=tc).values, W_robust, snaps[V.B].sel(step=final).values,
            problem[V.M].values, problem[V.W_STAR].values, config.data.k, config.train.adv_norm)
    if S.has_group(run, V.EVALUATION):  # the end-of-phase evaluation (purify.final_evaluation)
        primary = "l2" if "l2" in root.norm.values else "linf"
        summary["norm"] = primary
        summary.update(evaluation_blocks(S.load_run(run, V.EVALUATION), primary))
        summary["warnings"] = []
        if S.has_group(run, V.ATTACK_STRENGTH):
            summary["attack_strength"], summary["warnings"] = attack_strength_block(S.load_run(run, V.ATTACK_STRENGTH))
        if S.has_group(run, V.THRESHOLD):
            threshold, block = S.load_run(run, V.THRESHOLD), summary[V.THRESHOLD_MODEL]
            block["r"] = float(threshold.attrs[V.SELECTED_R])
            summary["warnings"] += threshold_warnings(threshold, block["n_examples"])
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table of a summary, for the terminal."""
    if summary.get(V.TAU) is not None:
        robust_header, robust_key = f"robust acc (l2, tau={summary[V.TAU]:.4g})", V.ROBUST_ACCURACY
    else:  # a run that evaluated linf only
        robust_header = f"robust acc (linf, tau={summary['tau_linf']:.4g})"
        robust_key = V.ROBUST_ACCURACY_LINF
    rows = [("", "clean acc", robust_header, "dense-only acc")]
    threshold = summary.get(V.THRESHOLD_MODEL) or {}
    labels = {V.CLEAN_MODEL: "clean model", V.BIAS_ONLY_MODEL: "  + adv. biases only",
              V.THRESHOLD_MODEL: f"threshold model (r={format_r(threshold.get('r', float('nan')))})",
              V.ROBUST_MODEL: "robust model", V.IDEAL_MODEL: "ideal model"}
    for name, label in labels.items():
        block = summary.get(name)
        if not block:
            continue
        dense = block.get(V.ROBUST_ACCURACY_BY_ATTACK, {}).get("dense")
        robust = f"{block.get(robust_key, float('nan')):.3f}"
        if block.get(f"{robust_key}_se") is not None:
            robust += f" ± {block[f'{robust_key}_se']:.3f}"
        rows.append((label, f"{block[V.CLEAN_ACCURACY]:.3f}", robust, "-" if dense is None else f"{dense:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    block = summary.get(V.ROBUST_MODEL) or summary.get(V.CLEAN_MODEL) or {}
    if block.get("evaluation"):
        lines.append(f"robust accuracy: {block['evaluation']} attack cascade on {block['n_examples']} held-out "
                     "examples (± 1 SE)")
    certified_key = V.CERTIFIED_ACCURACY if robust_key == V.ROBUST_ACCURACY else V.CERTIFIED_ACCURACY_LINF
    proven = [(label.strip().removeprefix("+ ").split(" (")[0], summary[name][certified_key])
              for name, label in labels.items() if certified_key in (summary.get(name) or {})]
    if proven:
        lines.append("certified (proven robust at the same tau, a lower bound): "
                     + ", ".join(f"{label} {value:.3f}" for label, value in proven))
    for name, diff in (summary.get(V.PAIRED) or {}).items():
        lines.append(f"paired {name.replace('_', ' ')}: {diff['value']:+.3f} ± {diff['se']:.3f}")
    if summary.get(V.RELATIVE_WEIGHT_CHANGE) is not None:
        lines.append(f"relative weight change sum||w-w'||^2/sum||w||^2: {summary[V.RELATIVE_WEIGHT_CHANGE]:.3f}")
        lines.append(f"median theta(w_i, w'_i): {summary[V.MEDIAN_THETA]:.3f}")
    if summary.get(V.PURIFICATION):
        p = summary[V.PURIFICATION]
        lines.append(f"dense alignment {p['dense_alignment_clean']:.3f} -> {p['dense_alignment_robust']:.3f} "
                     f"({-p['dense_alignment_reduction']:+.0%}), effective r {p['effective_r_clean']:.2f} -> "
                     f"{p['effective_r_robust']:.2f}, norm share {p['norm_share_of_change']:.2f}")
    lines.extend(f"warning: {w}" for w in summary.get("warnings") or ())
    return "\n".join(lines)

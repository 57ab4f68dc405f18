"""The summary's end-of-phase fields: SEs, paired differences, attack strength and warnings,
the printed table, and stores written before the ``evaluation`` group existed."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import xarray as xr

import purify.simulate as simulate_module
from purify import store as S
from purify.cli import main
from purify.config import RunConfig
from purify.summary import (
    attack_strength_block,
    evaluation_blocks,
    format_summary,
    summarize,
    threshold_warnings,
)

MODELS = ["clean", "robust", "bias_only", "threshold", "ideal"]


def evaluation_dataset(seed: int = 0, n: int = 50) -> xr.Dataset:
    r = np.random.default_rng(seed)
    clean = (r.random((5, n)) < 0.9).astype(np.uint8)
    robust = (clean[:, None, :] & (r.random((5, 2, n)) < 0.5)).astype(np.uint8)
    cheap = (robust[:, :, None, :] | (clean[:, None, None, :] & (r.random((5, 2, 4, n)) < 0.5))).astype(np.uint8)
    broken = np.where(clean[:, None, :] & ~robust.astype(bool), 0, -1).astype(np.int8)
    return xr.Dataset(
        {"clean_correct": (("model", "example"), clean), "robust_correct": (("model", "norm", "example"), robust),
         "broken_by": (("model", "norm", "example"), broken),
         "cheap_correct": (("model", "norm", "cheap_attack", "example"), cheap)},
        coords={"model": MODELS, "norm": ["l2", "linf"], "example": np.arange(n),
                "cheap_attack": ["fgm", "pgd", "dense", "noise"], "attack": ["fgm", "pgd", "dense", "noise"]},
        attrs={"strength": "standard"},
    )


def test_evaluation_blocks_against_numpy():
    ds = evaluation_dataset()
    out = evaluation_blocks(ds, "l2")
    rob = ds.robust_correct.values.astype(float)
    for i, m in enumerate(MODELS):
        block = out[f"{m}_model"]
        c = ds.clean_correct.values[i].astype(float)
        assert block["clean_accuracy"] == pytest.approx(c.mean())
        assert block["clean_accuracy_se"] == pytest.approx(c.std(ddof=1) / np.sqrt(50))
        assert block["robust_accuracy"] == pytest.approx(rob[i, 0].mean())
        assert block["robust_accuracy_se"] == pytest.approx(rob[i, 0].std(ddof=1) / np.sqrt(50))
        assert block["robust_accuracy_linf"] == pytest.approx(rob[i, 1].mean())
        assert block["robust_accuracy_linf_se"] == pytest.approx(rob[i, 1].std(ddof=1) / np.sqrt(50))
        assert block["robust_accuracy_by_attack"]["dense"] == pytest.approx(ds.cheap_correct.values[i, 0, 2].mean())
        assert block["n_examples"] == 50 and block["evaluation"] == "standard"
    for other, j in (("threshold", 3), ("clean", 0), ("bias_only", 2)):
        d = rob[1, 0] - rob[j, 0]
        assert out["paired"][f"robust_minus_{other}"] == pytest.approx(
            {"value": d.mean(), "se": d.std(ddof=1) / np.sqrt(50)})
    linf = evaluation_blocks(ds, "linf")["paired"]["robust_minus_clean"]
    assert linf["value"] == pytest.approx((rob[1, 1] - rob[0, 1]).mean())


def strength_dataset(acc, n=400) -> xr.Dataset:
    return xr.Dataset({"accuracy": (("steps", "starts"), np.asarray(acc, float))},
                      coords={"steps": [10, 30, 100, 300], "starts": [1, 3, 10]}, attrs={"n_examples": n})


def test_attack_strength_warns_only_when_the_last_doubling_still_helps_by_more_than_one_se():
    se = np.sqrt(0.5 * 0.5 / 399)  # ≈ 0.025 at accuracy 0.5, n = 400
    flat = [[0.6, 0.55, 0.53], [0.55, 0.52, 0.51], [0.52, 0.51, 0.505], [0.51, 0.505, 0.5]]
    block, warnings = attack_strength_block(strength_dataset(flat))
    assert warnings == [] and block["converged"] and block["accuracy"] == flat
    assert block["steps"] == [10, 30, 100, 300] and block["starts"] == [1, 3, 10]
    steps = [row[:] for row in flat]
    steps[2][2] = 0.5 + 1.01 * se  # 100 -> 300 steps still gains more than one SE
    block, warnings = attack_strength_block(strength_dataset(steps))
    assert not block["converged"] and len(warnings) == 1 and "100 -> 300 PGD steps" in warnings[0]
    starts = [row[:] for row in flat]
    starts[3][1] = 0.5 + 1.01 * se  # 3 -> 10 starts
    _, warnings = attack_strength_block(strength_dataset(starts))
    assert len(warnings) == 1 and "3 -> 10 starts" in warnings[0]
    starts[3][1] = 0.5 + 0.99 * se  # within one SE: no warning
    assert attack_strength_block(strength_dataset(starts))[1] == []


def threshold_dataset(fast_l2, selected, n=400) -> xr.Dataset:
    r = [0.6 + 0.1 * i for i in range(len(fast_l2))]
    fast = np.stack([np.asarray(fast_l2, float), np.full(len(fast_l2), 0.3)], axis=1)  # linf: flat, not selected
    return xr.Dataset({"robust_accuracy_fast": (("r", "norm"), fast)}, coords={"r": r, "norm": ["l2", "linf"]},
                      attrs={"selected_r": r[selected], "selection_norm": "l2"})


def test_threshold_baseline_warns_only_when_capped_by_its_grid_while_still_rising():
    se = np.sqrt(0.6 * 0.4 / 399)  # ≈ 0.0245 at accuracy 0.6, n = 400
    rising = [0.40, 0.50, 0.60 - 1.01 * se, 0.60]
    (warning,) = threshold_warnings(threshold_dataset(rising, selected=3), 400)
    assert "grid's last r = 0.9" in warning and "too high" in warning
    assert threshold_warnings(threshold_dataset(rising, selected=2), 400) == []  # not the grid's end
    flat = [0.40, 0.50, 0.60 - 0.99 * se, 0.60]  # within one SE: a plateau, the grid does not cap it
    assert threshold_warnings(threshold_dataset(flat, selected=3), 400) == []
    # the rise is read in the selection norm: linf rising alone does not warn
    ds = threshold_dataset(flat, selected=3)
    ds["robust_accuracy_fast"].loc[{"norm": "linf"}] = [0.1, 0.2, 0.3, 0.5]
    assert threshold_warnings(ds, 400) == []


def test_summarize_adds_the_threshold_warning_from_the_stored_group(tiny_run, tmp_path, monkeypatch):
    """``summarize`` hands the stored ``threshold`` group and the evaluation's example count to
    :func:`threshold_warnings` and appends what it returns to the attack-strength warnings."""
    import shutil

    import purify.summary

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    S.update_attrs(run, summary_json="")  # computed afresh, not the summary stored at completion
    seen = {}

    def capped(ds, n):
        seen.update(r=float(ds.attrs["selected_r"]), n=n)
        return ["capped"]

    monkeypatch.setattr(purify.summary, "threshold_warnings", capped)
    summary = summarize(run)
    assert summary["warnings"][-1] == "capped"
    assert seen == {"r": summary["threshold_model"]["r"], "n": 20}


def test_format_summary_prints_threshold_line_se_paired_and_warnings():
    ds = evaluation_dataset()
    summary = {"tau": 0.25, "tau_linf": 0.01, "relative_weight_change": None, **evaluation_blocks(ds, "l2"),
               "warnings": ["attack not converged: something"]}
    summary["threshold_model"]["r"] = 1.3
    text = format_summary(summary)
    assert "threshold model (r=1.3)" in text
    rob = summary["robust_model"]
    assert f"{rob['robust_accuracy']:.3f} ± {rob['robust_accuracy_se']:.3f}" in text
    assert "paired robust minus threshold:" in text
    assert text.splitlines()[-1] == "warning: attack not converged: something"


@pytest.fixture(scope="module")
def old_store(tmp_path_factory, _one_thread):
    """A run written the way purify wrote runs before the end-of-phase evaluation: no
    ``evaluation``/``threshold`` groups, no ``eval.strength`` in the stored config."""
    run = tmp_path_factory.mktemp("old") / "run"
    options = ["--d", "24", "--k", "2", "--m", "32", "--clean-steps", "30", "--adv-steps", "10",
               "--n-test", "100", "--n-eval", "50", "--batch-size", "64", "--pgd-steps", "2",
               "--clean-snapshots", "2", "--adv-snapshots", "1", "--log-points", "5", "--quiet",
               "--no-analysis", "--seed", "1", "--eval-attack", "fast"]
    mp = pytest.MonkeyPatch()
    mp.setattr(simulate_module.Simulation, "final_evaluation", lambda self: None)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["simulate", *options, "--out", str(run)])
    mp.undo()
    assert code == 0, err.getvalue()
    raw = json.loads(S.read_attrs(run)["config_json"])
    del raw["eval"]["strength"]
    S.update_attrs(run, config_json=json.dumps(raw, sort_keys=True), summary_json="")
    return run


def test_old_store_summarizes_without_the_new_fields(old_store):
    assert RunConfig.from_json(S.read_attrs(old_store)["config_json"]).eval.strength == "fast"
    assert not S.has_group(old_store, "evaluation")
    summary = summarize(old_store, allow_running=True)
    for key in ("threshold_model", "paired", "attack_strength", "warnings"):
        assert key not in summary
    for key in ("clean_model", "robust_model", "ideal_model"):
        assert "robust_accuracy_se" not in summary[key] and "robust_accuracy" in summary[key]
    text = format_summary(summary)
    assert "threshold" not in text and "±" not in text and "clean model" in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["info", str(old_store), "--json"]) == 0
    assert json.loads(out.getvalue())["robust_model"]["clean_accuracy"] == summary["robust_model"]["clean_accuracy"]

"""Presets: the defaults of the radius and of adversarial training (README, "Purification or
thresholding?"), and the ``norm`` biases of adversarial training that keep each neuron's
effective threshold ``b_i√k/‖w_i‖``."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import xarray as xr

from purify.cli import main
from purify.config import ConfigError, DataConfig, RunConfig, TrainConfig


def test_purification_is_the_default():
    assert RunConfig().preset == "purification"
    default = RunConfig(data=DataConfig(d=400, k=16), seed=0).resolve()
    assert default == RunConfig(data=DataConfig(d=400, k=16), seed=0, preset="purification").resolve()


def test_boundary_keeps_the_earlier_defaults():
    cfg = RunConfig(data=DataConfig(d=400, k=16), seed=0, preset="boundary").resolve()
    assert cfg.eval.tau == pytest.approx(1 / 4) and cfg.train.adv_tau == cfg.eval.tau
    assert cfg.train.adv_bias == "radius"
    assert cfg.train.adv_steps == cfg.train.clean_steps // 5


def test_purification_preset_derives_radius_biases_and_length():
    cfg = RunConfig(data=DataConfig(d=400, k=16), seed=0, preset="purification").resolve()
    assert cfg.eval.tau == pytest.approx(0.5 / 4) and cfg.train.adv_tau == cfg.eval.tau
    assert cfg.eval.tau_linf == pytest.approx(0.5 / 4 / 20)
    assert cfg.train.adv_bias == "norm"
    assert cfg.train.adv_steps == cfg.train.clean_steps // 2


def test_given_values_win_over_the_preset():
    cfg = RunConfig(data=DataConfig(d=400, k=16), seed=0, preset="purification",
                    train=TrainConfig(adv_bias="clean", adv_steps=7)).resolve()
    assert (cfg.train.adv_bias, cfg.train.adv_steps) == ("clean", 7)


def test_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="preset"):
        RunConfig(preset="theorem")


def test_stored_config_without_preset_reads_as_boundary():
    raw = json.loads(RunConfig(seed=1, preset="purification").resolve().to_json())
    del raw["preset"]
    assert RunConfig.from_json(json.dumps(raw)).preset == "boundary"


def test_cli_preset_bad_value_exits_2():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["simulate", "--preset", "nope", "--dry-run"])
    assert code == 2 and len(err.getvalue().strip().splitlines()) == 1 and "preset" in err.getvalue()


def test_norm_biases_keep_every_neurons_effective_threshold(tmp_path):
    run = tmp_path / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["simulate", "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "120",
                     "--batch-size", "64", "--n-test", "100", "--n-eval", "50", "--eval-attack", "fast",
                     "--preset", "purification", "--seed", "2", "--no-analysis", "--quiet", "--out", str(run)])
    assert code == 0, err.getvalue()
    snaps = xr.open_zarr(run / "store.zarr", group="snapshots", consolidated=False)
    phase = snaps.phase.values
    W, b = snaps.W.values, snaps.b.values
    ratio = b / np.linalg.norm(W, axis=2)  # (step, neuron): b_i/‖w_i‖
    end_clean = int(np.flatnonzero(phase == "clean")[-1])
    adversarial = np.flatnonzero(phase == "adversarial")
    assert adversarial.size >= 2
    moved = np.abs(W[adversarial[-1]] - W[end_clean]).max()
    assert moved > 1e-4  # the weights moved, so keeping the ratio is not trivial
    for i in adversarial:
        np.testing.assert_allclose(ratio[i], ratio[end_clean], rtol=1e-5)
    # and r_end = 0.6 of the norm schedule is that ratio times √k
    assert np.median(ratio[end_clean]) * math.sqrt(3) == pytest.approx(0.6, rel=1e-4)

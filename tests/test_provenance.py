"""The provenance record: what a command writes, what older stores imply, and `purify info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures import run_main

from purify import provenance
from purify import store as S
from purify.config import DataConfig, EvalConfig, NetConfig, RunConfig, TrainConfig


def _tiny() -> RunConfig:
    return RunConfig(
        data=DataConfig(d=16, k=2, n_test=40),
        net=NetConfig(width=32),
        train=TrainConfig(clean_steps=16, adv_steps=4, batch_size=32, clean_snapshots=2, adv_snapshots=2,
                          log_points=2),
        eval=EvalConfig(radii=(1.0,), norms=("l2",), attacks=("fgm",), n_eval=20, strength="fast"),
        seed=4,
    ).resolve()


def test_a_cli_run_records_its_command_line(tiny_run: Path):
    records = provenance.read(S.read_attrs(tiny_run))
    assert len(records) == 1
    (record,) = records
    assert record.command[:2] == ["purify", "simulate"] and "--out" in record.command
    assert record.kind == "run" and record.device == "cpu" and record.threads == torch.get_num_threads()
    assert record.seed == S.read_attrs(tiny_run)["seed"]
    assert json.loads(record.config) == json.loads(S.read_attrs(tiny_run)["config_json"])
    assert record.versions == provenance.versions() and record.host and record.time.endswith("+00:00")
    code, stdout, _ = run_main("info", tiny_run)
    assert code == 0 and "command: purify simulate " in stdout


def test_each_session_of_a_run_appends_one_record(tmp_path: Path):
    """A run stopped at its start and resumed lists both commands, oldest first."""
    from purify.pipeline import run_simulation

    def stop(_config):
        raise KeyboardInterrupt

    config = _tiny()
    run_simulation(config, tmp_path / "r", progress=False, command=["first"])
    S.update_attrs(tmp_path / "r", status="stopped")  # as if Ctrl-C had come at the last step
    run_simulation(config, tmp_path / "r", resume=True, progress=False, command=["second"])
    assert [r.command for r in provenance.read(S.read_attrs(tmp_path / "r"))] == [["first"], ["second"]]
    with pytest.raises(KeyboardInterrupt):  # refused before anything is written: no record, no store
        run_simulation(config, tmp_path / "s", progress=False, on_start=stop, command=["never"])
    assert not S.store_path(tmp_path / "s").exists()


def test_stores_written_before_the_record_imply_one():
    """Runs, experiments and sweeps stored with the older per-kind attributes."""
    run = {"config_json": '{"seed": 3}', "seed": 3, "device": "cpu", "torch_threads": 2,
           "purify_version": "0.1.0", "torch_version": "2.3.0", "format_version": 2}
    (r,) = provenance.read(run)
    assert (r.command, r.kind, r.seed, r.device, r.threads) == (None, "run", 3, "cpu", 2)
    assert r.versions == {"purify_version": "0.1.0", "torch_version": "2.3.0"}
    assert "(not recorded)" in r.describe() and "2 threads" in r.describe()
    experiment = {"kind": "experiment", "seed": 1, "device": "cpu", "params_json": '{"n": 5}',
                  "versions_json": json.dumps({"purify": "0.1.0", "numpy": "1.26.0"})}
    (e,) = provenance.read(experiment)
    assert e.kind == "experiment" and e.versions == {"purify_version": "0.1.0", "numpy_version": "1.26.0"}
    assert json.loads(e.config) == {"n": 5}
    (s,) = provenance.read({"spec_json": "{}", "purify_version": "0.1.0"})
    assert s.kind == "sweep" and s.command is None
    assert provenance.read({}) == []
    assert provenance.read({provenance.ATTR: "[{not json"}) == []


def test_records_round_trip_through_the_attribute():
    record = provenance.current(kind="sweep", config="{}", threads=3, command=["purify", "sweep", "x.toml"],
                                scheduler="local")
    (back,) = provenance.read(provenance.attrs([record]))
    assert back == record and back.extra == {"scheduler": "local"}


def test_info_on_a_store_written_before_the_record(tmp_path: Path):
    """A run stored without ``provenance_json`` (as simulate alone, or purify before it, wrote
    them) still opens, and `purify info` says its command line was not recorded."""
    from purify.simulate import simulate

    simulate(_tiny(), tmp_path / "old", progress=False)
    assert provenance.ATTR not in S.read_attrs(tmp_path / "old")
    code, stdout, err = run_main("info", tmp_path / "old")
    assert code == 0, err
    assert "command: (not recorded)  [device cpu" in stdout and "status: complete" in stdout

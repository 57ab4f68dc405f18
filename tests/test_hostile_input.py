"""Hostile input never ends in a traceback: generated extreme values for every numeric and path
option, hostile config files, sizes that cannot fit, damaged store attributes and metadata, and
runs interrupted while their store is created.  Each case: exit 0 or 2, at most three lines on
stderr, never ``Traceback``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purify import resources as R
from purify import store as S
from purify.cli import main
from purify.cli.parser import FLOAT, INT, OPTIONS, _float_list
from purify.config import ConfigError, DataConfig, NetConfig, RunConfig, TrainConfig

MICRO = [
    "--d", "8", "--k", "1", "--m", "8", "--clean-steps", "4", "--adv-steps", "2", "--n-test", "20",
    "--n-eval", "10", "--batch-size", "16", "--pgd-steps", "1", "--clean-snapshots", "2",
    "--adv-snapshots", "1", "--log-points", "2", "--radii", "1", "--norms", "l2", "--attacks", "fgm",
    "--quiet", "--no-analysis",
]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_main(*argv: str | Path) -> tuple[int, str, str]:
    """``purify.cli.main(argv)`` in-process: (exit code, stdout, stderr); an exception escaping
    `main` fails the test with its type (a traceback the user would have seen)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's --help and friends
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, err: str, *, allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, (code, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) <= 3, err
    if code == 2:
        assert err.splitlines()[-1].startswith("purify: error: "), err


# --------------------------------------------------------------------------------------
# 1. Generated hostile values for every numeric and path option
# --------------------------------------------------------------------------------------

NUMERIC = [flag for flag, _, _, kind, _ in OPTIONS if kind in (INT, FLOAT, _float_list)]
EXTREMES = ["1e300", "-1e300", "1e39", "3.5e38", "1.8e19", "2e19", "1e-320", "5e-324", "1e-45",
            "-0.0", "0", "-1", "nan", "-nan", "inf", "-inf", "9" * 30, str(2**53), str(2**53 + 1),
            str(2**63), str(-(2**63) - 1), "1_000", "0x10", "١٢", "1e", ""]
HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(EXTREMES),
    st.floats().map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.text(max_size=12),
)
HOSTILE_PATHS = st.one_of(
    st.sampled_from(["x" * 300, "é" * 200, "a/" * 3000 + "b", "\u202e\u0000x", "🙂" * 70, ".", "..", "/"]),
    st.text(min_size=1, max_size=300),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(NUMERIC), value=HOSTILE_NUMBERS, other=st.sampled_from(NUMERIC),
       other_value=HOSTILE_NUMBERS)
def test_hostile_numbers_give_exit_0_or_2_in_a_few_lines(tmp_path: Path, flag, value, other, other_value):
    out = tmp_path / "run"
    code, _, err = run_main("simulate", "--dry-run", "--out", out, f"{flag}={value}", f"{other}={other_value}")
    assert_clean_exit(code, err)
    assert not out.exists()  # --dry-run writes nothing


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=HOSTILE_PATHS, where=st.sampled_from(["simulate-out", "config", "info", "plot", "resume", "sweep-out"]))
def test_hostile_paths_give_exit_0_or_2_in_a_few_lines(tmp_path: Path, monkeypatch, path, where):
    monkeypatch.chdir(tmp_path)
    argv = {
        "simulate-out": ["simulate", "--dry-run", "--out", path],
        "config": ["simulate", "--dry-run", "--out", "run", "--config", path],
        "info": ["info", path],
        "plot": ["plot", path],
        "resume": ["simulate", "--resume", "--out", path],
        "sweep-out": ["sweep", "--d", "8,9", "--k", "1", "--m", "0", "--out", path],  # --m 0: refused
    }[where]
    code, _, err = run_main(*argv)
    assert_clean_exit(code, err)
    assert code == 2 or where == "simulate-out"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--d", "9999999999999999999999999"], "invalid d=9999999999999999999999999: must be an integer in [2, 2^53]"),
    (["--m", "9999999999999999999999999"], "invalid m=9999999999999999999999999"),
    (["--batch-size", "1000000000000"], "invalid --batch-size=1000000000000"),
    (["--d", "1000000", "--k", "3"], "invalid --d=1000000"),
    (["--n-test", "100000000000"], "invalid --n-test=100000000000"),
    (["--sigma-x", "1e200"], "invalid sigma_x=1e+200: must be at most 1.8e+19"),
    (["--tau", "1e300"], "invalid tau=1e+300"),
    (["--lr", "5e-324"], "the derived adv_lr = lr/2 = 0.0 must be > 0"),
])
def test_the_issues_examples_are_refused_in_one_line_before_any_work(tmp_path: Path, argv, needle):
    out = tmp_path / "run"
    code, _, err = run_main("simulate", *argv, "--out", out, "--quiet")
    assert code == 2, err
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_a_subnormal_spike_level_runs():
    code, out, err = run_main("simulate", "--spike-level", "1e-200", "--dry-run")
    assert code == 0, err
    assert "estimated peak memory" in out


# --------------------------------------------------------------------------------------
# 2. Hostile config and sweep files
# --------------------------------------------------------------------------------------

HOSTILE_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "deep.json": (lambda p: p.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested"),
    "deep.toml": (lambda p: p.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n"), "nested"),
    "dotted.toml": (lambda p: p.write_text(".".join(["a"] * 3000) + " = 1\n"), "nested"),
    "date.toml": (lambda p: p.write_text("[data]\nd = 1979-05-27\n"), "data.d holds a date"),
    "big.toml": (lambda p: p.write_bytes(b"#" * 2_000_000), "larger than"),
    "huge_int.json": (lambda p: p.write_text('{"data": {"d": ' + "9" * 5000 + "}}"), "cannot parse"),
    "nan.json": (lambda p: p.write_text('{"data": {"sigma_x": NaN}}'), "sigma_x=nan"),
    "fifo.toml": (lambda p: os.mkfifo(p), "not a regular file"),
    "folder.toml": (lambda p: p.mkdir(), "not a regular file"),
    "latin1.toml": (lambda p: p.write_bytes(b"[data]\nd = 3 # \xe9\n"), "not a UTF-8"),
}


@pytest.mark.parametrize("name", HOSTILE_FILES)
@pytest.mark.parametrize("reader", ["--config", "sweep file"])
def test_hostile_config_and_sweep_files_give_one_line(tmp_path: Path, name, reader):
    make, needle = HOSTILE_FILES[name]
    if name == "nan.json" and reader != "--config":
        needle = "unknown table 'data'"  # a sweep file nests the config under [base]
    path = tmp_path / name
    make(path)
    if reader == "--config":
        code, _, err = run_main("simulate", "--config", path, "--dry-run", "--out", tmp_path / "run")
    else:
        code, _, err = run_main("sweep", path, "--out", tmp_path / "sweep", "--quiet")
    assert code == 2, err
    assert len(err.splitlines()) == 1 and needle in err, err


def test_sweeps_too_large_are_refused_before_anything_is_built(tmp_path: Path):
    spec = tmp_path / "range.toml"
    spec.write_text("[axes]\nseed = {range = [0, 100000000000000000000000000000]}\n")
    code, _, err = run_main("sweep", spec, "--out", tmp_path / "s")
    assert code == 2 and "has more than 100000 values" in err, err
    code, _, err = run_main("sweep", "--seeds", str(10**12), "--out", tmp_path / "s")
    assert code == 2 and "at most 100000 cells" in err, err
    code, _, err = run_main("sweep", "--d", "8,1000000", "--k", "1", "--out", tmp_path / "s", "--quiet")
    assert code == 2 and err.startswith("purify: error: cell d=1000000 seed=0: invalid --m=2000000"), err
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------
# 3. The resource estimate and --dry-run
# --------------------------------------------------------------------------------------

def test_estimate_by_hand():
    """d = 10, m = 20, 3 snapshots (2 clean + 1 adversarial): the store terms by hand."""
    config = RunConfig(data=DataConfig(d=10, k=2, n_test=50), net=NetConfig(width=20),
                       train=TrainConfig(clean_steps=4, adv_steps=2, clean_snapshots=2, adv_snapshots=1,
                                         batch_size=8)).resolve(seed=0)
    est = R.estimate(config)
    store = {t.what: t.bytes for t in est.store}
    assert store["weight snapshots"] == 3 * 20 * (10 + 2) * 4
    assert store["dictionary"] == (10 * 10 + 10 + 10) * 4
    assert store["checkpoint"] == 20 * 10 * 4 + 2 * 20 * 4
    memory = {t.what: t.bytes for t in est.memory}
    assert memory["held-out set"] == 50 * (10 + 10) * 4
    assert memory["weights and their copies"] == 5 * 20 * 10 * 4
    assert est.memory_bytes == sum(memory.values()) > R.BASELINE_BYTES
    # Sizes scale as they should: twice the width, twice the snapshot bytes.
    wider = RunConfig(data=config.data, net=NetConfig(width=40), train=config.train, eval=config.eval,
                      seed=0).resolve()
    assert {t.what: t.bytes for t in R.estimate(wider).store}["weight snapshots"] == 2 * store["weight snapshots"]


def test_check_fits_names_the_option_the_estimate_and_what_is_available(monkeypatch, tmp_path: Path):
    config = RunConfig(data=DataConfig(d=100, k=3)).resolve(seed=0)
    monkeypatch.setattr(R, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(ConfigError) as e:
        R.check_fits(config, tmp_path, given={"d"})
    assert str(e.value).startswith("invalid --d=100 ") and "10 MB are available" in str(e.value)
    monkeypatch.setattr(R, "available_memory", lambda: 2**40)
    monkeypatch.setattr(R, "free_disk", lambda path: 1000)
    with pytest.raises(ConfigError, match=r"the store needs up to .* 1000 B are free at"):
        R.check_fits(config, tmp_path)


def test_dry_run_prints_the_derived_config_and_the_estimate_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "run"
    code, stdout, err = run_main("simulate", *MICRO, "--seed", "0", "--out", out, "--dry-run")
    assert code == 0, err
    assert "d=8 k=1 D=8" in stdout and "estimated peak memory" in stdout and "estimated store size" in stdout
    assert "nothing written" in stdout and not out.exists()
    code, _, err = run_main("simulate", "--out", out, "--resume", "--dry-run")
    assert code == 2 and "--dry-run" in err


# --------------------------------------------------------------------------------------
# 4. Damaged attributes and array metadata: every reading command refuses in one line
# --------------------------------------------------------------------------------------

def _copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _root(run: Path) -> Path:
    return S.store_path(run) / "zarr.json"


def _set_attr(name: str, value) -> Callable[[Path], None]:
    return lambda run: _edit_json(_root(run), lambda m: m["attributes"].__setitem__(name, value))


def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        def inner(meta: dict) -> None:
            config = json.loads(meta["attributes"]["config_json"])
            change(config)
            meta["attributes"]["config_json"] = json.dumps(config)
        _edit_json(_root(run), inner)
    return edit


def _big_endian(array: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        _edit_json(S.store_path(run) / array / "zarr.json",
                   lambda m: m["codecs"][0]["configuration"].__setitem__("endian", "big"))
    return edit


COMMANDS = [["info"], ["info", "--json"], ["analyze"], ["plot"], ["simulate", "--quiet", "--no-analysis", "--resume", "--out"]]
ISSUE_DAMAGES = {
    "garbled summary_json": _set_attr("summary_json", '{"clean_model": 3'),
    "summary_json not text": _set_attr("summary_json", 12345),
    "step counts edited in config_json": _edit_config(lambda c: c["train"].update(clean_steps=40, adv_steps=9)),
    "width edited in config_json": _edit_config(lambda c: c["net"].update(width=16)),
    "radii edited in config_json": _edit_config(lambda c: c["eval"].update(radii=[1.0, 2.0])),
    "big-endian array": _big_endian("clean_accuracy"),
    "summary values of the wrong type": lambda run: _edit_json(_root(run), lambda m: m["attributes"].__setitem__(
        "summary_json", json.dumps({k: "x" for k in json.loads(m["attributes"]["summary_json"])}))),
    "dimension names edited": lambda run: _edit_json(S.store_path(run) / "step" / "zarr.json",
                                                     lambda m: m.__setitem__("dimension_names", ["a"])),
}


def _as_format_2(run: Path) -> None:
    """The store as one written before run identities and digests (format 2): only the checks
    of the readers themselves stand between a damaged attribute and a traceback."""
    def change(meta: dict) -> None:
        for name in ("run_id", "integrity_json"):
            meta["attributes"].pop(name, None)
        meta["attributes"]["format_version"] = 2
    _edit_json(_root(run), change)


@pytest.mark.parametrize("legacy", [False, True], ids=["format-3", "format-2"])
@pytest.mark.parametrize("damage", ISSUE_DAMAGES)
def test_the_issues_store_damages_are_refused_by_every_reading_command(tiny_run, tmp_path: Path, damage, legacy):
    for i, command in enumerate(COMMANDS):
        run = _copy(tiny_run, tmp_path / str(i))
        if legacy:
            _as_format_2(run)
            if i == 0:
                code, _, err = run_main("info", run)
                assert code == 0, err  # undamaged, it reads (with a note on what it cannot check)
        ISSUE_DAMAGES[damage](run)
        code, _, err = run_main(*command, run)
        if legacy and damage == "summary values of the wrong type" and command not in (["info"], COMMANDS[-1]):
            # Only `info` and --resume print the stored summary; analyze logs its progress.
            assert code in (0, 2) and "Traceback" not in err, (command, err)
            continue
        assert code == 2, (command, err)
        assert_clean_exit(code, err)
        assert len([line for line in err.splitlines() if line.startswith("purify: error")]) == 1, err


ARRAY_FIELDS = {
    "shape": [1, 2, 3], "data_type": "garbage", "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [0, 0, 0]}},
    "chunk_key_encoding": {"name": "v2"}, "fill_value": "garbage", "codecs": [], "attributes": [],
    "dimension_names": ["a", "a", "a"],
}


def test_each_root_attribute_and_each_array_metadata_field_garbled_in_turn(tiny_run, tmp_path: Path):
    """Every reading command refuses, in one line, a store with any one attribute or any one
    metadata field of an array garbled."""
    attrs = json.loads(_root(tiny_run).read_text())["attributes"]
    cases: list[tuple[str, Callable[[Path], None]]] = []
    for name in attrs:
        cases += [(f"{name}=garbage", _set_attr(name, "garbage{")), (f"{name}=[]", _set_attr(name, []))]
    for field, value in ARRAY_FIELDS.items():
        cases.append((f"snapshots/W {field}", lambda run, f=field, v=value: _edit_json(
            S.store_path(run) / "snapshots" / "W" / "zarr.json", lambda m: m.__setitem__(f, v))))
    t0 = time.perf_counter()
    for i, (what, damage) in enumerate(cases):
        for j, command in enumerate(COMMANDS):
            run = _copy(tiny_run, tmp_path / f"{i}-{j}")
            damage(run)
            code, _, err = run_main(*command, run)
            assert code == 2, (what, command, err)
            assert_clean_exit(code, err)
            assert len(err.splitlines()) == 1, (what, command, err)
    assert time.perf_counter() - t0 < 120


# --------------------------------------------------------------------------------------
# 5. Interrupted while being created
# --------------------------------------------------------------------------------------

def _dead_lock(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    # A pid above the kernel's maximum (4194304) is never alive.
    (run / S.LOCK_NAME).write_text(json.dumps({"pid": 2**31 - 1, "hostname": os.uname().nodename}))


def test_a_folder_holding_only_a_lock_is_started_by_resume(tmp_path: Path):
    run = tmp_path / "run"
    _dead_lock(run)
    code, _, err = run_main("info", run)
    assert code == 2 and "holds no run yet" in err and "--resume" in err, err
    code, _, err = run_main("simulate", "--out", run, "--resume", "--quiet")
    assert code == 2 and "holds no run yet" in err and len(err.splitlines()) == 1, err
    code, _, err = run_main("simulate", *MICRO, "--seed", "0", "--out", run, "--resume")
    assert code == 0, err
    assert S.read_attrs(run)["status"] == "complete" and not (run / S.LOCK_NAME).exists()


def test_a_half_created_store_is_started_by_resume_with_its_recorded_config(tiny_run, tmp_path: Path):
    run = _copy(tiny_run, tmp_path)
    (run / S.CHECKPOINT_NAME).unlink()
    recorded = json.loads(S.read_attrs(run)["config_json"])
    _edit_json(_root(run), lambda m: m["attributes"].pop("format"))  # format is written last
    _dead_lock(run)
    code, _, err = run_main("simulate", "--out", run, "--resume", "--quiet", "--no-analysis")
    assert code == 0, err
    assert json.loads(S.read_attrs(run)["config_json"]) == recorded
    assert S.read_attrs(run)["status"] == "complete"


_IMPORTS_UNDER_THE_LOCK = """
import sys
from purify import cli
from purify import simulate as sim
from purify.store import lock

before = {}
enter = lock.RunLock.__enter__
create = sim.Simulation.create

def entered(self):
    held = enter(self)
    before.setdefault("modules", set(sys.modules))
    return held

def created(self):
    create(self)
    new = sorted({m.split(".")[0] for m in set(sys.modules) - before["modules"]})
    print(" ".join(new))
    raise SystemExit(0)

lock.RunLock.__enter__ = entered
sim.Simulation.create = created
cli.main(["simulate", "--d", "40", "--k", "4", "--m", "16", "--n-test", "50", "--n-eval", "20",
          "--out", sys.argv[1], "--quiet", "--no-analysis"])
"""


def test_creating_a_store_imports_no_compiled_package_under_the_lock(tmp_path: Path):
    """While the lock is held SIGTERM raises KeyboardInterrupt; landing inside the import of a
    compiled module (xarray lazily imports dask and SciPy on its first array; reading versions
    by import pulls in scikit-learn) it became ``ImportError: initialization failed`` or a SIGINT
    exit status, so those imports must happen before the lock is taken."""
    out = subprocess.run([sys.executable, "-c", _IMPORTS_UNDER_THE_LOCK, str(tmp_path / "run")],
                         env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    imported = set(out.stdout.split("\n")[-2].split())
    assert not imported & {"torch", "numpy", "scipy", "sklearn", "dask", "xarray", "zarr", "numcodecs",
                           "pandas", "matplotlib"}, imported


def test_sigterm_while_the_store_is_created_leaves_no_lock(tmp_path: Path):
    run = tmp_path / "run"
    # d = 1500: creating the store (dictionary QR, held-out set, the ideal model's evaluation)
    # takes seconds, long enough to be caught in it.
    child = subprocess.Popen([sys.executable, "-m", "purify.cli", "simulate", "--d", "1500", "--k", "20",
                              "--out", str(run), "--quiet", "--no-analysis"],
                             env=CHILD_ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / S.LOCK_NAME).exists():
        assert child.poll() is None and time.monotonic() < deadline, "the child never took its lock"
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err and not (run / S.LOCK_NAME).exists(), err
    if not S.creation_interrupted(run)[0]:  # it got past creation: then it stopped cleanly
        assert S.read_attrs(run)["status"] == "stopped"

"""Tests of the command line: bad input is one line + exit 2 and touches nothing; info output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purify import store as S

# The tiny run of the test suite (~1.5 s in-process on one thread).
TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--quiet", "--no-analysis",
]
# An even smaller run for tests that only need *a* run folder (~0.3 s).
MICRO = [
    "--d", "8", "--k", "1", "--m", "8", "--clean-steps", "4", "--adv-steps", "2", "--n-test", "20",
    "--n-eval", "10", "--batch-size", "16", "--pgd-steps", "1", "--clean-snapshots", "2",
    "--adv-snapshots", "1", "--log-points", "2", "--radii", "1", "--norms", "l2", "--attacks", "fgm",
    "--quiet", "--no-analysis",
]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}




def assert_one_line_error(err: str, *needles: str) -> str:
    assert err.endswith("\n"), repr(err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("purify: error: "), line
    assert "Traceback" not in err
    assert any(n in line for n in needles), (needles, line)
    return line


def tree(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file below ``path`` with its mtime, size and bytes."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st_ = p.stat()
            out[str(p.relative_to(path))] = (st_.st_mtime_ns, st_.st_size, p.read_bytes())
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "tiny"
    code, out, err = run_main("simulate", *TINY, "--seed", "0", "--out", run)
    assert code == 0, err
    return run


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder of config files (good and bad) and a folder that is not a run."""
    (tmp_path / "bad.toml").write_text("[data]\nd = [32\n")
    (tmp_path / "unknown.toml").write_text("[data]\nd = 32\nk = 3\nwidht = 5\n")
    (tmp_path / "unknown_top.toml").write_text("seed = 1\nbogus_table = 3\n")
    (tmp_path / "bad_value.toml").write_text("[net]\nwidth = 0\n")
    (tmp_path / "bool.toml").write_text("[data]\nk = true\n")
    (tmp_path / "device.toml").write_text("device = 1\n")
    (tmp_path / "not_a_table.toml").write_text("data = 5\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{\"data\": {\"d\": 32,}}")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00\x81garbage")
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "notes.txt").write_text("hello")
    (tmp_path / "fake_store" / "store.zarr").mkdir(parents=True)
    (tmp_path / "fake_store" / "store.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    return tmp_path


# --------------------------------------------------------------------------------------
# Bad input: exit 2, one line, no traceback, nothing on disk
# --------------------------------------------------------------------------------------

BAD_SIMULATE = [
    (["--k", "2000", "--d", "1000"], ["k=2000"]),
    (["--d", "1"], ["d=1"]),
    (["--tau", "0"], ["tau=0"]),
    (["--tau", "-1"], ["tau=-1"]),
    (["--dictionary", "foo"], ["'foo'"]),
    (["--attacks", "fgm,foo"], ["'foo'"]),
    (["--attacks", "fgm,fgm"], ["attacks=('fgm', 'fgm')"]),
    (["--norms", "l2,l3"], ["'l3'"]),
    (["--m", "0"], ["m=0"]),
    (["--d", "abc"], ["'abc'"]),
    (["--lr", "nan"], ["lr=nan"]),
    (["--lr", "inf"], ["lr=inf"]),
    (["--lr=-inf"], ["lr=-inf"]),
    (["--radii", "1,x"], ["'1,x'"]),
    (["--radii", "1,0"], ["radii=(1.0, 0.0)"]),
    (["--radii", "1,0.5,1"], ["radii=(1.0, 0.5, 1.0)"]),  # a repeat used to crash after the run
    (["--norms", "l2,l2"], ["norms=('l2', 'l2')"]),
    (["--p-one", "0.6", "--p-small", "0.6"], ["level probabilities=1.2"]),
    (["--p-one", "1.5"], ["p_one=1.5"]),
    (["--n-features", "40"], ["n_features=40"]),
    (["--seed", "-1"], ["seed=-1"]),
    (["--seed", str(2**63)], [f"seed={2**63}"]),
    (["--batch-size", "2.5"], ["'2.5'"]),
    (["--adv-init", "zero"], ["'zero'"]),
    (["--adv-bias", "learned"], ["'learned'"]),
    (["--bias-schedule", "cosine"], ["'cosine'"]),
    (["--device", "tpu"], ["'tpu'"]),
    (["--resume", "--overwrite"], ["--resume and --overwrite"]),
    (["--bogus", "3"], ["--bogus"]),
    (["--clean-steps"], ["--clean-steps"]),
]


@pytest.mark.parametrize(("extra", "needles"), BAD_SIMULATE, ids=[" ".join(e) for e, _ in BAD_SIMULATE])
def test_bad_simulate_options(tmp_path: Path, monkeypatch, extra, needles):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    code, stdout, err = run_main("simulate", *TINY, "--seed", "0", *extra, "--out", out)
    assert code == 2
    assert stdout == ""
    assert_one_line_error(err, *needles)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_without_cuda(tmp_path: Path, device):
    out = tmp_path / "run"
    code, _, err = run_main("simulate", *TINY, "--device", device, "--out", out)
    assert code == 2
    assert_one_line_error(err, f"--device={device}")
    assert "CUDA is not available" in err
    assert not out.exists()


def test_resume_without_out(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("simulate", "--resume", "--quiet")
    assert code == 2
    assert_one_line_error(err, "--resume needs --out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("config", "needles"), [
    ("missing.toml", ["missing.toml", "No such file"]),
    ("bad.toml", ["cannot parse --config"]),
    ("bad.json", ["cannot parse --config"]),
    ("binary.toml", ["binary.toml"]),
    ("list.json", ["list.json"]),
    ("unknown.toml", ["data.widht"]),
    ("unknown_top.toml", ["bogus_table"]),
    ("bad_value.toml", ["m=0"]),
    ("bool.toml", ["k=True"]),
    ("device.toml", ["device=1"]),
    ("not_a_table.toml", ["data"]),
])
def test_bad_config_files(files: Path, monkeypatch, config, needles):
    monkeypatch.chdir(files)
    before = sorted(p.name for p in files.iterdir())
    code, _, err = run_main("simulate", "--config", files / config, "--out", files / "run")
    assert code == 2
    line = assert_one_line_error(err, *needles)
    if config in ("missing.toml", "bad.toml", "binary.toml", "list.json"):
        assert config in line
    assert sorted(p.name for p in files.iterdir()) == before


def test_config_file_is_used_and_options_override_it(tmp_path: Path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("seed = 11\n[data]\nd = 8\nk = 1\nn_test = 20\n[net]\nwidth = 8\n"
                   "[train]\nclean_steps = 4\nadv_steps = 2\nbatch_size = 16\n"
                   "[eval]\nradii = [1.0]\nnorms = ['l2']\nattacks = ['fgm']\nn_eval = 10\npgd_steps = 1\n")
    out = tmp_path / "run"
    code, _, err = run_main("simulate", "--config", cfg, "--seed", "12", "--clean-steps", "3", "--quiet",
                            "--no-analysis", "--out", out)
    assert code == 0, err
    from purify.config import RunConfig

    stored = RunConfig.from_json(S.read_attrs(out)["config_json"])
    assert (stored.seed, stored.data.d, stored.net.width, stored.train.clean_steps) == (12, 8, 8, 3)
    assert stored.eval.radii == (1.0,)


@pytest.mark.parametrize("target", ["missing", "notrun", "fake_store", "bad.toml"])
def test_info_on_a_folder_without_a_run(files: Path, target):
    before = tree(files)
    code, stdout, err = run_main("info", files / target)
    assert code == 2
    assert stdout == ""
    assert_one_line_error(err, target)
    assert tree(files) == before


def test_bad_input_in_a_real_process_has_no_traceback(files: Path):
    """The console script and ``python -m purify.cli``: one line on the terminal, exit 2."""
    script = Path(sys.executable).with_name("purify")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "purify.cli"]
    cases = [
        ([*launcher, "simulate", "--d", "abc", "--out", "r1"], "'abc'"),
        ([sys.executable, "-m", "purify.cli", "info", "missing"], "missing"),
        ([sys.executable, "-m", "purify.cli", "simulate", "--tau", "0", "--config", "list.json", "--out", "r3"],
         "list.json"),
    ]
    procs = [subprocess.Popen(argv, cwd=files, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for argv, _ in cases]
    for proc, (_, needle) in zip(procs, cases, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert stdout == ""
        assert_one_line_error(stderr, needle)
    for name in ("r1", "r3"):
        assert not (files / name).exists()


# --------------------------------------------------------------------------------------
# Property: random malformed command lines
# --------------------------------------------------------------------------------------

# option → valid values (any mix of these alone would start a run)
VALID = {
    "--d": ["64", "100"], "--k": ["1", "3"],  # d >= the default k = 60 "--m": ["8", "64"], "--tau": ["0.5", "1e-3"],
    "--lr": ["0.1", "2"], "--dictionary": ["identity", "orthogonal", "overcomplete"],
    "--attacks": ["fgm", "fgm,pgd,dense,noise", "noise"], "--norms": ["l2", "linf", "l2,linf"],
    "--radii": ["1", "0.5,1,2"], "--p-one": ["0.01"], "--p-small": ["0.05"],
    "--clean-steps": ["0", "10"], "--batch-size": ["1", "16"], "--n-test": ["10", "50"],
    "--seed": ["0", "123"], "--activation": ["smooth", "noisy"], "--adv-norm": ["l2", "linf"],
    "--sigma-x": ["0", "0.5"], "--pgd-steps": ["1", "5"], "--adv-init": ["clean", "random"],
    "--adv-bias": ["radius", "clean"],
}
# option → (value, text the error line must then contain); each invalid whatever else is given
INVALID = {
    "--d": [("1", "d=1"), ("0", "d=0"), ("-3", "d=-3"), ("abc", "'abc'"), ("2.5", "'2.5'"), ("", "''")],
    "--k": [("0", "k=0"), ("2000", "k=2000"), ("x", "'x'"), ("-2", "k=-2")],
    "--m": [("0", "m=0"), ("-1", "m=-1"), ("1e3", "'1e3'")],
    "--tau": [("0", "tau=0.0"), ("-1", "tau=-1.0"), ("nan", "tau=nan"), ("inf", "tau=inf"), ("x", "'x'")],
    "--lr": [("nan", "lr=nan"), ("0", "lr=0.0"), ("-0.5", "lr=-0.5"), ("1,2", "'1,2'")],
    "--dictionary": [("foo", "'foo'"), ("Identity", "'Identity'"), ("", "''")],
    "--attacks": [("fgm,foo", "'foo'"), ("fgm,fgm", "attacks=('fgm', 'fgm')"), (",", "attacks=()")],
    "--norms": [("l3", "'l3'"), ("l2,l2,l1", "'l1'")],
    "--radii": [("1,x", "'1,x'"), ("0", "radii=(0.0,)"), ("nan", "radii=(nan,)"), ("1,-2", "radii=(1.0, -2.0)")],
    "--p-one": [("1.5", "p_one=1.5"), ("-0.1", "p_one=-0.1"), ("nan", "p_one=nan")],
    "--clean-steps": [("-1", "clean_steps=-1"), ("1.5", "'1.5'")],
    "--batch-size": [("0", "batch_size=0"), ("many", "'many'")],
    "--n-test": [("9", "n_test=9")],
    "--seed": [("-1", "seed=-1"), ("x", "'x'"), (str(2**63), f"seed={2**63}")],
    "--activation": [("relu", "'relu'")],
    "--adv-norm": [("l1", "'l1'")],
    "--sigma-x": [("-1", "sigma_x=-1.0"), ("inf", "sigma_x=inf")],
    "--pgd-steps": [("0", "pgd_steps=0")],
    "--adv-init": [("zero", "'zero'")],
    "--adv-bias": [("Radius", "'Radius'")],
    "--device": [("tpu", "'tpu'"), ("gpu", "'gpu'")],
    "--bogus-option": [("1", "--bogus-option")],
}
if not torch.cuda.is_available():
    INVALID["--device"].append(("cuda", "--device=cuda"))


@st.composite
def malformed_argv(draw) -> tuple[list[str], list[str]]:
    bad = draw(st.lists(st.sampled_from(sorted(INVALID)), min_size=1, max_size=3, unique=True))
    good = draw(st.lists(st.sampled_from(sorted(set(VALID) - set(bad))), max_size=6, unique=True))
    chunks, needles = [], []
    for name in bad:
        value, needle = draw(st.sampled_from(INVALID[name]))
        chunks.append([name, value])
        needles.append(needle)
    for name in good:
        chunks.append([name, draw(st.sampled_from(VALID[name]))])
    if draw(st.booleans()):
        chunks.append(["--quiet"])
    if draw(st.booleans()):
        chunks.append(["--overwrite"])
    if draw(st.booleans()):  # the resume/overwrite clash is caught before the options are
        chunks.append(["--resume", "--overwrite"])
        needles.append("--resume and --overwrite")
    chunks = draw(st.permutations(chunks))
    return [tok for chunk in chunks for tok in chunk], needles


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed_argv())
def test_random_malformed_command_lines(tmp_path: Path, case):
    argv, needles = case
    out = tmp_path / "run"
    code, stdout, err = run_main("simulate", *argv, "--out", out)
    assert code == 2, (argv, err)
    assert stdout == ""
    assert_one_line_error(err, *needles)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Existing runs: never replaced without --overwrite
# --------------------------------------------------------------------------------------


def test_existing_run_is_not_overwritten(tmp_path: Path):
    run = tmp_path / "run"
    code, _, err = run_main("simulate", *MICRO, "--seed", "0", "--out", run)
    assert code == 0, err
    before = tree(run)
    assert "store.zarr/zarr.json" in before and "checkpoint.pt" in before

    code, stdout, err = run_main("simulate", *MICRO, "--seed", "1", "--out", run)
    assert code == 2
    assert stdout == ""
    assert err.splitlines()[-1].startswith("purify: error: ")
    assert "--overwrite" in err.splitlines()[-1]
    assert "Traceback" not in err
    assert tree(run) == before  # same files, bytes and mtimes

    code, _, err = run_main("simulate", *MICRO, "--seed", "1", "--overwrite", "--out", run)
    assert code == 0, err
    assert S.read_attrs(run)["seed"] == 1
    assert S.read_attrs(run)["status"] == "complete"
    assert tree(run)["store.zarr/zarr.json"][2] != before["store.zarr/zarr.json"][2]


def test_overwrite_refuses_a_folder_that_holds_no_run(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("precious")
    before = tree(tmp_path)
    code, _, err = run_main("simulate", *MICRO, "--seed", "0", "--overwrite", "--out", tmp_path)
    assert code == 2
    assert "holds no purify run" in err.splitlines()[-1]
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------


def test_simulate_prints_the_summary(tmp_path: Path):
    code, stdout, err = run_main("simulate", *MICRO, "--seed", "3", "--out", tmp_path / "r")
    assert code == 0, err
    assert "clean model" in stdout and "robust model" in stdout and "ideal model" in stdout
    assert f"store: {tmp_path / 'r' / 'store.zarr'}" in stdout
    assert "seed=3" in err and "Traceback" not in err
    # the derived values are shown, the z levels among them (d = 8, k = 1: 2/D and k/D)
    assert "D=8 dictionary=orthogonal p_one=0.25 p_small=0.125 sigma_x=0.1" in err


def test_linf_only_run_prints_and_reports(tmp_path: Path):
    """No l2 norm evaluated: the summary table shows the linf robust accuracy."""
    options = [opt if opt != "l2" else "linf" for opt in MICRO]
    code, stdout, err = run_main("simulate", *options, "--seed", "0", "--out", tmp_path / "r")
    assert code == 0, err
    assert "robust acc (linf, tau=" in stdout
    code, stdout, err = run_main("info", tmp_path / "r")
    assert code == 0, err
    assert "robust acc (linf, tau=" in stdout
    summary = json.loads(run_main("info", tmp_path / "r", "--json")[1])
    assert summary["tau"] is None and summary["tau_linf"] > 0
    assert 0 <= summary["robust_model"]["robust_accuracy_linf"] <= 1


def test_info_prints_config_and_summary(tiny_run: Path):
    code, stdout, err = run_main("info", tiny_run)
    assert code == 0, err
    assert err == ""
    assert "status: complete" in stdout
    for section in ("[data]", "[net]", "[train]", "[eval]"):
        assert section in stdout
    assert "d=32" in stdout and "k=3" in stdout and "width=64" in stdout and "seed: 0" in stdout
    for row in ("clean model", "robust model", "ideal model", "clean acc", "robust acc", "median theta"):
        assert row in stdout
    # the store path works as well as the folder
    assert run_main("info", tiny_run / "store.zarr")[1] == stdout


def _accuracies(block: dict) -> list[float]:
    values = [block["clean_accuracy"], block["robust_accuracy"], block["robust_accuracy_linf"]]
    return values + list(block["robust_accuracy_by_attack"].values())


def test_info_json(tiny_run: Path):
    code, stdout, err = run_main("info", tiny_run, "--json")
    assert code == 0, err

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads(stdout, parse_constant=no_nan)
    for key in ("tau", "norm", "clean_model", "robust_model", "ideal_model", "relative_weight_change",
                "median_theta_clean_robust"):
        assert key in summary
    assert summary["norm"] == "l2"
    assert summary["tau"] == pytest.approx(0.5 / math.sqrt(3))  # the purification preset
    for model in ("clean_model", "robust_model", "ideal_model"):
        block = summary[model]
        assert set(block["robust_accuracy_by_attack"]) == {"fgm", "pgd", "dense", "noise"}
        for acc in _accuracies(block):
            assert 0.0 <= acc <= 1.0
        assert block["robust_accuracy"] <= min(block["robust_accuracy_by_attack"].values())
    assert summary["relative_weight_change"] >= 0
    assert 0 <= summary["median_theta_clean_robust"] <= 1

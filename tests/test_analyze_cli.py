"""`purify analyze` and `purify plot` through the CLI: idempotent, forced, refused inputs."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import xarray as xr

from purify import store as S
from purify.analysis import ANALYSES, done
from purify.cli import main

SMALL = [
    "--d", "40", "--k", "4", "--m", "80", "--clean-steps", "200", "--adv-steps", "60", "--n-test", "300",
    "--n-eval", "100", "--batch-size", "256", "--pgd-steps", "3", "--clean-snapshots", "5",
    "--adv-snapshots", "2", "--log-points", "10", "--seed", "0", "--quiet",
]


def run_main(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("analyze") / "run"
    code, stdout, err = run_main("simulate", *SMALL, "--out", run)  # analyses and figures by default
    assert code == 0, err
    assert "analyses:" in stdout and "figures:" in stdout
    return run


def test_simulate_stores_every_analysis_and_draws_figures(analysed):
    assert sorted(done(analysed)) == sorted(ANALYSES)
    for name in ANALYSES:
        ds = S.load_run(analysed, f"analysis/{name}")
        assert ds.data_vars, name
    pngs = sorted((analysed / "figures").glob("*.png"))
    assert len(pngs) >= 5 and all(p.stat().st_size > 5000 for p in pngs)


def test_analyze_is_idempotent_and_force_recomputes(analysed):
    before = {n: S.load_run(analysed, f"analysis/{n}") for n in ANALYSES}
    mtimes = {p: p.stat().st_mtime_ns for p in (S.store_path(analysed) / "analysis").rglob("*") if p.is_file()}
    code, stdout, _ = run_main("analyze", analysed)
    assert code == 0 and "nothing to do" in stdout
    after_mtimes = {p: p.stat().st_mtime_ns for p in (S.store_path(analysed) / "analysis").rglob("*") if p.is_file()}
    assert after_mtimes == mtimes  # nothing rewritten
    code, stdout, _ = run_main("analyze", analysed, "--force", "--only", "lottery,mixture")
    assert code == 0 and "lottery" in stdout and "mixture" in stdout and "purification" not in stdout
    for name in ("lottery", "mixture"):  # deterministic analyses give the same numbers again
        xr.testing.assert_identical(before[name], S.load_run(analysed, f"analysis/{name}"))


def test_analyze_recomputes_only_what_is_missing(analysed):
    S.update_attrs(analysed, analyses_done=",".join(n for n in ANALYSES if n != "mixture"))
    code, stdout, _ = run_main("analyze", analysed)
    assert code == 0 and stdout.startswith("computed: mixture")
    assert sorted(done(analysed)) == sorted(ANALYSES)


@pytest.mark.parametrize("argv, words", [
    (["analyze", "{missing}"], ["no run"]),
    (["analyze", "{run}", "--only", "lottery,nope"], ["--only", "nope"]),
    (["plot", "{missing}"], ["no run"]),
])
def test_analyze_and_plot_reject_bad_input(analysed, tmp_path, capsys, argv, words):
    argv = [a.format(run=analysed, missing=tmp_path / "nothing") for a in argv]
    code, stdout, err = run_main(*argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purify: error:")
    assert all(w in lines[0] for w in words)


def test_plot_writes_png_and_pdf(analysed):
    code, stdout, err = run_main("plot", analysed, "--pdf")
    assert code == 0, err
    paths = [Path(line) for line in stdout.split()]
    assert any(p.suffix == ".pdf" for p in paths) and any(p.suffix == ".png" for p in paths)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_transfer_between_independent_runs_of_one_problem(analysed, tmp_path):
    # Same --problem-seed: same dictionary, teacher and held-out set; other init and noise.
    other = tmp_path / "other"
    code, _, err = run_main("simulate", *SMALL[:-3], "--seed", "5", "--problem-seed", "0", "--quiet",
                            "--no-analysis", "--out", other)
    assert code == 0, err
    a, b = S.load_run(analysed, "problem"), S.load_run(other, "problem")
    xr.testing.assert_identical(a, b)
    assert not (S.load_run(analysed, "snapshots").W.values == S.load_run(other, "snapshots").W.values).all()
    code, stdout, err = run_main("analyze", analysed, "--only", "transfer", "--force", "--transfer-from", other)
    assert code == 0, err
    acc = S.load_run(analysed, "analysis/transfer").accuracy
    assert acc.sizes["source"] == acc.sizes["target_model"] == 4
    assert ((acc >= 0) & (acc <= 1)).all()


def test_transfer_from_another_problem_is_refused(analysed, tmp_path):
    other = tmp_path / "foreign"
    code, _, err = run_main("simulate", *SMALL[:-3], "--seed", "6", "--quiet", "--no-analysis", "--out", other)
    assert code == 0, err
    code, _, err = run_main("analyze", analysed, "--only", "transfer", "--force", "--transfer-from", other)
    assert code == 2 and len(err.strip().splitlines()) == 1

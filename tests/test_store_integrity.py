"""A store that lies is refused: damage that leaves every file well-formed (edited attributes and
summaries, chunks moved from another step or run, edited array metadata, foreign checkpoints) is
caught by the run identity and keyed digests of `purify.store`; failures that used to slip through
(a checkpoint write failing, finite divergence, concurrent overwrites, damaged sweep folders) end
in one line.

Every damage is done to a real tiny run, the way a person or a copying mistake would do it, and
every command that reads a store must refuse it with exit 2 and one line, writing nothing.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fixtures import READERS, RESUME, run_main

from purify import store as S
from purify.config import RunConfig
from purify.sweep import build_spec
from purify.sweep.combine import cell_dir
from purify.train import LOSS_LIMIT, OUTPUT_LIMIT, DivergenceBound, DivergenceError

# A run that takes a fraction of a second (the reliability tests' MICRO run).
MICRO = [
    "--d", "8", "--k", "1", "--m", "8", "--clean-steps", "4", "--adv-steps", "2", "--n-test", "20",
    "--n-eval", "10", "--batch-size", "16", "--pgd-steps", "1", "--clean-snapshots", "2",
    "--adv-snapshots", "1", "--log-points", "2", "--radii", "1", "--norms", "l2", "--attacks", "fgm",
    "--quiet", "--no-analysis",
]
# Big enough for adversarial training to matter (about 1.5 s of training).
TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--seed", "0",
    "--quiet", "--no-analysis",
]




def one_line_error(err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("purify: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    """Two complete MICRO runs of the same config, seeds 0 and 1."""
    base = tmp_path_factory.mktemp("integrity")
    out = {}
    for seed in (0, 1):
        out[seed] = base / f"seed{seed}"
        code, _, err = run_main("simulate", *MICRO, "--seed", seed, "--out", out[seed])
        assert code == 0, err
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _root(run: Path) -> Path:
    return S.store_path(run) / "zarr.json"


def _edit_attrs(change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """Edit the root attributes behind the store's back, keeping the file well-formed JSON."""
    def damage(run: Path, other: Path) -> None:
        meta = json.loads(_root(run).read_text())
        change(meta["attributes"])
        _root(run).write_text(json.dumps(meta))
    return damage


def _edit_config(change: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(attrs: dict) -> None:
        config = json.loads(attrs["config_json"])
        change(config)
        attrs["config_json"] = json.dumps(config)
    return edit


def _edit_summary(attrs: dict) -> None:
    summary = json.loads(attrs["summary_json"])
    summary["robust_model"]["robust_accuracy"] = 0.999
    attrs["summary_json"] = json.dumps(summary)


def _edit_array_meta(label: str, change: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def damage(run: Path, other: Path) -> None:
        path = S.store_path(run) / label / "zarr.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return damage


def _big_endian(meta: dict) -> None:
    for codec in meta["codecs"]:
        if codec["name"] == "bytes":
            codec["configuration"] = {"endian": "big"}


def _copy_file(src: str, dst: str, *, from_other: bool = False) -> Callable[[Path, Path], None]:
    def damage(run: Path, other: Path) -> None:
        origin = S.store_path(other if from_other else run) / src
        shutil.copyfile(origin, S.store_path(run) / dst)
    return damage


def _move_chunk_with_its_digest(run: Path, other: Path) -> None:
    """Copy step 0's W chunk over step 1's, and its recorded digest too: the digest covers the
    chunk's place, so it still does not match."""
    _copy_file("snapshots/W/c/0/0/0", "snapshots/W/c/1/0/0")(run, other)
    meta = json.loads(_root(run).read_text())
    record = json.loads(meta["attributes"][S.INTEGRITY_ATTR])
    record["files"]["snapshots/W/c/1/0/0"] = record["files"]["snapshots/W/c/0/0/0"]
    meta["attributes"][S.INTEGRITY_ATTR] = json.dumps(record)
    _root(run).write_text(json.dumps(meta))


def _root_of_other_run(run: Path, other: Path) -> None:
    shutil.copyfile(_root(other), _root(run))


# damage → (what it does to RUN given another run of the same config, words of the error line)
DAMAGES: dict[str, tuple[Callable[[Path, Path], None], list[str]]] = {
    "summary number edited": (_edit_attrs(_edit_summary), ["'summary_json' does not match"]),
    "seed attribute edited": (_edit_attrs(lambda a: a.update(seed=7)), ["'seed' does not match"]),
    "config seed edited": (_edit_attrs(_edit_config(lambda c: c.update(seed=7))), ["'config_json'"]),
    "config clean_steps edited": (_edit_attrs(_edit_config(lambda c: c["train"].update(clean_steps=48))),
                                  ["'config_json'"]),
    "config d edited": (_edit_attrs(_edit_config(lambda c: c["data"].update(d=9))), ["'config_json'"]),
    "config removed": (_edit_attrs(lambda a: a.pop("config_json")), ["'config_json' was removed"]),
    "completed_step -5": (_edit_attrs(lambda a: a.update(completed_step=-5)), ["'completed_step'"]),
    "completed_step text": (_edit_attrs(lambda a: a.update(completed_step="abc")), ["'completed_step'"]),
    "status edited": (_edit_attrs(lambda a: a.update(status="complete", status_reason="x")),
                      ["'status_reason'"]),
    "attribute added": (_edit_attrs(lambda a: a.update(note="fine")), ["'note' was added"]),
    "run identity edited": (_edit_attrs(lambda a: a.update(run_id="0" * 32)), ["does not match"]),
    "digest record removed": (_edit_attrs(lambda a: a.pop(S.INTEGRITY_ATTR)), ["integrity_json"]),
    "format downgraded": (_edit_attrs(lambda a: a.update(format_version=2)), ["predates the run identity"]),
    "root attributes of another run": (_root_of_other_run, ["does not match"]),
    "W chunk from another step": (_copy_file("snapshots/W/c/0/0/0", "snapshots/W/c/1/0/0"),
                                  ["chunk c/1/0/0 of array 'snapshots/W' does not match"]),
    "W chunk and digest from another step": (_move_chunk_with_its_digest,
                                             ["chunk c/1/0/0 of array 'snapshots/W' does not match"]),
    "W chunk from another run": (_copy_file("snapshots/W/c/1/0/0", "snapshots/W/c/1/0/0", from_other=True),
                                 ["chunk c/1/0/0 of array 'snapshots/W' does not match"]),
    "loss chunk from another run": (_copy_file("loss/c/0", "loss/c/0", from_other=True),
                                    ["chunk c/0 of array 'loss' does not match"]),
    "W shape edited": (_edit_array_meta("snapshots/W", lambda m: m.update(shape=[2, 8, 8])),
                       ["metadata of array 'snapshots/W'"]),
    "W byte order edited": (_edit_array_meta("snapshots/W", _big_endian), ["metadata of array 'snapshots/W'"]),
    "M fill value edited": (_edit_array_meta("problem/M", lambda m: m.update(fill_value=0.0)),
                            ["metadata of array 'problem/M'"]),
    "group attributes edited": (_edit_array_meta("snapshots", lambda m: m.update(attributes={"x": 1})),
                                ["metadata of group 'snapshots'"]),
}
EVERY_READER = ("summary number edited", "config clean_steps edited", "config removed", "W chunk from another step",
                "W byte order edited", "format downgraded")


@pytest.mark.parametrize(("damage", "reader"), [(d, r) for d in DAMAGES for r in READERS
                                                if d in EVERY_READER or r == "info"])
def test_well_formed_damage_is_refused_with_one_line(runs, tmp_path, damage, reader):
    run = _copy(runs[0], tmp_path)
    S.verify_run(run)  # the intact copy passes
    make, needles = DAMAGES[damage]
    make(run, runs[1])
    before = tree(run)
    code, stdout, err = run_main(*[a.format(run=run) for a in READERS[reader]])
    assert code == 2, err
    assert stdout == ""
    line = one_line_error(err, *needles)
    assert str(run) in line
    assert tree(run) == before  # nothing written, no lock left behind


@pytest.fixture(scope="module")
def analysed(runs, tmp_path_factory) -> Path:
    """The seed-0 run with every analysis (written by `write_group`, digests and all)."""
    run = tmp_path_factory.mktemp("analysed") / "run"
    shutil.copytree(runs[0], run)
    code, _, err = run_main("analyze", run)
    assert code == 0, err
    return run


def _first_chunk(array: Path) -> str:
    return next(p for p in sorted((array / "c").rglob("*")) if p.is_file()).relative_to(array).as_posix()


def _analysis_arrays(run: Path) -> list[Path]:
    return sorted(p.parent for p in (S.store_path(run) / "analysis").glob("*/*/zarr.json")
                  if json.loads(p.read_text())["node_type"] == "array" and (p.parent / "c").is_dir())


def _swap_analysis_chunks(run: Path) -> None:
    """Copy the first chunk of one analysis array over another's of the same size."""
    arrays = _analysis_arrays(run)
    by_size: dict[int, list[Path]] = {}
    for a in arrays:
        by_size.setdefault((a / _first_chunk(a)).stat().st_size, []).append(a)
    # Two chunks of equal size but different bytes: copying identical bytes would damage nothing.
    a, b = next((x, y) for group in by_size.values() for i, x in enumerate(group) for y in group[i + 1:]
                if (x / _first_chunk(x)).read_bytes() != (y / _first_chunk(y)).read_bytes())
    shutil.copyfile(a / _first_chunk(a), b / _first_chunk(b))


@pytest.mark.parametrize("damage", ["chunk of another analysis array", "analysis metadata edited",
                                    "analysis done list edited"])
def test_damaged_analyses_are_refused(analysed, tmp_path, damage):
    run = _copy(analysed, tmp_path)
    S.verify_run(run)
    if damage == "chunk of another analysis array":
        _swap_analysis_chunks(run)
    elif damage == "analysis metadata edited":
        meta_path = _analysis_arrays(run)[0] / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["attributes"] = {**meta.get("attributes", {}), "long_name": "edited"}
        meta_path.write_text(json.dumps(meta))
    else:
        _edit_attrs(lambda a: a.update(analyses_done="lottery"))(run, run)
    for argv in (["info", run], ["analyze", run], ["plot", run]):
        code, stdout, err = run_main(*argv)
        assert code == 2, err
        one_line_error(err, "is inconsistent", str(run))


def test_a_running_store_is_resumed_after_its_attributes_change_through_the_store(runs, tmp_path):
    """Changes made by purify itself (status, completed step) keep the store consistent, and a
    resumed run finishes with its arrays bit for bit."""
    run = _copy(runs[0], tmp_path)
    S.update_attrs(run, status="stopped", status_reason="interrupted")
    code, stdout, err = run_main("info", run)
    assert code == 0 and err == "", err
    code, _, err = run_main("simulate", "--out", run, *RESUME)
    assert code == 0, err
    assert S.verify_run(run)["status"] == "complete"
    assert tree(S.store_path(run) / "snapshots") == tree(S.store_path(runs[0]) / "snapshots")


def test_stores_without_identity_still_open_with_a_note(runs, tmp_path):
    """A store written before run identities (format 2) is read, and the reader says what it
    could not check."""
    run = _copy(runs[0], tmp_path)
    _edit_attrs(lambda a: (a.pop(S.RUN_ID_ATTR), a.pop(S.INTEGRITY_ATTR), a.update(format_version=2)))(run, run)
    code, stdout, err = run_main("info", run)
    assert code == 0, err
    assert "status: complete" in stdout
    assert err.startswith("purify: note: this store was written before run identities (format version 2)")
    assert len(err.splitlines()) == 1
    # ... and damage it cannot see is still not silently "verified": its checks are the old ones
    _edit_attrs(_edit_summary)(run, run)
    assert run_main("info", run)[0] == 0


# --------------------------------------------------------------------------------------
# Checkpoints belong to their run
# --------------------------------------------------------------------------------------


def _stopped(run: Path) -> None:
    S.update_attrs(run, status="stopped", status_reason="interrupted")


def _resave(ckpt: Path, change: Callable[[dict], None]) -> None:
    state = torch.load(ckpt, weights_only=False)
    change(state)
    torch.save(state, ckpt)


CHECKPOINT_DAMAGES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "another seed's checkpoint": (
        lambda run, other: shutil.copyfile(other / S.CHECKPOINT_NAME, run / S.CHECKPOINT_NAME),
        "belongs to another run"),
    "no identity": (lambda run, other: _resave(run / S.CHECKPOINT_NAME, lambda s: s.pop("identity")),
                    "carries no run identity"),
    "config digest edited": (
        lambda run, other: _resave(run / S.CHECKPOINT_NAME, lambda s: s["identity"].update(config_digest="0")),
        "another config"),
    "seed edited": (lambda run, other: _resave(run / S.CHECKPOINT_NAME, lambda s: s.update(seed=5)),
                    "has seed 5"),
    "step before the completed step": (
        lambda run, other: _resave(run / S.CHECKPOINT_NAME, lambda s: s.update(step=1)), "is at step 1"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGES)
def test_resume_refuses_a_checkpoint_of_another_run(runs, tmp_path, damage):
    run = _copy(runs[0], tmp_path)
    _stopped(run)
    make, needle = CHECKPOINT_DAMAGES[damage]
    make(run, runs[1])
    before = tree(S.store_path(run))
    code, stdout, err = run_main("simulate", "--out", run, *RESUME)
    assert code == 2, err
    assert stdout == ""
    one_line_error(err, f"checkpoint {run / S.CHECKPOINT_NAME}", needle)
    assert tree(S.store_path(run)) == before


def test_checkpoint_write_failure_is_one_line_and_marks_the_store_failed(tmp_path, monkeypatch):
    """As a chunk write failing: e.g. the file-size limit (``prlimit --fsize``) hit by the
    checkpoint, which torch's own writer reported as a 32-line RuntimeError."""
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # as the checkpoint writer looks it up
    run = tmp_path / "run"
    code, stdout, err = run_main("simulate", *MICRO, "--seed", "0", "--out", run)
    monkeypatch.undo()
    assert code == 1, err
    assert stdout == ""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("purify: error")]
    assert errors == err.splitlines()[-1:], err
    assert "File too large" in errors[0] and "the store is marked failed" in errors[0]
    attrs = S.read_attrs(run)
    assert attrs["status"] == "failed" and "File too large" in attrs["status_reason"]
    assert S.load_checkpoint(run)["step"] == attrs["completed_step"]  # the previous one, intact
    assert not [p for p in run.iterdir() if p.name.startswith(S.CHECKPOINT_NAME + ".tmp")]
    code, _, err = run_main("simulate", "--out", run, *RESUME)
    assert code == 0, err


def test_torch_writer_errors_become_os_errors(tmp_path):
    """The checkpoint is serialized in memory and written by Python: a failing write is an
    OSError whatever torch's own writer would have raised."""
    S.save_checkpoint(tmp_path, {"step": 0})
    with open(tmp_path / S.CHECKPOINT_NAME, "rb") as f:
        assert torch.load(f, weights_only=False) == {"step": 0}  # no store: no identity stamped


# --------------------------------------------------------------------------------------
# Divergence by meaning
# --------------------------------------------------------------------------------------


def _config(*argv: str) -> RunConfig:
    from purify.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["simulate", *argv])).resolve()


def test_divergence_bound_closed_form():
    config = _config(*TINY[:-2])
    bound = DivergenceBound.from_config(config, input_norm=2.0)
    assert bound.weight_limit == OUTPUT_LIMIT / 2.0  # above 100 σ₀(√d + 3) = 100 (√32 + 3)/32
    assert bound.loss_limit == pytest.approx(math.log(2) + 100)
    W = torch.zeros(4, 32)
    bound.check(W, math.log(2), clean=True, config=config)  # healthy: nothing raised
    W[2, 0] = OUTPUT_LIMIT / 2.0 * 1.01
    with pytest.raises(DivergenceError, match=r"norm 5.05e\+03.*learning rate lr=1 "):
        bound.check(W, 0.1, clean=True, config=config)
    with pytest.raises(DivergenceError, match=r"loss reached 200.*adv_lr=0.5 "):
        bound.check(torch.zeros(4, 32), 200.0, clean=False, config=config)
    with pytest.raises(DivergenceError, match="loss reached nan"):
        bound.check(torch.zeros(4, 32), float("nan"), clean=True, config=config)
    wide = DivergenceBound.from_config(_config(*TINY[:-2], "--sigma0", "1e3"), input_norm=2.0)
    assert wide.weight_limit == pytest.approx(100 * 1e3 * (math.sqrt(32) + 3))  # a chosen large init
    assert "training radius adv_tau=1e+10" in bound.cause(False, _config(*TINY[:-2], "--adv-tau", "1e10"))
    assert "lam=0.5 times lr=4" in bound.cause(True, _config(*TINY[:-2], "--lam", "0.5", "--lr", "4"))
    assert LOSS_LIMIT > 100


@pytest.mark.parametrize(("option", "value", "blamed"), [
    ("--adv-lr", "1e15", "adversarial learning rate adv_lr=1e+15"),
    ("--tau", "1e10", "training radius adv_tau=1e+10"),
    ("--lr", "1e15", "learning rate lr=1e+15"),
])
def test_finite_divergence_fails_naming_the_cause(tmp_path, option, value, blamed):
    run = tmp_path / "run"
    code, stdout, err = run_main("simulate", *TINY, option, value, "--out", run)
    assert code == 1, err
    assert stdout == "" and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("purify: error")]
    assert errors == err.splitlines()[-1:], err
    assert "diverged" in errors[0] and blamed in errors[0] and "marked failed" in errors[0]
    attrs = S.read_attrs(run)
    assert attrs["status"] == "failed" and blamed in attrs["status_reason"]


def test_healthy_run_stays_far_from_the_bounds(tmp_path):
    run = tmp_path / "run"
    code, _, err = run_main("simulate", *TINY, "--out", run)
    assert code == 0, err
    root, snaps = S.load_run(run), S.load_run(run, "snapshots")
    longest = float(snaps.W.pipe(lambda w: (w**2).sum("input") ** 0.5).max())
    assert longest < OUTPUT_LIMIT / 100 / 3  # a hundred-fold margin (inputs have norm < 3)
    assert float(root.loss.max()) < 3 < LOSS_LIMIT


def test_a_non_finite_summary_fails_the_run():
    from purify.simulate import _check_finite

    class Sim:
        class timeline:
            adv_steps = 5
        config = _config(*TINY[:-2])
        bound = DivergenceBound(2.0, 1e3)

    _check_finite({"a": 1.0, "b": {"c": 0.5}, "d": None}, Sim)
    with pytest.raises(DivergenceError, match=r"summary's b.relative_weight_change is inf; the adversarial"):
        _check_finite({"a": 1.0, "b": {"relative_weight_change": float("inf")}}, Sim)


# --------------------------------------------------------------------------------------
# --overwrite takes the lock first
# --------------------------------------------------------------------------------------


def test_overwrite_removes_the_old_run_only_under_its_lock(runs, tmp_path, monkeypatch):
    run = _copy(runs[0], tmp_path)
    seen = []
    real = S.rundir._remove_run_files

    def remove(folder: Path, *args: object) -> None:
        lock = json.loads((folder / S.LOCK_NAME).read_text())
        seen.append(lock["pid"] == os.getpid())
        real(folder, *args)

    monkeypatch.setattr(S.rundir, "_remove_run_files", remove)
    code, _, err = run_main("simulate", *MICRO, "--seed", "0", "--out", run, "--overwrite")
    assert code == 0, err
    assert seen == [True]
    assert not (run / S.LOCK_NAME).exists()


def test_overwrite_of_a_run_in_use_is_refused_and_removes_nothing(runs, tmp_path):
    import subprocess

    run = _copy(runs[0], tmp_path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (run / S.LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "hostname": __import__("socket").gethostname()}))
        before = tree(S.store_path(run))
        code, _, err = run_main("simulate", *MICRO, "--seed", "0", "--out", run, "--overwrite")
        assert code == 2
        one_line_error(err, "in use by process")
        assert tree(S.store_path(run)) == before
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------
# Sweeps: device, spec and cell folders checked before any work
# --------------------------------------------------------------------------------------

SWEEP = """
[base]
data = {d = 8, k = 1, n_test = 20}
net = {width = 8}
train = {clean_steps = 4, adv_steps = 2, batch_size = 16, clean_snapshots = 2, adv_snapshots = 1, log_points = 2}
eval = {n_eval = 10, pgd_steps = 1, radii = [1.0], norms = ["l2"], attacks = ["fgm"]}

[axes]
seed = [0, 1]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path]:
    """A sweep file and a sweep folder whose first cell is complete (run here, not on Dask)."""
    from purify.simulate import simulate

    base = tmp_path_factory.mktemp("sweep")
    spec_file = base / "spec.toml"
    spec_file.write_text(SWEEP)
    out = base / "out"
    (out / "cells").mkdir(parents=True)
    cell = build_spec(spec_file).cells()[0]
    simulate(cell.config, cell_dir(out, cell), progress=False)
    return spec_file, out


def _cell(out: Path) -> Path:
    return next(p for p in sorted((out / "cells").iterdir()) if p.is_dir())


SWEEP_DAMAGES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "spec.json garbage": (lambda out: (out / "spec.json").write_bytes(b"\x00{garbage"), ["spec.json"]),
    "spec.json a folder": (lambda out: (out / "spec.json").mkdir(), ["spec.json"]),
    "cells a file": (lambda out: (shutil.rmtree(out / "cells"), (out / "cells").write_text("x")),
                     ["cells is not a folder"]),
    "cell config garbled": (lambda out: _edit_attrs(lambda a: a.update(config_json="{garbled"))(_cell(out), out),
                            ["cell seed0", "'config_json'"]),
    "cell config removed": (lambda out: _edit_attrs(lambda a: a.pop("config_json"))(_cell(out), out),
                            ["'config_json' was removed"]),
    "complete cell with a flipped chunk": (
        lambda out: _flip(S.store_path(_cell(out)) / "snapshots" / "W" / "c" / "1" / "0" / "0"),
        ["is corrupted"]),
    "complete cell with a chunk of another step": (
        lambda out: _copy_file("snapshots/W/c/0/0/0", "snapshots/W/c/1/0/0")(_cell(out), out),
        ["does not match its digest"]),
    "cell a file": (lambda out: (shutil.rmtree(_cell(out)), (out / "cells" / "seed0").write_text("x")),
                    ["is not a folder"]),
}


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", SWEEP_DAMAGES)
def test_damaged_sweep_folders_are_refused_before_any_work(sweep, tmp_path, damage):
    spec_file, original = sweep
    out = tmp_path / "out"
    shutil.copytree(original, out)
    make, needles = SWEEP_DAMAGES[damage]
    make(out)
    before = tree(out)
    # With the sweep file (spec.json damage shows when the stored spec is read: without it)
    argv = ["sweep", "--out", out, "--quiet"] if "spec.json" in damage else ["sweep", spec_file, "--out", out,
                                                                            "--quiet"]
    code, stdout, err = run_main(*argv)
    assert code == 2, err
    assert stdout == ""
    one_line_error(err, *needles)
    assert tree(out) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_sweep_on_cuda_without_cuda_is_refused_up_front(sweep, tmp_path):
    spec_file, _ = sweep
    code, stdout, err = run_main("sweep", spec_file, "--device", "cuda", "--out", tmp_path / "out", "--quiet")
    assert code == 2, err
    one_line_error(err, "CUDA is not available")
    assert not (tmp_path / "out").exists()

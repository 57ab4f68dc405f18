"""Runs that survive faults: SIGKILL anywhere then a bitwise-identical resume, integrity
checks on open for every command that reads a store, disk and permission faults, and analyses
that are written whole or not at all.

Kills are real SIGKILLs of processes running ``purify.cli.main``. To keep 20 of them cheap, the
processes are forked from one "zygote" that imported torch, xarray, zarr and purify once
(``ZYGOTE``); each child then runs the command exactly as the console script would. Two kinds of
kill points are used together:

* random wall-clock delays after a seeded progress mark (a training step reached, an analysis
  started): the kill lands wherever the process happens to be, mostly mid-step or mid-analysis;
* the ``PURIFY_FAULT_KILL_AT=N`` hook of `purify.store.fault_point`: the child kills itself at its
  N-th fault point, i.e. just before a given store file, checkpoint or staged analysis group is
  renamed into place, the worst moments for the store. The test derives N from the trace of an
  uninterrupted run, and the child names the point it died at, which the test checks.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from fixtures import READERS, RESUME, run_main

from purify import store as S
from purify.analysis import ANALYSES, done, open_analysis
from purify.config import RunConfig
from purify.store import faults
from purify.train import Timeline

# The tiny run of the test suite (about 1.5 s of training and 1.5 s of analyses on one thread).
TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--seed", "0",
]
TRAIN = [*TINY, "--quiet", "--no-analysis"]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
RUN_GROUPS = ("", "snapshots", "problem")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------




def one_line_error(err: str, *needles: str) -> str:
    """The single ``purify: error:`` line of `err`, which must contain every needle."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("purify: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def last_error_line(err: str, *needles: str) -> str:
    """Like `one_line_error`, after the lines a run prints once its folder is accepted."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("purify: error")]
    assert errors == err.splitlines()[-1:], err
    return one_line_error(errors[0] + "\n", *needles)


def tree(path: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file below `path` with its bytes (names in `skip` left out)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in skip}


def volatile(name: str) -> bool:
    """Root attributes that measure wall time, or record the sessions that wrote the run (their
    command lines and times): legitimately different between sessions."""
    return (name in ("elapsed_seconds", "final_evaluation_seconds", "provenance_json")
            or name.startswith("analysis_seconds_"))


def comparable(ds: xr.Dataset, *runs: Path) -> xr.Dataset:
    """`ds` with wall-time attributes dropped and run folder names in attributes (the transfer
    analysis records the runs it used) replaced by a placeholder."""
    ds = ds.copy()
    attrs = {k: v for k, v in ds.attrs.items() if not volatile(k)}
    for run in runs:
        attrs = {k: v.replace(str(S.run_dir(run)), "<run>") if isinstance(v, str) else v
                 for k, v in attrs.items()}
    ds.attrs = attrs
    return ds


def stored_groups(run: Path) -> list[str]:
    """Groups on disk that the store's manifest lists (complete ones)."""
    root = S.store_path(run)
    groups = []
    for meta in root.rglob("zarr.json"):
        if json.loads(meta.read_text()).get("node_type") == "group":
            group = "" if meta.parent == root else meta.parent.relative_to(root).as_posix()
            if S.has_group(run, group):
                groups.append(group)
    return sorted(groups)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_store(run: Path, ref: Path) -> None:
    """Every group (analyses included) identical, float values bit for bit, attributes but wall time."""
    assert stored_groups(run) == stored_groups(ref)
    for group in stored_groups(ref):
        a, b = comparable(S.load_run(run, group), run), comparable(S.load_run(ref, group), ref)
        xr.testing.assert_identical(a, b)
        for name in b.variables:
            if b[name].dtype.kind == "f":
                assert same_bits(a[name].values, b[name].values), (group, name)


def assert_no_wrong_numbers(run: Path, ref: Path) -> None:
    """Every stored value is either not written yet (NaN) or bit-for-bit the reference's; every
    evaluation and log point up to the reported last complete step is written; every analysis the
    store lists is complete and identical to the reference's."""
    completed = S.read_attrs(run)["completed_step"]
    for group in RUN_GROUPS:
        got, want = S.load_run(run, group), S.load_run(ref, group)
        for name, var in want.variables.items():
            a, b = got[name].values, var.values
            if a.dtype.kind != "f":
                assert np.array_equal(a, b), (group, name)
                continue
            written = ~np.isnan(a)
            assert same_bits(a[written], b[written]), (group, name)
            for dim in ("step", "iteration"):
                if dim in var.dims:
                    due = np.asarray(want[dim].values <= completed)
                    mask = np.moveaxis(written, var.dims.index(dim), 0)
                    assert mask[due].all(), (group, name, dim, completed)
    for name in done(run):
        got = comparable(S.load_run(run, f"analysis/{name}"), run)
        want = comparable(S.load_run(ref, f"analysis/{name}"), ref)
        xr.testing.assert_identical(got, want)
        for var in want.variables:
            if want[var].dtype.kind == "f":
                assert same_bits(got[var].values, want[var].values), (name, var)


def info_step(run: Path) -> tuple[str, int]:
    """``purify info RUN`` (the reading path every command shares): its status and last complete step."""
    code, stdout, err = run_main("info", run)
    assert code == 0, err
    assert err == ""
    status = re.search(r"status: (\w+)", stdout)
    step = re.search(r"completed step: (-?\d+) of (\d+)", stdout)
    assert status and step, stdout
    return status.group(1), int(step.group(1))


@dataclass
class Reference:
    """An uninterrupted run with all its analyses, and the fault points it went through."""

    run: Path
    trace: list[str]  # label of every fault point, in order
    train_end: int  # trace[:train_end] is `purify simulate`, the rest `purify analyze`
    config: RunConfig
    checkpoint_at: dict[int, int] = field(default_factory=dict)  # step → trace index of its checkpoint

    @property
    def total(self) -> int:
        return Timeline.from_config(self.config).total

    def analysis_start(self, name: str) -> int:
        """Trace index of the first fault point of analysis `name`."""
        return next(i for i, label in enumerate(self.trace) if label.startswith(f"store:analysis/{name}/"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    run = tmp_path_factory.mktemp("reliability") / "reference"
    faults.FAULT_TRACE = trace = []
    try:
        code, _, err = run_main("simulate", *TRAIN, "--out", run)
        assert code == 0, err
        train_end = len(trace)
        code, _, err = run_main("analyze", run)
        assert code == 0, err
    finally:
        faults.FAULT_TRACE = None
    config = RunConfig.from_json(S.read_attrs(run)["config_json"])
    tl = Timeline.from_config(config)
    steps = sorted({0, *tl.log_steps.tolist(), *tl.eval_steps.tolist()})
    where = [i for i, label in enumerate(trace) if label == "checkpoint"]
    assert len(where) == len(steps)  # one checkpoint per log or evaluation point, and at step 0
    assert sorted(done(run)) == sorted(ANALYSES)
    return Reference(run, trace, train_end, config, dict(zip(steps, where, strict=True)))


@pytest.fixture
def fresh(reference, tmp_path) -> Path:
    """A copy of the reference run, without its analyses' bookkeeping touched."""
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    return run


# --------------------------------------------------------------------------------------
# 1. Kill anywhere, resume exactly (20 seeded SIGKILLs)
# --------------------------------------------------------------------------------------

ZYGOTE = r"""
import json, os, sys, traceback
import torch, xarray, zarr  # imported once here, inherited by every forked command
import purify.cli, purify.simulate, purify.summary
from purify.analysis import ANALYSES, module
for name in ANALYSES:
    module(name)

def respond(**msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()

respond(ready=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.environ.update(req["env"])
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            code = purify.cli.main(req["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    respond(pid=pid)
    _, status = os.waitpid(pid, 0)
    respond(status=os.waitstatus_to_exitcode(status))
"""


class Zygote:
    """A process that has imported everything and forks one child per command (see module doc)."""

    def __init__(self, log: Path) -> None:
        self._err = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, env=CHILD_ENV)
        self._log = log
        self._buf = b""
        assert self._message(180.0) == {"ready": True}, log.read_text()

    def _message(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                assert chunk, f"the zygote died: {self._log.read_text()}"
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], stderr: Path, kill_at: int = 0) -> int:
        """Fork a child running ``purify <argv>``; return its pid."""
        request = {"argv": [str(a) for a in argv], "stderr": str(stderr),
                   "env": {"PURIFY_FAULT_KILL_AT": str(kill_at)}}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        return self._message(60.0)["pid"]

    def status(self, timeout: float = 0.0) -> int | None:
        """The child's exit status (negative: killed by that signal), None if still running."""
        message = self._message(timeout)
        return None if message is None else message["status"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a failed test left a child running: do not wait for it
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@dataclass
class Kill:
    kind: str  # see KINDS
    target: int  # index into the reference trace
    delay: float = 0.0  # seconds, for the delay kinds


#: kind → how many of the 20 kills; hook kinds die at a fault point whose label starts with
#: the second element, delay kinds sleep a random time after a progress mark.
KINDS = {
    "delay-training": (5, None),  # mid-step, mid-evaluation, wherever the clock says
    "snapshot-write": (4, "store:snapshots/"),  # between the W, b and sigma_rho chunks of one snapshot
    "checkpoint": (3, "checkpoint"),  # checkpoint written, not yet renamed into place
    "root-write": (2, "store:"),  # a log row, an evaluation, completed_step, status
    "analysis-write": (2, "store:analysis/"),  # a staged analysis chunk
    "group-rename": (2, "group:"),  # an analysis staged in full, not yet renamed into place
    "delay-analysis": (2, None),  # mid-analysis, wherever the clock says
}


def eligible(ref: Reference, kind: str) -> list[int]:
    """Trace indices where a kill of `kind` can be aimed (all after the first checkpoint, so the
    store exists: a kill during creation leaves a folder that only ``--overwrite`` reuses)."""
    first = ref.checkpoint_at[0] + 2
    if kind == "delay-training":  # the checkpoint after which the clock starts
        return [i for step, i in ref.checkpoint_at.items() if step > 0 and step <= 0.8 * ref.total]
    if kind == "delay-analysis":  # the start of an analysis that another one follows
        return [ref.analysis_start(name) for name in ANALYSES[:-1]]
    prefix = KINDS[kind][1]
    span = range(first, ref.train_end) if kind in ("snapshot-write", "checkpoint", "root-write") else (
        range(ref.train_end, len(ref.trace)))
    return [i for i in span if ref.trace[i].startswith(prefix)
            and not (kind == "root-write" and ref.trace[i].startswith("store:snapshots/"))]


def plan_kills(ref: Reference, seed: int) -> list[list[Kill]]:
    """20 seeded kills of the quotas in `KINDS`, dealt into two chains, each sorted by target."""
    rng = random.Random(seed)
    kills = []
    for kind, (count, _) in KINDS.items():
        for target in rng.sample(eligible(ref, kind), count):
            delay = {"delay-training": 0.03, "delay-analysis": 0.2}.get(kind, 0.0) * rng.random()
            kills.append(Kill(kind, target, delay))
    rng.shuffle(kills)
    return [sorted(kills[:10], key=lambda k: k.target), sorted(kills[10:], key=lambda k: k.target)]


def local_trace(ref: Reference, run: Path) -> tuple[list[str], list[int | None]]:
    """The command the chain runs next on `run`, and the reference trace index of each of the
    fault points it will reach (None where it has one the reference has not)."""
    path = S.store_path(run)
    if not path.exists():
        return ["simulate", *TRAIN, "--out", str(run)], list(range(ref.train_end))
    if S.read_attrs(run)["status"] != "complete":
        ckpt = S.load_checkpoint(run)
        step = -1 if ckpt is None else ckpt["step"]
        if step <= 0:  # starts over at step 0: evaluates and checkpoints it again
            start = [i for i, label in enumerate(ref.trace) if label == "store:snapshots/W/c/0/0/0"][1]
        else:
            start = ref.checkpoint_at[step] + 2  # after that checkpoint and its completed_step
        # first it marks the store running again
        return ["simulate", "--out", str(run), *RESUME], [None, *range(start, ref.train_end)]
    missing = [n for n in ANALYSES if n not in done(run)]
    if not missing:
        return [], []
    first = missing[0]
    parent_exists = (path / "analysis" / "zarr.json").is_file()
    listed = S.has_group(run, f"analysis/{first}")  # in the manifest: leaves it before the swap
    local: list[int | None] = []
    for i in range(ref.analysis_start(first), len(ref.trace)):
        label = ref.trace[i]
        if parent_exists and label == "store:analysis/zarr.json":
            continue
        if listed and label == f"group:analysis/{first}":
            local.append(None)
        local.append(i)
    return ["analyze", str(run)], local


def completed_step(run: Path) -> int:
    try:
        return S.read_attrs(run).get("completed_step", -1)
    except S.StoreError:
        return -1


def run_chain(zygote: Zygote, ref: Reference, run: Path, kills: list[Kill], logs: Path) -> list[str]:
    """Run, kill, check and resume until the run and its analyses are complete; return a log."""
    pending, report, n = list(kills), [], 0
    while True:
        argv, local = local_trace(ref, run)
        if not argv:
            break
        n += 1
        err_path = logs / f"{run.name}-{n}.err"
        err_path.write_text("")  # read while the child writes it
        start_step = completed_step(run)
        training = argv[0] == "simulate"
        if not pending or (pending[0].target < ref.train_end) != training:
            zygote.start(argv, err_path)  # no kill planned in this phase: run it to the end
            status = zygote.status(300.0)
            assert status == 0, (argv, err_path.read_text())
            continue
        kill = pending.pop(0)
        missing = [a for a in ANALYSES[:-1] if a not in done(run)] if not training else []
        if kill.kind == "delay-analysis" and not missing:
            kill.kind = "analysis-write"  # only the last analysis is left: aim at its writes
        label = ""
        if KINDS[kill.kind][1] is not None:  # a hook kill
            later = [i for i in eligible(ref, kill.kind) if i >= kill.target and i in local]
            assert later, f"no {kill.kind} point left for {argv}"
            kill.target = later[0]  # moved on if an earlier kill overshot it
            label = ref.trace[kill.target]
            zygote.start(argv, err_path, kill_at=local.index(kill.target) + 1)
            status = zygote.status(300.0)
        elif kill.kind == "delay-training":
            step = next(s for s, i in ref.checkpoint_at.items() if i == kill.target)
            wait = max(step, start_step + 1)
            pid = zygote.start(argv, err_path)
            status = _kill_when(zygote, pid, lambda w=wait: completed_step(run) >= w, kill.delay)
        else:
            name = next((a for a in missing if ref.analysis_start(a) >= kill.target), missing[0])
            mark = f"analysis: {name} ..."
            pid = zygote.start(argv, err_path)
            status = _kill_when(zygote, pid, lambda m=mark, e=err_path: m in e.read_text(), kill.delay)
        err = err_path.read_text()
        assert status == -signal.SIGKILL, (kill, argv, status, err)
        assert "Traceback" not in err, err
        if label:
            died = re.findall(r"purify: fault injection: SIGKILL at (\S+)", err)
            if kill.kind == "analysis-write":  # zarr writes a group's files concurrently: any order
                label = "/".join(label.split("/")[:2]) + "/"
                assert len(died) == 1 and died[0].startswith(label), (kill, died, label)
            else:
                assert died == [label], (kill, argv, start_step, died, label)

        # The killed store opens through the code `purify info` uses, reports its last complete
        # step, passes the full integrity check, and holds no wrong number.
        state, step = info_step(run)
        assert state in ("running", "complete")
        assert step == completed_step(run) >= max(start_step, 0)
        S.verify_run(run)
        assert_no_wrong_numbers(run, ref.run)
        where = label or f"+{kill.delay * 1000:.0f} ms"
        report.append(f"{kill.kind:15s} trace index {kill.target:4d} {where:34s} -> {state}, "
                      f"completed step {step}, analyses {len(done(run))}")
    assert not pending, f"kills never reached: {pending}"
    assert_same_store(run, ref.run)
    assert not (run / S.LOCK_NAME).exists()
    return report


def _kill_when(zygote: Zygote, pid: int, ready: Callable[[], bool], delay: float) -> int:
    """SIGKILL child `pid` `delay` seconds after `ready()` first holds; return its exit status."""
    deadline = time.monotonic() + 300.0
    while not ready():
        status = zygote.status(0.002)
        if status is not None:
            return status  # it ended before the kill: the caller reports it
        assert time.monotonic() < deadline, "the child made no progress"
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    return zygote.status(60.0)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote") / "zygote.err")
    yield z
    z.close()


@pytest.mark.slow
def test_sigkill_at_20_seeded_points_then_resume_is_bitwise_identical(reference, zygote, tmp_path):
    plans = plan_kills(reference, seed=6)
    assert sum(len(p) for p in plans) == 20
    t0 = time.perf_counter()
    reports = [run_chain(zygote, reference, tmp_path / f"chain{c}", plan, tmp_path)
               for c, plan in enumerate(plans)]
    print(f"20 kills and resumes in {time.perf_counter() - t0:.1f} s")
    for c, report in enumerate(reports):
        print(f"chain {c}:", *report, sep="\n  ")
    assert sum(len(r) for r in reports) == 20


# --------------------------------------------------------------------------------------
# 2. Integrity on open: every reading command refuses a foreign, truncated or corrupted store
# --------------------------------------------------------------------------------------

# A run that takes a fraction of a second, with every analysis.
MICRO = [
    "--d", "8", "--k", "1", "--m", "8", "--clean-steps", "4", "--adv-steps", "2", "--n-test", "20",
    "--n-eval", "10", "--batch-size", "16", "--pgd-steps", "1", "--clean-snapshots", "2",
    "--adv-snapshots", "1", "--log-points", "2", "--radii", "1", "--norms", "l2", "--attacks", "fgm",
    "--seed", "0", "--quiet", "--no-analysis",
]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    """A complete MICRO run without analyses."""
    run = tmp_path_factory.mktemp("micro") / "run"
    code, _, err = run_main("simulate", *MICRO, "--out", run)
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def micro_analysed(micro_run, tmp_path_factory) -> Path:
    """The same run with every analysis."""
    run = tmp_path_factory.mktemp("micro") / "analysed"
    shutil.copytree(micro_run, run)
    code, _, err = run_main("analyze", run)
    assert code == 0, err
    return run


def _set_root_attrs(run: Path, change: Callable[[dict], None]) -> None:
    """Edit the root attributes behind the store's back (as a damaged file would)."""
    meta_path = S.store_path(run) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    change(meta["attributes"])
    meta_path.write_text(json.dumps(meta))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _first_chunk(array_dir: Path) -> Path:
    return next(p for p in sorted((array_dir / "c").rglob("*")) if p.is_file())


def _foreign(run: Path) -> None:
    shutil.rmtree(S.store_path(run))
    xr.Dataset({"x": ("i", [1.0, 2.0])}).to_zarr(S.store_path(run), zarr_format=3, consolidated=False)


# damage → (what it does to RUN, words the error line must contain)
DAMAGES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "foreign zarr store": (_foreign, ["not a purify run store"]),
    "root metadata deleted": (lambda r: (S.store_path(r) / "zarr.json").unlink(), ["no root metadata"]),
    "root metadata garbage": (lambda r: (S.store_path(r) / "zarr.json").write_bytes(b"\x00{garbage"),
                              ["not a JSON object"]),
    "unknown format version": (lambda r: _set_root_attrs(r, lambda a: a.update(format_version=99)),
                               ["format version 99"]),
    "manifest lost": (lambda r: _set_root_attrs(r, lambda a: a.pop(S.LAYOUT_ATTR)), ["manifest"]),
    "unknown status": (lambda r: _set_root_attrs(r, lambda a: a.update(status="exploded")),
                       ["root attribute 'status' does not match its digest"]),
    "config lost": (lambda r: _set_root_attrs(r, lambda a: a.pop("config_json")), ["config"]),
    "group deleted": (lambda r: shutil.rmtree(S.store_path(r) / "problem"), ["group 'problem' is missing"]),
    "array metadata deleted": (lambda r: (S.store_path(r) / "snapshots" / "b" / "zarr.json").unlink(),
                               ["array 'snapshots/b' is missing"]),
    "array metadata garbage": (lambda r: (S.store_path(r) / "snapshots" / "W" / "zarr.json").write_bytes(
        b'{"zarr_format": 3, "node_ty'), ["metadata of array 'snapshots/W' is unreadable"]),
    "chunk deleted": (lambda r: (S.store_path(r) / "snapshots" / "W" / "c" / "1" / "0" / "0").unlink(),
                      ["chunk c/1/0/0 of array 'snapshots/W' is missing"]),
    "analysis chunk deleted": (lambda r: _first_chunk(S.store_path(r) / "analysis" / "lottery" / "lucky_coef").unlink(),
                               ["of array 'analysis/lottery/lucky_coef' is missing"]),
    "chunk garbage": (lambda r: (S.store_path(r) / "clean_accuracy" / "c" / "0").write_bytes(os.urandom(64)),
                      ["of array 'clean_accuracy' is corrupted"]),
    "chunk bit flip": (lambda r: _flip_a_byte(S.store_path(r) / "snapshots" / "W" / "c" / "1" / "0" / "0"),
                       ["chunk (1, 0, 0) of array 'snapshots/W' is corrupted"]),
    "analysis chunk truncated": (
        lambda r: _first_chunk(S.store_path(r) / "analysis" / "mixture" / "pure_norm").write_bytes(b"\x28\xb5"),
        ["of array 'analysis/mixture/pure_norm' is corrupted"]),
}
# Every reader meets the damages of each kind; the rest are checked through `info`.
EVERY_READER = ("foreign zarr store", "manifest lost", "array metadata deleted", "chunk deleted",
                "chunk bit flip")


@pytest.mark.parametrize(("damage", "reader"), [(d, r) for d in DAMAGES for r in READERS
                                                if d in EVERY_READER or r == "info"])
def test_damaged_store_gives_one_line_and_exit_2(micro_analysed, tmp_path, damage, reader):
    run = tmp_path / "run"
    shutil.copytree(micro_analysed, run)
    S.verify_run(run)  # the intact copy passes
    make, needles = DAMAGES[damage]
    make(run)
    before = tree(run)
    code, stdout, err = run_main(*[a.format(run=run) for a in READERS[reader]])
    assert code == 2, err
    assert stdout == ""  # no numbers at all rather than wrong ones
    line = one_line_error(err, *needles)
    assert str(run) in line
    assert tree(run) == before  # nothing written, no lock left behind


def test_damage_is_seen_by_open_run_and_load_run(micro_analysed, tmp_path):
    """What other commands (experiment, sweep) get from `open_run`/`load_run`."""
    run = tmp_path / "run"
    shutil.copytree(micro_analysed, run)
    S.open_run(run, "snapshots")
    (S.store_path(run) / "snapshots" / "W" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(S.StoreError, match=r"chunk c/1/0/0 of array 'snapshots/W' is missing"):
        S.open_run(run, "snapshots")
    S.open_run(run)  # other groups still open
    _flip_a_byte(S.store_path(run) / "problem" / "M" / "c" / "0" / "0")
    S.open_run(run, "problem")  # lazy: the chunk is not read yet...
    with pytest.raises(S.StoreError, match="cannot read"):
        S.load_run(run, "problem")  # ...and reading it fails instead of giving numbers
    with pytest.raises(S.StoreError, match="has no group 'analysis/nothing'"):
        S.open_run(run, "analysis/nothing")


def test_version_1_stores_are_still_read(micro_analysed, tmp_path):
    """Stores written before the manifest and checksums (format 1) open with the checks they allow."""
    run = tmp_path / "run"
    shutil.copytree(micro_analysed, run)
    _set_root_attrs(run, lambda a: (a.pop(S.LAYOUT_ATTR), a.pop(S.RUN_ID_ATTR), a.pop(S.INTEGRITY_ATTR),
                                    a.update(format_version=1)))
    assert S.verify_run(run)["format_version"] == 1
    code, stdout, err = run_main("info", run)
    assert code == 0, err
    assert "status: complete" in stdout
    assert sorted(done(run)) == sorted(ANALYSES)
    shutil.rmtree(S.store_path(run) / "problem")  # without a manifest, seen when it is opened
    with pytest.raises(S.StoreError, match="has no group 'problem'"):
        S.open_run(run, "problem")


# --------------------------------------------------------------------------------------
# 3. Completion state
# --------------------------------------------------------------------------------------


def test_completion_states_are_reported_and_enforced(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    hint = f"resume with: purify simulate --out {run} --resume"

    S.update_attrs(run, status="running", status_reason="")  # as a killed run leaves it
    code, stdout, err = run_main("info", run)
    assert code == 0, err
    assert f"status: running (no process is writing it; {hint})" in stdout
    lock = run / S.LOCK_NAME
    sleeper = subprocess.Popen(["sleep", "60"])
    try:  # a live writer: no hint
        lock.write_text(json.dumps({"pid": sleeper.pid, "hostname": __import__("socket").gethostname()}))
        assert S.writer_pid(run) == sleeper.pid
        code, stdout, _ = run_main("info", run)
        assert "status: running\n" in stdout
        code, stdout, err = run_main("analyze", run)
        assert code == 2
        one_line_error(err, "is not complete (status: running)")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert S.writer_pid(run) is None  # its holder is gone: the lock is stale
    lock.unlink()

    S.update_attrs(run, status="stopped", status_reason="interrupted after step 3")
    code, stdout, _ = run_main("info", run)
    assert f"status: stopped interrupted after step 3 ({hint})" in stdout
    code, stdout, err = run_main("plot", run)
    assert code == 2
    one_line_error(err, "is not complete (status: stopped)")

    S.update_attrs(run, status="failed", status_reason="diverged at step 2: lr too large")
    code, stdout, _ = run_main("info", run)
    assert "status: failed diverged at step 2: lr too large\n" in stdout
    code, _, err = run_main("analyze", run)
    assert code == 2
    one_line_error(err, "failed: diverged at step 2: lr too large")

    S.update_attrs(run, status="complete", status_reason="")
    code, stdout, _ = run_main("info", run)
    assert code == 0 and "status: complete\n" in stdout and "resume with" not in stdout
    assert "completed step: 6 of 6 (the last checkpoint)" in stdout


def test_root_attributes_change_in_one_atomic_write(micro_run, tmp_path):
    """Several attributes (status, reason, summary) land together: one rewrite of zarr.json."""
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    faults.FAULT_TRACE = trace = []
    try:
        S.update_attrs(run, status="failed", status_reason="x", summary_json="{}", extra=1)
    finally:
        faults.FAULT_TRACE = None
    assert trace == ["store:zarr.json"]



# --------------------------------------------------------------------------------------
# 4. Disk full, unwritable folders, missing runs
# --------------------------------------------------------------------------------------


def _enospc(*_: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_writes(monkeypatch, start: int, persistent: bool) -> dict[str, int]:
    """Make store writes number `start` (1-based) and, if `persistent`, all later ones raise ENOSPC."""
    real = S.AtomicLocalStore._write_atomic
    calls = {"n": 0}

    def write(self, key, value, exclusive=False):
        calls["n"] += 1
        if calls["n"] == start or (persistent and calls["n"] > start):
            raise _enospc()
        return real(self, key, value, exclusive)

    monkeypatch.setattr(S.AtomicLocalStore, "_write_atomic", write)
    return calls


def assert_same_run(run: Path, ref: Path) -> None:
    """The training record (not the analyses) identical to the reference, bit for bit."""
    for group in RUN_GROUPS:
        a, b = S.load_run(run, group), S.load_run(ref, group)
        if not group:
            a.attrs = {k: v for k, v in a.attrs.items() if not (volatile(k) or k.startswith("analys"))}
            b.attrs = {k: v for k, v in b.attrs.items() if not (volatile(k) or k.startswith("analys"))}
        xr.testing.assert_identical(a, b)
        for name in b.variables:
            if b[name].dtype.kind == "f":
                assert same_bits(a[name].values, b[name].values), (group, name)


@pytest.mark.parametrize("persistent", [True, False], ids=["disk-stays-full", "one-failed-write"])
def test_disk_full_during_training_stops_cleanly_and_resumes_identically(reference, tmp_path, monkeypatch,
                                                                         persistent):
    # A write after the first checkpoint, seeded: which one depends on the trace of the reference.
    writes = [label for label in reference.trace[:reference.train_end] if label.startswith("store:")]
    first = sum(1 for label in reference.trace[:reference.checkpoint_at[0] + 2] if label.startswith("store:"))
    start = random.Random(int(persistent)).randrange(first + 1, len(writes))
    run = tmp_path / "run"
    calls = _fail_writes(monkeypatch, start, persistent)
    code, stdout, err = run_main("simulate", *TRAIN, "--out", run)
    assert calls["n"] >= start
    assert code == 1, err
    assert stdout == ""
    line = last_error_line(err)
    match = re.fullmatch(rf"purify: error: cannot write to {re.escape(str(run))}: No space left on device "
                         r"\(at step (\d+); the last checkpoint is at step (\d+)\); the store (.+); fix the "
                         rf"cause \(e\.g\. free disk space\), then resume with: purify simulate --out "
                         rf"{re.escape(str(run))} --resume", line)
    assert match, line
    at, last = int(match.group(1)), int(match.group(2))
    assert 0 <= last <= at
    monkeypatch.undo()

    attrs = S.read_attrs(run)
    if persistent:  # not even the status could be written
        assert match.group(3) == "could not be marked failed either"
        assert attrs["status"] == "running"
    else:
        assert match.group(3) == "is marked failed"
        assert attrs["status"] == "failed" and "No space left on device" in attrs["status_reason"]
    assert attrs["completed_step"] == last
    assert not list((run / S.TMP_NAME).iterdir())  # the failed write left no temp file
    assert info_step(run) == (attrs["status"], last)
    assert_no_wrong_numbers(run, reference.run)

    code, _, err = run_main("simulate", "--out", run, *RESUME)
    assert code == 0, err
    assert_same_run(run, reference.run)
    assert S.read_attrs(run)["status"] == "complete"


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    import torch

    real, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            f.write(b"half a checkpoint")
            raise _enospc()
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    code, _, err = run_main("simulate", *TRAIN, "--out", run)
    monkeypatch.undo()
    assert code == 1
    last_error_line(err, "No space left on device")
    third = sorted(reference.checkpoint_at)[2]
    assert S.load_checkpoint(run)["step"] == S.read_attrs(run)["completed_step"] == third
    assert sorted(p.name for p in run.iterdir()) == [S.TMP_NAME, S.CHECKPOINT_NAME, S.STORE_NAME]
    code, _, err = run_main("simulate", "--out", run, *RESUME)
    assert code == 0, err
    assert_same_run(run, reference.run)


def test_disk_full_during_analysis_keeps_the_run_and_finished_analyses(micro_run, micro_analysed, tmp_path,
                                                                         monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    faults.FAULT_TRACE = trace = []  # where the analyses write, on a scratch copy
    try:
        shutil.copytree(micro_run, tmp_path / "scratch")
        assert run_main("analyze", tmp_path / "scratch")[0] == 0
    finally:
        faults.FAULT_TRACE = None
    mixture = [i for i, label in enumerate(trace) if label.startswith("store:analysis/mixture/")]
    start = 1 + sum(1 for label in trace[:mixture[len(mixture) // 2]] if label.startswith("store:"))

    _fail_writes(monkeypatch, start, persistent=True)
    code, stdout, err = run_main("analyze", run)
    monkeypatch.undo()
    assert code == 1
    assert stdout == ""
    line = err.splitlines()[-1]
    assert line == (f"purify: error: cannot write the analyses of {run}: cannot write group 'analysis/mixture' "
                    f"of {S.store_path(run)}: No space left on device; what was stored before is intact; "
                    f"retry with: purify analyze {run}")
    assert "Traceback" not in err

    # The run is complete, intact and readable; finished analyses are whole, the failed one absent.
    attrs = S.verify_run(run)
    assert attrs["status"] == "complete"
    assert_same_run(run, micro_run)
    assert done(run) == ["purification", "lottery"]
    assert not S.has_group(run, "analysis/mixture")
    assert not [p for p in (run / S.TMP_NAME).iterdir()]  # no staged group left behind
    code, stdout, err = run_main("info", run)
    assert code == 0 and "status: complete" in stdout

    code, stdout, err = run_main("analyze", run)
    assert code == 0, err
    assert stdout.startswith("computed: mixture")
    for name in ANALYSES:
        xr.testing.assert_identical(comparable(S.load_run(run, f"analysis/{name}"), run),
                                    comparable(S.load_run(micro_analysed, f"analysis/{name}"), micro_analysed))


def test_unwritable_and_impossible_output_folders(tmp_path, monkeypatch):
    # We run as root, where chmod does not stop writes: the refusals are injected.
    empty = tmp_path / "empty"
    empty.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != empty and real_access(p, mode, **kw))
    code, stdout, err = run_main("simulate", *MICRO, "--out", empty)
    assert code == 2 and stdout == ""
    one_line_error(err, f"run folder {empty} is not writable")
    assert list(empty.iterdir()) == []
    monkeypatch.undo()

    def no_mkdir(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    code, _, err = run_main("simulate", *MICRO, "--out", tmp_path / "new" / "run")
    monkeypatch.undo()
    assert code == 2
    one_line_error(err, f"cannot create run folder {tmp_path / 'new' / 'run'}: Permission denied")
    assert not (tmp_path / "new").exists()

    _fail_writes(monkeypatch, 1, persistent=True)  # a folder that takes no file at all
    code, _, err = run_main("simulate", *MICRO, "--out", tmp_path / "full")
    monkeypatch.undo()
    assert code == 2
    last_error_line(err, f"cannot write {S.store_path(tmp_path / 'full')}: No space left on device")

    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    code, _, err = run_main("simulate", *MICRO, "--out", a_file / "run")
    assert code == 2
    one_line_error(err, f"{a_file / 'run'}", "Not a directory")
    code, _, err = run_main("simulate", *MICRO, "--out", a_file)
    assert code == 2
    one_line_error(err, f"{a_file} exists and is not a folder")
    assert a_file.read_text() == "precious"


def test_analysis_refused_when_the_lock_cannot_be_created(micro_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    before = tree(run)
    real_open = os.open

    def no_lock(path, flags, *args, **kwargs):
        if Path(path).name == S.LOCK_NAME:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_lock)
    code, _, err = run_main("analyze", run)
    monkeypatch.undo()
    assert code == 2
    one_line_error(err, f"cannot create lock {run / S.LOCK_NAME}: Permission denied")
    assert tree(run) == before


@pytest.mark.parametrize("argv", [["info", "{run}"], ["info", "{run}", "--json"], ["analyze", "{run}"],
                                  ["plot", "{run}"], ["simulate", "--out", "{run}", *RESUME]],
                         ids=["info", "info-json", "analyze", "plot", "resume"])
def test_missing_run_folder(tmp_path, argv):
    run = tmp_path / "nowhere"
    code, stdout, err = run_main(*[a.format(run=run) for a in argv])
    assert code == 2 and stdout == ""
    line = one_line_error(err, str(run))
    assert "no run at" in line or "nothing to resume" in line
    assert not run.exists()


# --------------------------------------------------------------------------------------
# 5. Analyses are written whole, under the run's lock
# --------------------------------------------------------------------------------------


def test_analyze_writes_under_the_lock_and_refuses_a_run_in_use(micro_analysed, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(micro_analysed, run)
    real, seen = S.write_group, []

    def write_group(r, group, ds):
        seen.append(S.writer_pid(r))
        return real(r, group, ds)

    monkeypatch.setattr(S, "write_group", write_group)
    code, _, err = run_main("analyze", run, "--force", "--only", "lottery,mixture")
    monkeypatch.undo()
    assert code == 0, err
    assert seen == [os.getpid(), os.getpid()]  # every group written while this process holds the lock
    assert not (run / S.LOCK_NAME).exists()

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (run / S.LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid,
                                                   "hostname": __import__("socket").gethostname()}))
        before = tree(run)
        code, _, err = run_main("analyze", run, "--force", "--only", "lottery")
        assert code == 2
        one_line_error(err, f"in use by process {sleeper.pid}")
        assert tree(run) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failed_group_swap_leaves_the_analysis_absent_not_partial(micro_analysed, tmp_path, monkeypatch):
    """`--force` replaces a group: if the new one cannot be moved in, the group is absent (and
    recomputed by the next `purify analyze`), never half old, half new."""
    run = tmp_path / "run"
    shutil.copytree(micro_analysed, run)
    real = os.rename

    def rename(src, dst):
        if Path(dst) == S.store_path(run) / "analysis" / "mixture" and S.TMP_NAME in str(src):
            raise _enospc()
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    code, _, err = run_main("analyze", run, "--force", "--only", "mixture")
    monkeypatch.undo()
    assert code == 1
    last_error_line(err, "cannot write group 'analysis/mixture'", "No space left on device")
    S.verify_run(run)
    assert not S.has_group(run, "analysis/mixture")
    assert "mixture" in S.read_attrs(run)["analyses_done"]  # stale bookkeeping ...
    assert "mixture" not in done(run)  # ... that the manifest overrules
    with pytest.raises(S.StoreError, match="has no mixture analysis"):
        open_analysis(run, "mixture")
    code, stdout, err = run_main("analyze", run)
    assert code == 0 and stdout.startswith("computed: mixture"), err
    xr.testing.assert_identical(S.load_run(run, "analysis/mixture"), S.load_run(micro_analysed, "analysis/mixture"))


@pytest.mark.slow
def test_sigkill_while_analyze_force_swaps_a_group(micro_analysed, zygote, tmp_path):
    """Real SIGKILLs of ``purify analyze --force``: with the old group moved aside and the new one
    staged, and in the middle of staging; each leaves the group absent or whole."""
    faults.FAULT_TRACE = trace = []
    try:
        shutil.copytree(micro_analysed, tmp_path / "scratch")
        assert run_main("analyze", tmp_path / "scratch", "--force")[0] == 0
    finally:
        faults.FAULT_TRACE = None
    lasso = [i for i, label in enumerate(trace) if label.startswith("store:analysis/lasso/")]
    points = {"swap": trace.index("group:analysis/mixture") + 1, "staging": lasso[len(lasso) // 2] + 1}
    for name, n in points.items():
        run = tmp_path / name
        shutil.copytree(micro_analysed, run)
        zygote.start(["analyze", run, "--force"], tmp_path / f"{name}.err", kill_at=n)
        assert zygote.status(300.0) == -signal.SIGKILL
        err = (tmp_path / f"{name}.err").read_text()
        assert re.search(r"SIGKILL at (group:analysis/mixture|store:analysis/lasso/)", err), err
        attrs = S.verify_run(run)  # readable, every listed group whole
        assert attrs["status"] == "complete"
        killed = "mixture" if name == "swap" else "lasso"
        assert not S.has_group(run, f"analysis/{killed}") or name == "staging"
        for analysis in done(run):
            got = comparable(S.load_run(run, f"analysis/{analysis}"), run, micro_analysed)
            xr.testing.assert_identical(got, comparable(S.load_run(micro_analysed, f"analysis/{analysis}"),
                                                        micro_analysed))
        assert run_main("analyze", run)[0] == 0
        assert sorted(done(run)) == sorted(ANALYSES)

"""Tests of purify.store: layout, atomicity under SIGKILL, validation, lock, run folder rules."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from purify import store as S
from purify.store import write as store_write

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _groups(n_steps: int = 6, n_snap: int = 3) -> dict[str, xr.Dataset]:
    """NaN-filled groups like training pre-allocates them."""
    root = xr.Dataset(
        {
            "loss": (("step", "phase"), np.full((n_steps, 2), np.nan)),
            "acc": ("step", np.full(n_steps, np.nan, np.float32)),
        },
        coords={"step": np.arange(n_steps) * 5, "phase": ["clean", "adversarial"]},
    )
    snapshots = xr.Dataset(
        {"W": (("step", "neuron", "d"), np.full((n_snap, 4, 3), np.nan, np.float32))},
        coords={"step": np.arange(n_snap) * 10},
    )
    problem = xr.Dataset(
        {"features": (("k", "d"), np.arange(6.0).reshape(2, 3))},
        coords={"kind": ("k", ["sparse", "dense"])},
        attrs={"sparsity": 0.25, "name": "toy"},
    )
    return {"": root, "snapshots": snapshots, "problem": problem}


#: How the recorder chunks its groups: one chunk per snapshot.
CHUNK_ALONG = {"snapshots": "step"}


def _attrs() -> dict[str, S.AttrValue]:
    return {"config_json": json.dumps({"width": 4, "lr": 0.1}), "seed": 7, "fast": True}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    S.create_store(tmp_path / "run", _groups(), _attrs(), chunk_along=CHUNK_ALONG)
    return tmp_path / "run"


# --------------------------------------------------------------------------------------
# Layout and round trip
# --------------------------------------------------------------------------------------


def test_round_trip_after_filling_every_region(run: Path) -> None:
    expected = _groups()
    rng = np.random.default_rng(0)
    for i in range(expected[""].sizes["step"]):
        loss, acc = rng.standard_normal(2), np.float32(rng.random())
        S.write_region(run, "", "step", i, {"loss": loss, "acc": acc})
        expected[""]["loss"][i] = loss
        expected[""]["acc"][i] = acc
    for j in range(expected["snapshots"].sizes["step"]):
        w = rng.standard_normal((4, 3)).astype(np.float32)
        S.write_region(run, "snapshots", "step", j, {"W": w})
        expected["snapshots"]["W"][j] = w

    expected[""].attrs = {
        **_attrs(),
        "format": S.FORMAT_NAME,
        "format_version": S.FORMAT_VERSION,
        "status": "running",
        "status_reason": "",
    }
    for group, ds in expected.items():
        got = S.load_run(run, group)
        xr.testing.assert_identical(got, ds)
    assert list(S.open_run(run).phase.values) == ["clean", "adversarial"]
    assert S.read_attrs(run) == expected[""].attrs


def test_chunking(run: Path) -> None:
    root = S.open_run(run)
    assert root.loss.encoding["chunks"] == root.loss.shape
    snaps = S.open_run(run, "snapshots")
    assert snaps.W.encoding["chunks"] == (1, 4, 3)
    assert "zstd" in repr(snaps.W.encoding["compressors"]).lower()


def test_chunking_is_the_callers(tmp_path: Path) -> None:
    """The store knows no group names: without ``chunk_along`` every variable is one chunk;
    with it, only the data variables of the named group that have the named dimension."""
    S.create_store(tmp_path / "plain", _groups(), _attrs())
    assert S.open_run(tmp_path / "plain", "snapshots").W.encoding["chunks"] == (3, 4, 3)
    S.create_store(tmp_path / "root", _groups(), _attrs(), chunk_along={"": "step"})
    root = S.open_run(tmp_path / "root")
    assert (root.loss.encoding["chunks"], root.acc.encoding["chunks"]) == ((1, 2), (1,))
    assert root.step.encoding["chunks"] == (6,)  # a coordinate stays whole
    assert S.open_run(tmp_path / "root", "snapshots").W.encoding["chunks"] == (3, 4, 3)


def test_write_region_leaves_other_indices_nan(run: Path) -> None:
    written = {0: 1.5, 3: -2.0, 5: 9.0}
    for i, v in written.items():
        S.write_region(run, "", "step", i, {"loss": np.array([v, v + 1])})
    loss = S.load_run(run).loss.values
    for i in range(loss.shape[0]):
        if i in written:
            np.testing.assert_array_equal(loss[i], [written[i], written[i] + 1])
        else:
            assert np.isnan(loss[i]).all()
    assert np.isnan(S.load_run(run).acc.values).all()


def test_write_region_rejects_bad_requests(run: Path, tmp_path: Path) -> None:
    with pytest.raises(S.StoreError, match="no variable"):
        S.write_region(run, "", "step", 0, {"nope": np.zeros(2)})
    with pytest.raises(S.StoreError, match="no group"):
        S.write_region(run, "missing", "step", 0, {"loss": np.zeros(2)})
    with pytest.raises(S.StoreError, match="no run"):
        S.write_region(tmp_path / "elsewhere", "", "step", 0, {"loss": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        S.write_region(run, "", "step", 0, {"loss": np.zeros(3)})
    with pytest.raises(ValueError, match="dimensions"):
        S.write_region(run, "", "iteration", 0, {"loss": np.zeros(2)})
    with pytest.raises(IndexError):
        S.write_region(run, "", "step", 6, {"loss": np.zeros(2)})


def test_attrs_are_flat_and_format_is_reserved(run: Path, tmp_path: Path) -> None:
    S.update_attrs(run, status="complete", last_complete=np.int64(4), loss=0.5)
    attrs = S.read_attrs(run)
    assert (attrs["status"], attrs["last_complete"], attrs["loss"]) == ("complete", 4, 0.5)
    with pytest.raises(TypeError):
        S.update_attrs(run, nested={"a": 1})
    with pytest.raises(TypeError):
        S.update_attrs(run, nothing=None)
    with pytest.raises(ValueError):
        S.update_attrs(run, format="other")
    with pytest.raises(S.StoreError, match="already exists"):
        S.create_store(run, _groups(), _attrs())


def test_write_group_replaces_only_that_group(run: Path) -> None:
    S.write_group(run, "analysis/alignment", xr.Dataset({"a": ("x", [1.0, 2.0])}))
    S.write_group(run, "analysis/alignment", xr.Dataset({"b": ("y", [3.0])}))
    got = S.load_run(run, "analysis/alignment")
    assert list(got.data_vars) == ["b"]
    xr.testing.assert_identical(S.load_run(run, "problem"), _groups()["problem"])



@pytest.mark.parametrize("sibling", ["in-flight", "not-started"])
def test_failed_write_group_leaves_no_stage_to_a_write_still_running(run: Path, monkeypatch, sibling: str) -> None:
    # zarr gathers some writes; when one fails the others keep running, and one that reaches
    # `mkdir(parents=True)` after write_group removed the stage re-creates it (seen once in CI:
    # an empty `.zarr-tmp/group-*` left by a disk-full analysis). Here the first chunk write
    # fails while a sibling write of the same stage is in flight (entered, not yet written) or
    # not started (it starts once the stage is removed).
    from zarr.core.sync import _get_loop

    removed, entered = threading.Event(), threading.Event()
    real_rmtree, real_write = store_write.shutil.rmtree, S.AtomicLocalStore._write_atomic
    late: list = []

    def rmtree(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        if Path(path).name.startswith("group-"):
            removed.set()

    async def start_late(stage, value) -> None:
        if sibling == "not-started":
            await asyncio.to_thread(removed.wait, 10)
        with contextlib.suppress(OSError):  # refused: the stage was abandoned
            await stage.set("late/zarr.json", value)

    def write(self, key, value, exclusive=False):
        if key == "late/zarr.json":
            entered.set()
            removed.wait(0.5)  # long enough for an unguarded write_group to remove the stage first
        elif key == "a/c/0":
            late.append(asyncio.run_coroutine_threadsafe(start_late(self, value), _get_loop()))
            if sibling == "in-flight":
                assert entered.wait(10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, key, value, exclusive)

    monkeypatch.setattr(store_write.shutil, "rmtree", rmtree)
    monkeypatch.setattr(S.AtomicLocalStore, "_write_atomic", write)
    with pytest.raises(S.StoreWriteError, match="No space left on device"):
        S.write_group(run, "analysis/alignment", xr.Dataset({"a": ("x", [1.0, 2.0])}))
    late[0].result(timeout=20)
    assert removed.is_set()
    assert list((run / S.TMP_NAME).iterdir()) == []
    assert not S.has_group(run, "analysis/alignment")

DIE_BEFORE_RENAME = """
import os, signal, sys
import numpy as np
from purify import store as S

run, what = sys.argv[1], sys.argv[2]
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # the worst moment to die
if what == "attrs":
    S.update_attrs(run, last_complete=99)
elif what == "chunk":
    S.write_region(run, "", "step", 2, {"loss": np.array([7.0, 8.0])})
else:
    S.save_checkpoint(run, {"step": 99})
"""


@pytest.mark.parametrize("what", ["attrs", "chunk", "checkpoint"])
def test_kill_just_before_rename_keeps_old_state(run: Path, what: str) -> None:
    S.write_region(run, "", "step", 1, {"loss": np.array([1.0, 2.0])})
    S.update_attrs(run, last_complete=1)
    S.save_checkpoint(run, {"step": 1})
    proc = _spawn(DIE_BEFORE_RENAME, str(run), what)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a temp file left in a group folder makes zarr warn
        root = S.load_run(run)
    assert root.attrs["last_complete"] == 1
    np.testing.assert_array_equal(root.loss.values[1], [1.0, 2.0])
    assert np.isnan(root.loss.values[2]).all()
    assert S.load_checkpoint(run) == {"step": 1}
    store_files = [p.name for p in (run / S.STORE_NAME).rglob("*") if p.is_file()]
    assert all(name == "zarr.json" or name.isdigit() for name in store_files), store_files


# --------------------------------------------------------------------------------------
# SIGKILL at random moments
# --------------------------------------------------------------------------------------

# Shared by the writer subprocess and the checks, so both agree on the expected values.
KILL_HELPERS = """
import numpy as np
N_STEPS, N_SNAP, SNAP_EVERY, SNAP_SHAPE = 400, 40, 10, (1000, 1000)

def loss_at(i):
    return np.array([i + 0.25, -3.0 * i])

def snapshot_at(j):
    return np.random.default_rng(j).standard_normal(SNAP_SHAPE, dtype=np.float32)
"""
_namespace: dict[str, object] = {}
exec(KILL_HELPERS, _namespace)
K = SimpleNamespace(**{k: v for k, v in _namespace.items() if not k.startswith("__")})

KILL_WRITER = (
    KILL_HELPERS
    + """
import sys
import xarray as xr
from purify import store as S

run = sys.argv[1]
root = xr.Dataset(
    {"loss": (("step", "phase"), np.full((N_STEPS, 2), np.nan))},
    coords={"step": np.arange(N_STEPS), "phase": ["clean", "adversarial"]},
)
snaps = xr.Dataset(
    {"W": (("step", "row", "col"), np.full((N_SNAP, *SNAP_SHAPE), np.nan, np.float32))},
    coords={"step": np.arange(N_SNAP)},
)
print("ready", flush=True)
S.create_store(run, {"": root, "snapshots": snaps}, {"config_json": "{}"}, chunk_along={"snapshots": "step"})
print("created", flush=True)
for i in range(N_STEPS):
    S.write_region(run, "", "step", i, {"loss": loss_at(i)})
    if i % SNAP_EVERY == 0:
        j = i // SNAP_EVERY
        S.write_region(run, "snapshots", "step", j, {"W": snapshot_at(j)})
    S.update_attrs(run, last_complete=i)
    print(i, flush=True)
"""
)


def _kill_after(run: Path, wait_for: str, delay: float, out: dict[str, object]) -> None:
    proc = _spawn(KILL_WRITER, str(run))
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != wait_for:
        assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        lines.append(line)
    lines.append(line)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    lines += proc.stdout.read().split()
    proc.wait()
    out.update(returncode=proc.returncode, lines=lines)


def _check_killed_store(run: Path, created: bool) -> int:
    """Check a killed writer's store; return its last completed step (-1 if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stray temp files would make zarr warn
        try:
            root = S.load_run(run)
        except S.StoreError:
            assert not created, "a fully created store must open"
            return -1
        snaps = S.open_run(run, "snapshots")
    last = int(root.attrs.get("last_complete", -1))

    loss = root.loss.values
    for i in range(K.N_STEPS):
        row = loss[i]
        if i <= last:
            np.testing.assert_array_equal(row, K.loss_at(i))
        elif i > last + 1:
            assert np.isnan(row).all(), i
        elif not np.isnan(row).all():  # the write in flight: whole or absent
            np.testing.assert_array_equal(row, K.loss_at(i))

    for j in range(K.N_SNAP):
        w = snaps.W[j].values
        if K.SNAP_EVERY * j <= last:
            np.testing.assert_array_equal(w, K.snapshot_at(j))
        elif K.SNAP_EVERY * j > last + 1:
            assert np.isnan(w).all(), j
        elif not np.isnan(w).all():
            np.testing.assert_array_equal(w, K.snapshot_at(j))
    return last


def test_store_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    rng = np.random.default_rng(20240611)
    # One kill around store creation, the others while steps and snapshots are written.
    plan = [("ready", rng.uniform(0.0, 0.2))]
    plan += [("0", rng.uniform(0.0, 0.5)) for _ in range(3)]
    results: list[dict[str, object]] = [{} for _ in plan]
    threads = [
        threading.Thread(target=_kill_after, args=(tmp_path / f"run{k}", wait_for, delay, res))
        for k, ((wait_for, delay), res) in enumerate(zip(plan, results, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    for k, res in enumerate(results):
        assert res.get("returncode") == -signal.SIGKILL, res
        lines = res["lines"]
        last = _check_killed_store(tmp_path / f"run{k}", "created" in lines)
        reported = [int(line) for line in lines if line.isdigit()]
        assert max(reported, default=-1) <= last < K.N_STEPS - 1


# --------------------------------------------------------------------------------------
# Validation: foreign, corrupted, incomplete
# --------------------------------------------------------------------------------------


def test_missing_path_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(S.StoreError, match="no run at"):
        S.open_run(tmp_path / "absent")
    foreign = tmp_path / "foreign" / S.STORE_NAME
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(S.StoreError, match="not a purify run store"):
        S.open_run(foreign.parent)
    # A valid zarr store that some other program wrote.
    other = tmp_path / "other" / S.STORE_NAME
    xr.Dataset({"x": ("i", [1.0])}).to_zarr(other, zarr_format=3, consolidated=False)
    with pytest.raises(S.StoreError, match="not a purify run store"):
        S.open_run(other)
    with pytest.raises(S.StoreError, match="not a purify run store"):
        S.read_attrs(other)


@pytest.mark.parametrize(
    "content", [b"", b"{garbage", b"\xff\xfe", b"[1, 2]", b'{"zarr_format": 3}']
)
def test_garbage_root_metadata(run: Path, content: bytes) -> None:
    (run / S.STORE_NAME / "zarr.json").write_bytes(content)
    with pytest.raises(S.StoreError, match="not a purify run store"):
        S.open_run(run)


def test_garbage_array_metadata(run: Path) -> None:
    (run / S.STORE_NAME / "loss" / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_ty')
    with pytest.raises(S.StoreError, match="cannot open"):
        S.open_run(run)


def test_truncated_chunks(run: Path) -> None:
    S.write_region(run, "", "step", 0, {"loss": np.array([1.0, 2.0])})
    chunk = run / S.STORE_NAME / "loss" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    S.open_run(run)  # lazy: the data chunk is not read yet
    with pytest.raises(S.StoreError, match="cannot read"):
        S.load_run(run)
    coord = run / S.STORE_NAME / "step" / "c" / "0"
    coord.write_bytes(coord.read_bytes()[:5])
    with pytest.raises(S.StoreError, match="cannot open"):
        S.open_run(run)  # index coordinates are read on open


def test_missing_group_and_unknown_version(run: Path) -> None:
    with pytest.raises(S.StoreError, match="no group 'analysis/none'"):
        S.open_run(run, "analysis/none")
    with pytest.raises(S.StoreError, match="no group 'loss'"):
        S.open_run(run, "loss")  # an array, not a group
    meta_path = run / S.STORE_NAME / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["format_version"] = S.FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(S.StoreError, match="format version"):
        S.open_run(run)


def test_require_complete(run: Path) -> None:
    with pytest.raises(S.StoreError, match="running"):
        S.open_run(run, require_complete=True)
    S.update_attrs(run, status="failed", status_reason="loss diverged at step 40")
    with pytest.raises(S.StoreError, match="failed: loss diverged at step 40"):
        S.open_run(run, require_complete=True)
    S.update_attrs(run, status="complete", status_reason="")
    assert S.open_run(run, "snapshots", require_complete=True).sizes["step"] == 3


def test_half_created_store_is_not_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(S.write, "_merge_root_attrs", crash)
    with pytest.raises(S.StoreError):
        S.create_store(tmp_path / "run", _groups(), _attrs())
    monkeypatch.undo()
    with pytest.raises(S.StoreError, match="not a purify run store"):
        S.open_run(tmp_path / "run")
    # Nothing was computed (no checkpoint): --resume starts it afresh, in place.
    assert S.creation_interrupted(tmp_path / "run") == (True, _attrs()["config_json"])
    assert S.prepare_run_dir(tmp_path / "run", overwrite=False, resume=True) == "new"
    assert not S.store_path(tmp_path / "run").exists()
    assert S.prepare_run_dir(tmp_path / "run", overwrite=True, resume=False) == "new"
    assert os.listdir(tmp_path / "run") == []


# --------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------

LOCK_HOLDER = """
import sys, time
from purify.store import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_held_by_other_process_then_stale_after_sigkill(tmp_path: Path) -> None:
    holder = _spawn(LOCK_HOLDER, str(tmp_path))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(S.StoreError, match=f"in use by process {holder.pid}"):
            with S.RunLock(tmp_path):
                pass
        with pytest.raises(S.StoreError, match="in use"):
            S.prepare_run_dir(tmp_path, overwrite=True, resume=False)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / S.LOCK_NAME).exists()  # SIGKILL leaves it behind...
    with S.RunLock(tmp_path):  # ...and it is taken over as stale
        info = json.loads((tmp_path / S.LOCK_NAME).read_text())
        assert info["pid"] == os.getpid()
        assert {"hostname", "started"} <= info.keys()
    assert not (tmp_path / S.LOCK_NAME).exists()


def test_stale_and_garbage_locks(tmp_path: Path) -> None:
    lock = tmp_path / S.LOCK_NAME
    lock.write_text(json.dumps({"pid": _dead_pid(), "hostname": socket.gethostname()}))
    with S.RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()

    lock.write_text("not json")  # fresh garbage: its writer may still be filling it in
    with pytest.raises(S.StoreError, match="in use"):
        with S.RunLock(tmp_path):
            pass
    old = time.time() - 10 * S.LOCK_GRACE_SECONDS
    os.utime(lock, (old, old))
    with S.RunLock(tmp_path):
        pass
    assert not lock.exists()


def test_lock_released_on_exception_and_sweeps_temp_files(tmp_path: Path) -> None:
    (tmp_path / S.TMP_NAME).mkdir()
    (tmp_path / S.TMP_NAME / "123-abc").write_bytes(b"partial")
    (tmp_path / f"{S.CHECKPOINT_NAME}.tmp-123").write_bytes(b"partial")
    with pytest.raises(RuntimeError):
        with S.RunLock(tmp_path):
            assert not (tmp_path / S.TMP_NAME).exists()
            assert not (tmp_path / f"{S.CHECKPOINT_NAME}.tmp-123").exists()
            raise RuntimeError("boom")
    assert not (tmp_path / S.LOCK_NAME).exists()


# --------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_atomic_replace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    assert S.load_checkpoint(tmp_path) is None
    state = {"step": 3, "w": torch.arange(6.0).reshape(2, 3), "rng": np.random.default_rng(1)}
    S.save_checkpoint(tmp_path, state)
    loaded = S.load_checkpoint(tmp_path / S.STORE_NAME)  # the store path works too
    assert loaded is not None and loaded["step"] == 3
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["rng"].random() == np.random.default_rng(1).random()

    def half_save(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("killed mid-save")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError):
        S.save_checkpoint(tmp_path, {"step": 4})
    monkeypatch.undo()
    assert S.load_checkpoint(tmp_path)["step"] == 3  # type: ignore[index]
    assert sorted(os.listdir(tmp_path)) == [S.CHECKPOINT_NAME]


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    (tmp_path / S.CHECKPOINT_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(S.StoreError, match="unreadable"):
        S.load_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------
# Run folder rules
# --------------------------------------------------------------------------------------


def test_prepare_new_folders(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "run"
    assert S.prepare_run_dir(nested, overwrite=False, resume=False) == "new"
    assert nested.is_dir()
    assert S.prepare_run_dir(nested, overwrite=False, resume=False) == "new"  # empty
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(S.StoreError, match=str(blocker / "run")):
        S.prepare_run_dir(blocker / "run", overwrite=False, resume=False)
    with pytest.raises(S.StoreError, match="nothing to resume"):
        S.prepare_run_dir(tmp_path / "absent", overwrite=False, resume=True)
    # An empty folder holds nothing computed: --resume starts it (the CLI asks for its options).
    assert S.prepare_run_dir(nested, overwrite=False, resume=True) == "new"
    with pytest.raises(S.StoreError, match="together"):
        S.prepare_run_dir(nested, overwrite=True, resume=True)


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_refuses_foreign_folders(tmp_path: Path, overwrite: bool) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    (tmp_path / S.FIGURES_NAME).mkdir()
    with pytest.raises(S.StoreError, match="holds no purify run"):
        S.prepare_run_dir(tmp_path, overwrite=overwrite, resume=False)
    # A run beside foreign files is refused too, and nothing is deleted.
    S.create_store(tmp_path, _groups(), _attrs())
    with pytest.raises(S.StoreError, match="holds no purify run"):
        S.prepare_run_dir(tmp_path, overwrite=overwrite, resume=False)
    assert sorted(os.listdir(tmp_path)) == [S.TMP_NAME, S.FIGURES_NAME, S.STORE_NAME, "thesis.tex"]


def test_prepare_existing_run(run: Path) -> None:
    with pytest.raises(S.StoreError, match="already holds a run; pass --resume"):
        S.prepare_run_dir(run, overwrite=False, resume=False)
    # Killed before its first checkpoint: resumable from step 0.
    assert S.prepare_run_dir(run, overwrite=False, resume=True) == "resume"
    S.save_checkpoint(run, {"step": 1})
    assert S.prepare_run_dir(run, overwrite=False, resume=True) == "resume"
    (run / S.CHECKPOINT_NAME).unlink()
    S.update_attrs(run, status="complete")
    assert S.prepare_run_dir(run, overwrite=False, resume=True) == "resume"

    S.save_checkpoint(run, {"step": 1})
    (run / S.FIGURES_NAME).mkdir()
    (run / S.FIGURES_NAME / "loss.png").write_bytes(b"png")
    dead = {"pid": _dead_pid(), "hostname": socket.gethostname()}
    (run / S.LOCK_NAME).write_text(json.dumps(dead))
    assert S.prepare_run_dir(run, overwrite=True, resume=False) == "new"
    assert os.listdir(run) == []  # removed under the lock: the stale one taken over, then released
    S.create_store(run, _groups(), _attrs())  # ready for a new run


def test_a_callers_own_entries_are_part_of_its_run(run: Path) -> None:
    """The store knows no caller's file names: an entry it did not write is foreign unless the
    caller names it (as an experiment names its summary), and then removed with the run."""
    (run / "summary.md").write_text("claims")
    with pytest.raises(S.StoreError, match="holds no purify run"):
        S.prepare_run_dir(run, overwrite=True, resume=False)
    assert (run / "summary.md").exists()
    assert S.prepare_run_dir(run, overwrite=True, resume=False, also_ours=("summary.md",)) == "new"
    assert os.listdir(run) == []

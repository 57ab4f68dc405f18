"""On-disk layout of one simulation run: a zarr v3 store, a checkpoint and a lock.

A run folder ``RUN/`` holds::

    RUN/store.zarr/      zarr v3 store written with xarray (root group, "snapshots", "problem",
                         "analysis/<name>")
    RUN/checkpoint.pt    latest resumable training state, replaced atomically
    RUN/.lock            one-writer lock (see `RunLock`)
    RUN/.zarr-tmp/       temporary files of in-flight store writes
    RUN/figures/         written by the plotting code

Training pre-allocates the whole store with `create_store` and then fills it in by index
with `write_region`. Every file of the store is replaced atomically (temp file + ``os.replace``),
so a run killed with SIGKILL at any moment leaves a store that opens and whose completed
writes are intact. Writers are expected to hold the `RunLock` of the run.

Integrity (format version 2): every chunk of every array is on disk from creation on (NaN
where nothing was written yet, so a missing chunk means a truncated store, not "not yet
written"), every zstd frame carries a checksum (a corrupted chunk fails to decode instead of
giving wrong numbers), and the root attributes hold a manifest of the groups and arrays the
store must have (``layout_json``, kept by this module and hidden from `read_attrs` and
`open_run`). `open_run` checks the structure of the group it opens; `verify_run` checks the
whole store and decodes every chunk. Groups written later (`write_group`) are staged outside
the store and renamed into place, so they are either absent or complete.

Identity (format version 3): checksums catch damage that breaks a file, not damage that leaves
every file well-formed (an edited attribute, a chunk copied over another step's, an edited
shape). A store is therefore created with a random run identity (``run_id``) and keeps, in
``integrity_json``, a digest of every root attribute and of every other file of the store
(array and group metadata: shapes, dtypes, byte order, chunking; and every chunk). Each digest
is a BLAKE2b keyed with the run identity over the file's path in the store and its bytes, so a
chunk moved from another step, array or run does not match. This module recomputes them on
each of its writes, in the same atomic rewrite of the root metadata; a chunk write first adds
the new digest beside the old one and drops the old one once the chunk is in place, so a
writer killed in between leaves a store that still verifies. Checkpoints carry the run
identity and the config digest (`save_checkpoint`, `load_checkpoint`). Anyone who recomputes
every digest can still forge a store: this detects damage and mistakes, not an adversary who
knows the format.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

FORMAT_NAME = "purify-run"
#: 1: first layout. 2: every chunk written at creation, checksummed zstd frames, the
#: ``layout_json`` manifest. 3: the run identity and keyed digests of every attribute and file
#: (see the module docstring). All are read; older stores get the checks their content allows
#: (`integrity_note` says what cannot be checked).
FORMAT_VERSION = 3
#: First version with a run identity and digests.
IDENTITY_VERSION = 3
STORE_NAME = "store.zarr"
CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = ".lock"
FIGURES_NAME = "figures"
TMP_NAME = ".zarr-tmp"
SUMMARY_NAME = "summary.md"  # written beside the store by `purify experiment`

#: Root attribute holding the manifest ``{group: [array, ...]}`` of a version-2 store.
LAYOUT_ATTR = "layout_json"

#: Root attribute holding the random identity of a version-3 store (32 hex digits).
RUN_ID_ATTR = "run_id"

#: Root attribute holding ``{"attrs": {name: digest}, "files": {path: [digest, ...]}}``.
INTEGRITY_ATTR = "integrity_json"

#: Root attributes owned by this module; callers may not set them.
RESERVED_ATTRS = frozenset({"format", "format_version", LAYOUT_ATTR, RUN_ID_ATTR, INTEGRITY_ATTR})

#: Root attributes kept by this module and hidden from `read_attrs` and `open_run` (the run
#: identity too: two runs of one config and seed give identical datasets).
HIDDEN_ATTRS = frozenset({LAYOUT_ATTR, INTEGRITY_ATTR, RUN_ID_ATTR})

#: Values of the root ``status`` attribute: ``running`` (being written, or killed while it
#: was: `writer_pid` tells), ``stopped`` (Ctrl-C/SIGTERM, resumable), ``complete``, ``failed``
#: (with ``status_reason``).
STATUSES = ("running", "stopped", "complete", "failed")

#: A lock file that cannot be parsed is only treated as stale after this many seconds,
#: because its owner may be between creating it and writing its content.
LOCK_GRACE_SECONDS = 5.0

AttrValue = str | int | float | bool

# checksum=True: a flipped bit in a chunk must fail to decode rather than read as a number.
_COMPRESSORS = (ZstdCodec(level=3, checksum=True),)
_CHECKPOINT_TMP_PREFIX = CHECKPOINT_NAME + ".tmp-"
_STAGE_PREFIX = "group-"


class StoreError(Exception):
    """A problem with a run folder/store, with a one-line message fit to show a user.

    The CLI prints the message and exits with status 2.
    """


class StoreWriteError(StoreError):
    """Writing to a store failed part-way through work (disk full, permissions, I/O error).

    What was written before stays intact. The CLI prints the message and exits with status 1
    (a failure during work), not 2 (bad input).
    """


# --------------------------------------------------------------------------------------
# Fault injection (reliability tests)
# --------------------------------------------------------------------------------------

#: ``PURIFY_FAULT_KILL_AT=N`` makes the process SIGKILL itself at its N-th fault point: the
#: moments just before a store file, a checkpoint or a staged group is renamed into place.
#: Read at every fault point (one dictionary lookup, next to a file write), so a process
#: forked after import can be given its own N.
_fault_count = 0

#: Set to a list to record the label of every fault point reached (tests plan kills with it).
FAULT_TRACE: list[str] | None = None


def fault_point(label: str) -> None:
    """Mark a moment where a kill is most damaging; see ``PURIFY_FAULT_KILL_AT`` above.

    `label` says what is in flight: ``store:<key>``, ``checkpoint`` or ``group:<path>``.
    """
    global _fault_count
    if FAULT_TRACE is not None:
        FAULT_TRACE.append(label)
    kill_at = os.environ.get("PURIFY_FAULT_KILL_AT")
    if not kill_at:
        return
    _fault_count += 1
    if _fault_count == int(kill_at):
        sys.stderr.write(f"purify: fault injection: SIGKILL at {label}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


def store_path(run: str | Path) -> Path:
    """Return the ``store.zarr`` path of a run.

    Parameters
    ----------
    run : str or Path
        The run folder, or the ``store.zarr`` path itself.

    Returns
    -------
    Path
        ``RUN/store.zarr``.
    """
    path = Path(run)
    return path if path.name == STORE_NAME else path / STORE_NAME


def run_dir(run: str | Path) -> Path:
    """Return the run folder, given the run folder or its ``store.zarr`` path."""
    return store_path(run).parent


# --------------------------------------------------------------------------------------
# Digests (format version 3)
# --------------------------------------------------------------------------------------


def _digest(run_id: str, name: str, data: bytes) -> str:
    """BLAKE2b of `data` keyed with the run identity, over its `name` (what and where it is)."""
    h = hashlib.blake2b(key=run_id.encode()[:64], digest_size=16)
    h.update(name.encode())
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def _attr_digest(run_id: str, name: str, value: Any) -> str:
    return _digest(run_id, f"attr:{name}", json.dumps(value, sort_keys=True).encode())


def _file_digest(run_id: str, key: str, data: bytes) -> str:
    """Digest of the store file at `key` (e.g. ``snapshots/W/c/3/0/0``): its key is its place."""
    return _digest(run_id, f"file:{key}", data)


def config_digest(run_id: str, config_json: str) -> str:
    """The digest of a run's ``config_json`` attribute, as its integrity record holds it."""
    return _attr_digest(run_id, "config_json", config_json)


def _integrity(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed integrity record of a version-3 store's root attributes (ValueError if damaged)."""
    try:
        record = json.loads(attrs[INTEGRITY_ATTR])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError("missing or not JSON") from e
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("attrs"), dict)
        and isinstance(record.get("files"), dict)
        and all(isinstance(v, list) for v in record["files"].values())
    )
    if not ok:
        raise ValueError("not an integrity record")
    return record


def _has_identity(attrs: Mapping[str, Any]) -> bool:
    version = attrs.get("format_version")
    return isinstance(version, int) and version >= IDENTITY_VERSION


def integrity_note(attrs: Mapping[str, Any]) -> str | None:
    """What verification could not check in this store (None: everything), for a user note.

    Parameters
    ----------
    attrs : Mapping
        Root attributes of a store that passed `verify_run`.
    """
    if _has_identity(attrs):
        return None
    return (f"this store was written before run identities (format version "
            f"{attrs.get('format_version')}): edited attributes, moved chunks and foreign "
            "checkpoints cannot be detected in it")


# --------------------------------------------------------------------------------------
# Atomic zarr store
# --------------------------------------------------------------------------------------


class AtomicLocalStore(LocalStore):
    """A `zarr.storage.LocalStore` whose every write lands whole or not at all.

    zarr >= 3.1.3 already renames temp files into place, but it leaves them next to the
    target: a write killed mid-way then leaves ``zarr.<hex>.partial`` inside a group
    folder, and every later listing of that group warns about an unrecognised object.
    Here temp files live in ``RUN/.zarr-tmp/`` (same filesystem, outside the hierarchy),
    which also keeps writes atomic on zarr versions that did not rename at all.
    """

    #: Prefix of the keys in fault-point labels (a staged group names its final place).
    fault_prefix = ""

    #: When a list, writes stop at their temp file and are recorded here as ``(key, temp)``;
    #: the caller records their digests and then renames them into place (`write_region`).
    deferred: list[tuple[str, Path]] | None = None

    @property
    def tmp_dir(self) -> Path:
        """Folder of in-flight temp files, beside the store root."""
        return self.root.parent / TMP_NAME

    def _write_atomic(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        tmp = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with tmp.open("xb") as f:
                f.write(value.as_numpy_array())
            if self.deferred is not None and not exclusive and not key.endswith("zarr.json"):
                self.deferred.append((key, tmp))
                return
            fault_point(f"store:{self.fault_prefix}{key}")
            if exclusive:
                os.link(tmp, path)  # raises FileExistsError instead of replacing
                tmp.unlink()
            else:
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def set(self, key: str, value: Buffer) -> None:
        await self._ensure_open()
        self._check_writable()
        await asyncio.to_thread(self._write_atomic, key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._ensure_open()
        self._check_writable()
        with contextlib.suppress(FileExistsError):
            await asyncio.to_thread(self._write_atomic, key, value, True)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        self._check_writable()
        self._write_atomic(key, value)


def _writable_store(run: str | Path) -> AtomicLocalStore:
    return AtomicLocalStore(store_path(run))


# --------------------------------------------------------------------------------------
# Creating and writing
# --------------------------------------------------------------------------------------


def _check_attrs(attrs: Mapping[str, Any], *, allow_reserved: bool = False) -> dict[str, AttrValue]:
    """Return `attrs` as plain JSON scalars, refusing nested values, None and reserved keys."""
    out: dict[str, AttrValue] = {}
    for key, value in attrs.items():
        if not allow_reserved and key in RESERVED_ATTRS:
            raise ValueError(f"attribute {key!r} is reserved for the store format")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, str | bool | int | float):
            raise TypeError(
                f"attribute {key!r} must be a str, int, float or bool, not {type(value).__name__}"
            )
        out[str(key)] = value
    return out


def _encoding(group: str, ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Chunks and compressors for every variable of one group.

    Data variables of "snapshots" get one chunk per step so that writing one snapshot
    rewrites only its own chunk; everything else is a single chunk, since the root group is
    small and rewriting its whole chunk per step keeps each step's write a single file.
    """
    encoding = {}
    for name, var in ds.variables.items():
        chunks = [max(1, n) for n in var.shape]
        if group == "snapshots" and name in ds.data_vars and "step" in var.dims:
            chunks[var.dims.index("step")] = 1
        encoding[str(name)] = {"chunks": tuple(chunks), "compressors": _COMPRESSORS}
    return encoding


def _prepare_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Copy `ds` ready for writing: no inherited encoding, variable-length strings.

    Fixed-width numpy strings would be stored with zarr's "fixed_length_utf32" type, which has
    no v3 specification and warns on every write; object strings become the spec'd "string".
    """
    ds = ds.drop_encoding()
    for name, var in ds.variables.items():
        if var.dtype.kind == "U":
            ds[name] = var.astype(object)
    _check_attrs(ds.attrs, allow_reserved=True)
    return ds


def _write_group(
    store: AtomicLocalStore, group: str, ds: xr.Dataset, mode: str, *, at: str | None = None
) -> None:
    """Write `ds` as `group` (encoded as that group), at path `at` of `store` (default `group`).

    Chunks equal to the fill value (NaN) are written too: in a version-2 store every chunk
    exists, so a missing one is damage.
    """
    ds = _prepare_dataset(ds)
    where = group if at is None else at
    ds.to_zarr(
        store,
        group=where or None,
        mode=mode,
        zarr_format=3,
        consolidated=False,
        encoding=_encoding(group, ds),
        write_empty_chunks=True,
    )


def _read_node(meta_path: Path) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` at `meta_path`, or None if absent or unreadable."""
    try:
        return _read_json(meta_path)
    except (OSError, ValueError):
        return None


def _scan_layout(root: Path, prefix: str = "") -> dict[str, list[str]]:
    """``{group: sorted array names}`` of every group found on disk below `root`.

    Group paths are relative to `root`, with `prefix` (``"a/b/"``) put in front.
    """
    layout: dict[str, list[str]] = {}
    for meta_path in sorted(root.rglob("zarr.json")):
        meta = _read_node(meta_path)
        if meta is None or meta.get("node_type") != "group":
            continue
        rel = meta_path.parent.relative_to(root).as_posix()
        group = (prefix + ("" if rel == "." else rel)).strip("/")
        layout[group] = sorted(
            child.name
            for child in meta_path.parent.iterdir()
            if (_read_node(child / "zarr.json") or {}).get("node_type") == "array"
        )
    return layout


def _merge_root_attrs(
    store: AtomicLocalStore,
    attrs: Mapping[str, AttrValue],
    *,
    files: Mapping[str, list[str]] | None = None,
    drop: str | None = None,
) -> None:
    """Merge `attrs` into the root attributes; in a version-3 store also refresh its digests.

    `files` replaces the accepted digests of those store files; `drop` (a group path) first
    forgets the files below it.
    """
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    merged = dict(root.attrs) | dict(attrs)
    run_id = merged.get(RUN_ID_ATTR)
    if _has_identity(merged) and isinstance(run_id, str):
        try:
            known = _integrity(merged)["files"]
        except ValueError:
            known = {}
        if drop is not None:
            known = {k: v for k, v in known.items() if not k.startswith(drop + "/")}
        known |= dict(files or {})
        digests = {k: _attr_digest(run_id, k, v) for k, v in merged.items() if k != INTEGRITY_ATTR}
        record = {"attrs": digests, "files": known}
        attrs = dict(attrs) | {INTEGRITY_ATTR: json.dumps(record, sort_keys=True, separators=(",", ":"))}
    # One rewrite of the root zarr.json, so the new attributes land together or not at all.
    # (``root.attrs.update`` would rewrite it once per key, e.g. "complete" before its summary.)
    root.update_attributes(dict(attrs))


def _files_below(root: Path, run_id: str, prefix: str = "") -> dict[str, list[str]]:
    """``{key: [digest]}`` of every file below `root` but its root ``zarr.json`` (keys get `prefix`)."""
    out = {}
    for f in sorted(root.rglob("*")):
        key = f.relative_to(root).as_posix()
        if f.is_file() and (prefix or key != "zarr.json"):
            out[prefix + key] = [_file_digest(run_id, prefix + key, f.read_bytes())]
    return out


def create_store(
    run: str | Path,
    groups: Mapping[str, xr.Dataset],
    attrs: Mapping[str, AttrValue],
) -> None:
    """Write the full, pre-allocated store of a run.

    Parameters
    ----------
    run : str or Path
        Run folder (created if missing) or its ``store.zarr`` path.
    groups : Mapping[str, xr.Dataset]
        Dataset of each group, full shape with final coordinates, holding NaN where values
        are still to come. ``""`` is the root group (an empty root is written if absent).
    attrs : Mapping[str, str | int | float | bool]
        Root attributes, e.g. ``config_json``. ``format``/``format_version`` are added here;
        ``status="running"`` and ``status_reason=""`` unless given.

    Raises
    ------
    StoreError
        If a store already exists there or cannot be written.

    Notes
    -----
    The root attribute ``format`` is written last, so a store that has it was fully
    created; one killed during creation is not recognised as a run store.
    """
    run_id = uuid.uuid4().hex
    root_attrs = {"status": "running", "status_reason": ""} | _check_attrs(attrs) | {RUN_ID_ATTR: run_id}
    path = store_path(run)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StoreError(f"{path} already exists; remove it or pass --overwrite")
    store = _writable_store(path)
    root_ds = groups.get("", xr.Dataset())
    try:
        _write_group(store, "", root_ds.assign_attrs(root_attrs), mode="w-")
        for group in sorted(g for g in groups if g):  # parents before children
            _write_group(store, group, groups[group], mode="w-")
        layout = json.dumps(_scan_layout(path), sort_keys=True)
        _merge_root_attrs(
            store, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, LAYOUT_ATTR: layout},
            files=_files_below(path, run_id),
        )
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from e


class _StagingStore(AtomicLocalStore):
    """The store of a group being staged in ``RUN/.zarr-tmp/``; its temp files go beside it."""

    @property
    def tmp_dir(self) -> Path:
        return self.root.parent


def write_group(run: str | Path, group: str, ds: xr.Dataset) -> None:
    """Write (or replace) one non-root group of an existing store, e.g. ``analysis/<name>``.

    The group is written in full to a staging folder in ``RUN/.zarr-tmp/`` and then renamed
    into place, so a reader, or a writer killed at any moment, sees the old group, no group or
    the whole new group, never a part of one. In a version-2 store the manifest drops the group
    before an old one is moved aside and lists it once the new one is in place; `has_group`
    tells whether it is there. Parent groups are created as needed. The rest of the store is
    untouched. Callers hold the run's `RunLock` (it also sweeps staging folders of killed writers).

    Parameters
    ----------
    run : str or Path
        Run folder or its ``store.zarr`` path.
    group : str
        Group path, not ``""``.
    ds : xr.Dataset
        Its content.

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    StoreWriteError
        If the group cannot be written (disk full, permissions, ...); a group being replaced
        may then be absent.
    """
    group = group.strip("/")
    if not group:
        raise ValueError("write_group cannot replace the root group; use create_store")
    path = store_path(run)
    meta = _root_metadata(path)
    layout = _layout(path, meta)
    run_id = meta["attributes"].get(RUN_ID_ATTR) if _has_identity(meta["attributes"]) else None
    tmp = path.parent / TMP_NAME
    stage = tmp / f"{_STAGE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    old: Path | None = None
    try:
        tmp.mkdir(exist_ok=True)
        staging = _StagingStore(stage)
        staging.fault_prefix = group + "/"
        _write_group(staging, group, ds, mode="w-", at="")
        arrays = _scan_layout(stage)[""]
        files = _files_below(stage, run_id, group + "/") if run_id is not None else {}
        store = _writable_store(path)
        parts = group.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for parent in parents:
            if not (path / parent / "zarr.json").is_file():
                zarr.open_group(store, mode="a", path=parent, zarr_format=3)
            if run_id is not None:
                key = f"{parent}/zarr.json"
                files[key] = [_file_digest(run_id, key, (path / key).read_bytes())]
        target = path / group
        if layout is not None and group in layout:
            del layout[group]
            _merge_root_attrs(store, {LAYOUT_ATTR: json.dumps(layout, sort_keys=True)}, drop=group)
        if target.exists():
            old = tmp / f"old-{os.getpid()}-{uuid.uuid4().hex}"
            os.rename(target, old)
        fault_point(f"group:{group}")
        os.rename(stage, target)
        if layout is not None:
            layout.update({p: layout.get(p, []) for p in parents})
            layout[group] = arrays
            _merge_root_attrs(store, {LAYOUT_ATTR: json.dumps(layout, sort_keys=True)},
                              files=files, drop=group)
    except OSError as e:
        raise StoreWriteError(f"cannot write group {group!r} of {path}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _open_zarr_group(run: str | Path, group: str, store: AtomicLocalStore | None = None) -> zarr.Group:
    path = store_path(run)
    _root_metadata(path)  # never write into a foreign or half-created store
    try:
        return zarr.open_group(store or _writable_store(path), mode="r+", path=group, zarr_format=3)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{path} has no group {group!r}") from e


def write_region(
    run: str | Path, group: str, dim: str, index: int, data: Mapping[str, np.ndarray]
) -> None:
    """Write each named variable at position `index` along `dim`.

    Each value has its variable's shape without `dim`. Every chunk write is atomic, but the
    variables are written one after another: record progress (e.g. with `update_attrs`)
    after this returns.

    Parameters
    ----------
    run : str or Path
        Run folder or its ``store.zarr`` path.
    group : str
        Group path (``""`` for the root).
    dim : str
        Dimension to index.
    index : int
        Position along `dim`, ``0 <= index < size``.
    data : Mapping[str, np.ndarray]
        Values by variable name.

    Raises
    ------
    StoreError
        If the store, group or a variable does not exist.
    ValueError, IndexError
        If a variable lacks `dim`, a value has the wrong shape, or `index` is out of range.
    """
    path = store_path(run)
    attrs = _root_metadata(path)["attributes"]
    if not _has_identity(attrs):
        _write_region(_open_zarr_group(run, group), run, group, dim, index, data)
        return
    # Chunks are written to temp files first; their digests are then accepted beside the old
    # ones, the files renamed into place, and the old digests dropped: killed at any moment,
    # the store verifies (each chunk is the old or the new one, and both are accepted).
    store = _writable_store(path)
    store.deferred = deferred = []
    try:
        _write_region(_open_zarr_group(run, group, store), run, group, dim, index, data)
        run_id = attrs[RUN_ID_ATTR]
        new = {key: _file_digest(run_id, key, tmp.read_bytes()) for key, tmp in deferred}
        try:
            known = _integrity(attrs)["files"]
        except ValueError:
            known = {}
        _merge_root_attrs(_writable_store(path), {}, files={k: [*known.get(k, []), d] for k, d in new.items()})
        for key, tmp in deferred:
            fault_point(f"store:{key}")
            os.replace(tmp, path / key)
        deferred.clear()
        _merge_root_attrs(_writable_store(path), {}, files={k: [d] for k, d in new.items()})
    finally:
        for _, tmp in deferred:
            tmp.unlink(missing_ok=True)


def _write_region(
    zgroup: zarr.Group, run: str | Path, group: str, dim: str, index: int, data: Mapping[str, np.ndarray]
) -> None:
    for name, value in data.items():
        try:
            # Keep chunks that equal the fill value: a version-2 store has every chunk.
            with zarr.config.set({"array.write_empty_chunks": True}):
                array = zgroup[name]
        except KeyError as e:
            raise StoreError(f"{store_path(run)}: group {group!r} has no variable {name!r}") from e
        dims = tuple(array.metadata.dimension_names or ())
        if dim not in dims:
            raise ValueError(f"variable {name!r} has dimensions {dims}, not {dim!r}")
        axis = dims.index(dim)
        if not 0 <= index < array.shape[axis]:
            raise IndexError(f"index {index} out of range for {dim!r} of size {array.shape[axis]}")
        value = np.asarray(value)
        expected = array.shape[:axis] + array.shape[axis + 1 :]
        if value.shape != expected:
            raise ValueError(f"value for {name!r} has shape {value.shape}, expected {expected}")
        key: list[int | slice] = [slice(None)] * array.ndim
        key[axis] = index
        array[tuple(key)] = value


def update_attrs(run: str | Path, **attrs: AttrValue) -> None:
    """Merge `attrs` into the root attributes with one atomic rewrite of the root metadata.

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    """
    checked = _check_attrs(attrs)
    path = store_path(run)
    _root_metadata(path)
    _merge_root_attrs(_writable_store(path), checked)


def read_attrs(run: str | Path) -> dict[str, Any]:
    """Return the root attributes of a run store.

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    """
    path = store_path(run)
    attrs = _visible_attrs(_root_metadata(path)["attributes"])
    _check_json_attrs(path, attrs)
    return attrs


#: Root attributes holding JSON text, and whether the empty string is allowed (not yet written).
_JSON_ATTRS = {"config_json": False, "summary_json": True}


def _check_json_attrs(path: Path, attrs: Mapping[str, Any]) -> None:
    """Refuse a root attribute holding JSON text that does not parse to an object: readers
    parse them and would fail deep inside with any exception type."""
    for name, may_be_empty in _JSON_ATTRS.items():
        if name not in attrs or (may_be_empty and attrs[name] == ""):
            continue
        value = attrs[name]
        try:
            ok = isinstance(value, str) and isinstance(json.loads(value), dict)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            shown = " ".join(repr(value).split())[:40]
            raise StoreError(f"{path}: its {name} attribute is damaged ({shown}, not a JSON object); "
                             f"purify simulate --out {path.parent} --overwrite re-runs it from its options")


def _visible_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Root attributes without this module's bookkeeping (manifest, identity, digests)."""
    return {k: v for k, v in attrs.items() if k not in HIDDEN_ATTRS}


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    meta = json.loads(path.read_bytes())
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    return meta


def _root_metadata(path: Path) -> dict[str, Any]:
    """Read and validate the root ``zarr.json`` of a store; return it."""
    if not path.exists():
        raise StoreError(f"no run at {path.parent}")
    not_ours = f"{path} is not a purify run store"
    try:
        meta = _read_json(path / "zarr.json")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise StoreError(f"{not_ours} (it has no root metadata zarr.json)") from e
    except OSError as e:
        raise StoreError(f"cannot read {path / 'zarr.json'}: {e.strerror or e}") from e
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError included
        raise StoreError(f"{not_ours} (its root metadata zarr.json is not a JSON object)") from e
    attrs = meta.get("attributes")
    if (
        meta.get("zarr_format") != 3
        or meta.get("node_type") != "group"
        or not isinstance(attrs, dict)
        or attrs.get("format") != FORMAT_NAME
    ):
        raise StoreError(f"{not_ours} (no purify format attribute: another program's zarr store, "
                         "or one killed while it was being created)")
    version = attrs.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise StoreError(
            f"{path} has store format version {version!r}; this purify reads versions "
            f"1 to {FORMAT_VERSION}"
        )
    _check_attr_digests(path, attrs)
    return meta


#: What to do with a store whose content does not match its digests.
_UNTRUSTED = ("its numbers cannot be trusted; run it again with purify simulate --out RUN "
              "--overwrite and its options")


def _inconsistent(path: Path, what: str) -> StoreError:
    hint = _UNTRUSTED.replace("RUN", str(path.parent))
    return StoreError(f"{path} is inconsistent: {what} (edited or damaged); {hint}")


def _check_attr_digests(path: Path, attrs: Mapping[str, Any]) -> None:
    """Check every root attribute against its digest (version 3); refuse identity in older stores."""
    if not _has_identity(attrs):
        if RUN_ID_ATTR in attrs or INTEGRITY_ATTR in attrs:  # a version-3 store edited back
            raise _inconsistent(path, f"format version {attrs.get('format_version')!r} predates the "
                                      "run identity and digests it holds")
        return
    run_id = attrs.get(RUN_ID_ATTR)
    if not isinstance(run_id, str) or not run_id:
        raise _inconsistent(path, f"its run identity ({RUN_ID_ATTR}) is missing")
    try:
        recorded = _integrity(attrs)["attrs"]
    except ValueError as e:
        raise _inconsistent(path, f"its digest record ({INTEGRITY_ATTR}) is {e}") from None
    names = set(attrs) - {INTEGRITY_ATTR}
    for name in sorted(names | set(recorded)):
        what = (f"its manifest of groups and arrays ({LAYOUT_ATTR})" if name == LAYOUT_ATTR
                else f"root attribute {name!r}")
        if name not in names:
            raise _inconsistent(path, f"{what} was removed")
        if name not in recorded:
            raise _inconsistent(path, f"{what} was added")
        if recorded[name] != _attr_digest(run_id, name, attrs[name]):
            raise _inconsistent(path, f"{what} does not match its digest")


def _check_file_digests(path: Path, attrs: Mapping[str, Any], groups: Mapping[str, list[str]],
                        *, chunks: bool) -> None:
    """Check the metadata of `groups` and their arrays (and with `chunks` every chunk) against
    their digests. Every file must be recorded: one copied in from elsewhere has no digest."""
    if not _has_identity(attrs):
        return
    run_id = attrs[RUN_ID_ATTR]
    files = _integrity(attrs)["files"]  # parsed by _check_attr_digests already

    def check(key: str, what: str) -> None:
        try:
            data = (path / key).read_bytes()
        except OSError as e:
            raise StoreError(f"cannot read {path / key}: {e.strerror or e}") from e
        if _file_digest(run_id, key, data) not in files.get(key, ()):
            raise _inconsistent(path, f"{what} does not match its digest")

    for group in sorted(groups):
        if group:
            check(f"{group}/zarr.json", f"the metadata of group {group!r}")
        for name in groups[group]:
            label = f"{group}/{name}" if group else name
            check(f"{label}/zarr.json", f"the metadata of array {label!r} (shape, type, byte order "
                                        "or chunking)")
            if not chunks:
                continue
            keys = _chunk_keys(_read_json(path / label / "zarr.json")) or ()
            for key in keys:
                check(f"{label}/{key}", f"chunk {key} of array {label!r}")


def _layout(path: Path, meta: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The manifest ``{group: [array, ...]}`` of a version-2 store; None for version 1."""
    attrs = meta["attributes"]
    if attrs.get("format_version", 1) < 2:
        return None
    try:
        layout = json.loads(attrs[LAYOUT_ATTR])
        if not isinstance(layout, dict) or not all(
            isinstance(g, str) and isinstance(a, list) and all(isinstance(n, str) for n in a)
            for g, a in layout.items()
        ):
            raise ValueError("not a {group: [array, ...]} object")
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"cannot open {path}: its manifest of groups and arrays ({LAYOUT_ATTR}) "
                         "is missing or damaged") from e
    return layout


def _chunk_keys(meta: Mapping[str, Any]) -> list[str] | None:
    """Keys of every chunk of an array, from its metadata (None: a grid this code cannot list)."""
    shape = meta.get("shape")
    grid = meta.get("chunk_grid") or {}
    encoding = meta.get("chunk_key_encoding") or {}
    if grid.get("name") != "regular" or encoding.get("name") not in ("default", "v2"):
        return None
    chunks = (grid.get("configuration") or {}).get("chunk_shape")
    if (
        not isinstance(shape, list)
        or not isinstance(chunks, list)
        or len(shape) != len(chunks)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or not all(isinstance(c, int) and c > 0 for c in chunks)
    ):
        raise ValueError("shape or chunk shape is malformed")
    counts = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    default = encoding["name"] == "default"
    sep = (encoding.get("configuration") or {}).get("separator", "/" if default else ".")
    if default:
        return [sep.join(["c", *map(str, index)]) for index in np.ndindex(*counts)]
    return [sep.join(map(str, index)) or "0" for index in np.ndindex(*counts)]


def _check_array(path: Path, group: str, name: str, *, chunks: bool) -> None:
    """Check one array's metadata, and with `chunks` that every chunk file exists."""
    label = f"{group}/{name}" if group else name
    where = path / group / name
    try:
        meta = _read_json(where / "zarr.json")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise StoreError(f"cannot open {path}: array {label!r} is missing (no {label}/zarr.json); "
                         "the store is truncated or damaged") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot open {path}: the metadata of array {label!r} is unreadable "
                         f"({_one_line(e)}); the store is damaged") from e
    if meta.get("node_type") != "array":
        raise StoreError(f"cannot open {path}: {label!r} is not an array; the store is damaged")
    if not chunks:
        return
    try:
        keys = _chunk_keys(meta)
    except ValueError as e:
        raise StoreError(f"cannot open {path}: the metadata of array {label!r} is damaged ({e})") from e
    for key in keys or ():
        if not (where / key).is_file():
            raise StoreError(f"cannot open {path}: chunk {key} of array {label!r} is missing; "
                             "the store is truncated or damaged")


def _check_group(path: Path, group: str, meta: Mapping[str, Any] | None = None) -> None:
    """Check that `group` exists; in a version-2 store also its arrays and their chunks.

    `meta` is the root metadata (read here if not given).
    """
    meta = _root_metadata(path) if meta is None else meta
    layout = _layout(path, meta)
    if layout is not None and group not in layout:
        raise StoreError(f"{path} has no group {group!r}")
    if group:
        node = _read_node(path / group / "zarr.json")
        if node is None and layout is not None:
            raise StoreError(f"cannot open {path}: group {group!r} is missing or its metadata is "
                             "unreadable; the store is truncated or damaged")
        if node is None or node.get("node_type") != "group":
            raise StoreError(f"{path} has no group {group!r}")
    if layout is not None:
        for name in layout[group]:
            _check_array(path, group, name, chunks=True)


def _check_status(run: str | Path, attrs: Mapping[str, Any]) -> None:
    status = attrs.get("status")
    if status == "complete":
        return
    if status == "failed":
        reason = attrs.get("status_reason") or "no reason recorded"
        raise StoreError(f"run at {run_dir(run)} failed: {reason}")
    raise StoreError(f"run at {run_dir(run)} is not complete (status: {status})")


def open_run(run: str | Path, group: str = "", *, require_complete: bool = False) -> xr.Dataset:
    """Open one group of a run store, lazily, after validating it.

    Parameters
    ----------
    run : str or Path
        Run folder or its ``store.zarr`` path.
    group : str
        Group path, ``""`` for the root.
    require_complete : bool
        Refuse a run whose status is not ``"complete"``.

    Returns
    -------
    xr.Dataset
        The group, backed by the store (values are read on access).

    Raises
    ------
    StoreError
        If the path holds no purify run store of a known version, lacks the group, is not
        complete while `require_complete`, or cannot be opened. Data chunks are read lazily,
        so a corrupted data chunk only fails on access; use `load_run` to check all of them.
    """
    path = store_path(run)
    meta = _root_metadata(path)
    _check_group(path, group, meta)
    layout = _layout(path, meta)
    if layout is not None:
        _check_file_digests(path, meta["attributes"], {group: layout[group]}, chunks=False)
    if require_complete:
        _check_status(run, meta["attributes"])
    try:
        ds = xr.open_zarr(path, group=group or None, consolidated=False, zarr_format=3)
    except Exception as e:  # a foreign or corrupted store can fail in any zarr/xarray layer
        raise StoreError(f"cannot open {path} (group {group!r}): {_one_line(e)}") from e
    if not group:
        for name in HIDDEN_ATTRS:
            ds.attrs.pop(name, None)
    _check_byte_order(path, group, [str(name) for name in ds.variables])
    return ds


def _endian(meta_path: Path) -> str | None:
    """The byte order the ``bytes`` codec of an array's metadata declares, if any."""
    for codec in (_read_node(meta_path) or {}).get("codecs") or ():
        if isinstance(codec, dict) and codec.get("name") == "bytes":
            return (codec.get("configuration") or {}).get("endian")
    return None


def _check_byte_order(path: Path, group: str, names: list[str]) -> None:
    """Refuse an array declaring another byte order than the store's ``step`` coordinate: one
    process writes a whole store in one byte order, so a different one is an edited metadata
    file, whose numbers read byte-swapped (and plotting libraries fail on them)."""
    reference = _endian(path / "step" / "zarr.json")
    if reference is None:
        return
    for name in names:
        declared = _endian(path / group / name / "zarr.json")
        if declared is not None and declared != reference:
            label = f"{group}/{name}" if group else name
            raise StoreError(f"cannot open {path}: array {label!r} declares {declared}-endian numbers, the "
                             f"rest of the store {reference}-endian; its metadata was edited or damaged; "
                             f"purify simulate --out {path.parent} --overwrite re-runs it")


def load_run(run: str | Path, group: str = "", *, require_complete: bool = False) -> xr.Dataset:
    """Like `open_run`, but read every value into memory, so corrupted chunks raise here.

    Raises
    ------
    StoreError
        As `open_run`, and if any chunk cannot be read or decoded.
    """
    ds = open_run(run, group, require_complete=require_complete)
    try:
        return ds.load()
    except Exception as e:  # decoding errors come from codecs of any kind
        raise StoreError(f"cannot read {store_path(run)} (group {group!r}): {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "no details"
    return f"{type(e).__name__}: {text[:200]}"


async def _decode_array(reader: LocalStore, label: str) -> str | None:
    """Open array `label` and decode each of its chunks; describe the first failure, if any."""
    from zarr.api.asynchronous import open_array

    try:
        array = await open_array(store=reader, path=label, mode="r", zarr_format=3)
    except Exception as e:  # metadata zarr cannot parse: any exception type
        return f"the metadata of array {label!r} is unreadable ({_one_line(e)})"
    for index in np.ndindex(*array.cdata_shape):
        block = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, array.chunks, strict=True))
        try:
            await array.getitem(block)
        except Exception as e:  # codecs raise whatever their library raises
            where = ", ".join(map(str, index)) or "the only chunk"
            return f"chunk ({where}) of array {label!r} is corrupted ({_one_line(e)})"
    return None


def _decode_every_chunk(path: Path, labels: list[str]) -> None:
    """Decode every chunk of the arrays `labels` (all at once: one round trip to zarr's loop)."""
    from zarr.core.sync import sync

    reader = LocalStore(path, read_only=True)

    async def decode_all() -> list[str | None]:
        return await asyncio.gather(*(_decode_array(reader, label) for label in labels))

    for problem in sync(decode_all()):
        if problem is not None:
            raise StoreError(f"cannot read {path}: {problem}")


def verify_run(run: str | Path, *, data: bool = True) -> dict[str, Any]:
    """Check a whole store before using it; return its root attributes (as `read_attrs`).

    Checks the format and its version, the completion state (``status`` is one of
    `STATUSES`, ``completed_step`` an integer >= -1), every group and array of the manifest
    and, with `data`, decodes every chunk (checksummed since version 2). In a version-3 store
    every root attribute, every array's and group's metadata and, with `data`, every chunk
    must also match its digest, so an edited summary, a chunk copied from another step or an
    edited shape or byte order is refused. Version 1 stores have no manifest and no
    checksums: their groups are found on disk and only undecodable chunks are caught;
    `integrity_note` says what older stores leave unchecked.

    Parameters
    ----------
    run : str or Path
        Run folder or its ``store.zarr`` path.
    data : bool
        Also decode every chunk (reads the whole store once).

    Raises
    ------
    StoreError
        With a one-line message naming the store and what is wrong with it.
    """
    path = store_path(run)
    meta = _root_metadata(path)
    attrs = meta["attributes"]
    status = attrs.get("status")
    if status not in STATUSES:
        raise StoreError(f"{path} has an unknown status {status!r} (expected one of "
                         f"{', '.join(STATUSES)}); the store is damaged")
    done = attrs.get("completed_step", -1)
    if not isinstance(done, int) or isinstance(done, bool) or done < -1:
        raise StoreError(f"{path} has an invalid completed_step {done!r} (expected an integer "
                         ">= -1); the store is damaged")
    layout = _layout(path, meta)
    groups = layout if layout is not None else _scan_layout(path)
    for group in sorted(groups):
        _check_group(path, group, meta)
    if data:  # first: a chunk that does not decode is named as corrupted, not as edited
        _decode_every_chunk(path, [f"{g}/{n}" if g else n for g in sorted(groups) for n in groups[g]])
    try:
        _check_file_digests(path, attrs, groups, chunks=data)
    except StoreError:
        # A live writer may have renamed a chunk between our read of the digests and of the
        # chunk (it records the new digest first): read both again once.
        if status != "running" or writer_pid(run) is None:
            raise
        time.sleep(0.2)
        meta = _root_metadata(path)
        _check_file_digests(path, meta["attributes"], _layout(path, meta) or groups, chunks=data)
    return _visible_attrs(meta["attributes"])


def half_created(run: str | Path) -> bool:
    """Whether the run's store was killed while it was being created (its root metadata lacks
    the ``format`` attribute written last): nothing in it to verify or resume."""
    root = store_path(run) / "zarr.json"
    if not root.exists():  # killed before its first file
        return store_path(run).is_dir()
    meta = _read_node(root)  # unreadable: damage, not an interrupted creation
    return meta is not None and "format" not in (meta.get("attributes") or {})


def has_group(run: str | Path, group: str) -> bool:
    """Whether `group` is completely stored (listed in the manifest of a version-2 store).

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    """
    path = store_path(run)
    layout = _layout(path, _root_metadata(path))
    if layout is not None:
        return group in layout
    return (_read_node(path / group / "zarr.json") or {}).get("node_type") == "group"


def writer_pid(run: str | Path) -> int | None:
    """The process id of the live process holding the run's lock, or None if none does.

    A store whose status says ``running`` while no process writes it was killed (or its
    machine went down): it is resumable from its last checkpoint.
    """
    pid, live, _ = _lock_holder(run_dir(run) / LOCK_NAME)
    return pid if live else None


# --------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------


#: Key of a checkpoint's identity: ``{run_id, config_digest}`` of the store it belongs to.
CHECKPOINT_IDENTITY = "identity"


def save_checkpoint(run: str | Path, state: dict) -> None:
    """Save `state` with ``torch.save`` to ``RUN/checkpoint.pt``, replacing it atomically.

    In a version-3 store the checkpoint is stamped with the store's run identity and config
    digest (under ``"identity"``), which `load_checkpoint` checks. The file is fsynced before
    the rename: checkpoints are rare, and losing the last one to a power cut would waste a
    whole run.

    Raises
    ------
    OSError
        If the file cannot be written (disk full, file-size limit, ...), as for a store write:
        the previous checkpoint stays in place.
    """
    import torch  # deferred: torch is slow to import and only checkpoints need it

    path = run_dir(run) / CHECKPOINT_NAME
    attrs = _store_attrs(run)
    if _has_identity(attrs):
        run_id = attrs[RUN_ID_ATTR]
        state = state | {CHECKPOINT_IDENTITY: {
            "run_id": run_id, "config_digest": config_digest(run_id, attrs.get("config_json", ""))}}
    tmp = path.with_name(f"{_CHECKPOINT_TMP_PREFIX}{os.getpid()}")
    try:
        # Serialized in memory, then written by Python: a failing write (EFBIG, ENOSPC) is then
        # an OSError, whereas torch's own file writer raises a RuntimeError.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with tmp.open("wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        fault_point("checkpoint")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(run: str | Path) -> dict | None:
    """Load ``RUN/checkpoint.pt`` onto the CPU.

    In a version-3 store the checkpoint must belong to the run: same run identity and config
    digest, the store's ``seed`` (when the state records one) and a ``step`` no earlier than
    the store's ``completed_step``. The identity is removed from the returned state.

    Returns
    -------
    dict or None
        The saved state, or None if there is no checkpoint.

    Raises
    ------
    StoreError
        If the checkpoint exists but cannot be read, or belongs to another run.
    """
    import torch

    path = run_dir(run) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        # weights_only=False: our own file, holding RNG states and other non-tensor objects.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise StoreError(f"checkpoint {path} is unreadable ({_one_line(e)})") from e
    if not isinstance(state, dict):
        raise StoreError(f"checkpoint {path} does not hold a dict")
    _check_checkpoint(path, state, _store_attrs(run))
    state.pop(CHECKPOINT_IDENTITY, None)
    return state


def _store_attrs(run: str | Path) -> dict[str, Any]:
    """Root attributes of the run's store; empty if it has none yet (a checkpoint on its own)."""
    path = store_path(run)
    return _root_metadata(path)["attributes"] if path.exists() else {}


def _check_checkpoint(path: Path, state: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    if not _has_identity(attrs):
        return  # an older store: its checkpoints carry no identity to compare
    hint = (f"it cannot be used; remove it to restart the run from step 0 with: purify simulate "
            f"--out {path.parent} --resume")
    identity = state.get(CHECKPOINT_IDENTITY)
    if not isinstance(identity, dict):
        raise StoreError(f"checkpoint {path} carries no run identity (written by another purify "
                         f"version or not by this run); {hint}")
    run_id = attrs[RUN_ID_ATTR]
    if identity.get("run_id") != run_id:
        raise StoreError(f"checkpoint {path} belongs to another run (run identity "
                         f"{str(identity.get('run_id'))[:12]}…, the store's is {run_id[:12]}…); {hint}")
    if identity.get("config_digest") != config_digest(run_id, attrs.get("config_json", "")):
        raise StoreError(f"checkpoint {path} was written with another config than the store's; {hint}")
    if "seed" in state and state["seed"] != attrs.get("seed"):
        raise StoreError(f"checkpoint {path} has seed {state['seed']!r}, the store {attrs.get('seed')!r}; "
                         f"{hint}")
    step, done = state.get("step"), attrs.get("completed_step", -1)
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(done, int) or step < done:
        raise StoreError(f"checkpoint {path} is at step {step!r}, before the store's completed step "
                         f"{done!r}; {hint}")


# --------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _lock_holder(lock: Path) -> tuple[int | None, bool, int | None]:
    """Inspect a lock file: return ``(pid, live, inode)``.

    `pid` is None when the file cannot be parsed; `live` tells whether the lock must be
    respected; `inode` identifies the inspected file (None if it vanished meanwhile).
    """
    try:
        with lock.open("rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except FileNotFoundError:
        return None, False, None
    except OSError:  # e.g. a folder named .lock: not ours to remove
        return None, True, None
    try:
        info = json.loads(raw)
        pid, host = int(info["pid"]), str(info["hostname"])
    except (ValueError, KeyError, TypeError):
        return None, time.time() - st.st_mtime < LOCK_GRACE_SECONDS, st.st_ino
    if host != socket.gethostname():
        return pid, True, st.st_ino  # cannot tell whether it is alive: respect it
    return pid, _pid_alive(pid), st.st_ino


class RunLock:
    """One-writer lock of a run folder, as a context manager.

    ``with RunLock(run): ...`` creates ``RUN/.lock`` (``O_CREAT | O_EXCL``) holding JSON
    ``{pid, hostname, started}`` and removes it on exit, also on exceptions. A lock whose
    process is dead, or which is unparseable and older than `LOCK_GRACE_SECONDS`, is stale
    and taken over, so a SIGKILLed owner does not block the run forever.

    On entry, temp files left by killed writers (store and checkpoint) are removed, which is
    safe because only the lock holder writes.

    Parameters
    ----------
    run : str or Path
        Run folder (must exist) or its ``store.zarr`` path.

    Raises
    ------
    StoreError
        On entry, if a live process holds the lock or the lock cannot be created.
    """

    def __init__(self, run: str | Path) -> None:
        self.run = run_dir(run)
        self.path = self.run / LOCK_NAME
        self._token = uuid.uuid4().hex
        self._sigterm: Any = None

    def __enter__(self) -> RunLock:
        self._catch_sigterm()
        try:
            return self._acquire()
        except BaseException:
            self._restore_sigterm()
            raise

    def _catch_sigterm(self) -> None:
        """While held, SIGTERM raises KeyboardInterrupt (as Ctrl-C does) instead of killing the
        process on the spot, so ``__exit__`` removes the lock: a run terminated while its store
        is being created leaves no lock behind. Only where SIGTERM still has its default
        action (a caller with its own handler, e.g. a Dask worker, keeps it) and on the main
        thread (the only one Python lets set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._sigterm = signal.SIG_DFL
            signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_sigterm(self) -> None:
        if self._sigterm is not None and signal.getsignal(signal.SIGTERM) is _raise_interrupt:
            signal.signal(signal.SIGTERM, self._sigterm)
        self._sigterm = None

    def _acquire(self) -> RunLock:
        content = json.dumps(
            {
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "token": self._token,
            }
        ).encode()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            except OSError as e:
                raise StoreError(f"cannot create lock {self.path}: {e.strerror or e}") from e
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            _sweep_temp_files(self.run)
            return self
        raise StoreError(f"could not take the lock {self.path}; try again")

    def _take_over_stale(self) -> None:
        pid, live, inode = _lock_holder(self.path)
        if live:
            holder = f"process {pid}" if pid is not None else "another process"
            raise StoreError(
                f"{self.run} is in use by {holder} (lock {self.path}); wait for it or remove "
                "the lock if that process is gone"
            )
        if inode is None:
            return
        # Move the stale lock aside rather than unlinking it: if another process took it
        # over between our inspection and now, we notice by its inode and put it back.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{self._token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if os.stat(aside).st_ino != inode:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def __exit__(self, *exc_info: object) -> None:
        try:
            try:
                ours = json.loads(self.path.read_bytes()).get("token") == self._token
            except (OSError, ValueError, AttributeError):
                ours = False
            if ours:
                self.path.unlink(missing_ok=True)
        finally:
            self._restore_sigterm()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sweep_temp_files(run: Path) -> None:
    shutil.rmtree(run / TMP_NAME, ignore_errors=True)
    for tmp in run.glob(f"{_CHECKPOINT_TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------


def _is_ours(name: str) -> bool:
    return name in {STORE_NAME, CHECKPOINT_NAME, LOCK_NAME, FIGURES_NAME, TMP_NAME, SUMMARY_NAME} or (
        name.startswith(_CHECKPOINT_TMP_PREFIX) or name.startswith(LOCK_NAME + ".stale-")
    )


def _entries(run: Path) -> Iterator[str]:
    try:
        yield from os.listdir(run)
    except OSError as e:
        raise StoreError(f"cannot read {run}: {e.strerror or e}") from e


def _remove_run_files(run: Path) -> None:
    """Delete the store, checkpoint, figures and temp files of a run; keep anything else."""
    try:
        for name in list(_entries(run)):
            if name == LOCK_NAME or not _is_ours(name):
                continue
            target = run / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    except OSError as e:
        raise StoreError(f"cannot remove the old run in {run}: {e.strerror or e}") from e


def _half_created_attrs(run: Path) -> dict[str, Any] | None:
    """Root attributes of a store killed while `create_store` wrote it (they lack ``format``,
    written last, but hold the run's ``config_json``); None for any other store or none."""
    meta = _read_node(store_path(run) / "zarr.json")
    attrs = (meta or {}).get("attributes")
    if not isinstance(attrs, dict) or "format" in attrs or not isinstance(attrs.get("config_json"), str):
        return None
    return attrs


def _creation_interrupted(run: Path, names: list[str]) -> bool:
    """Whether the folder entries `names` (lock excluded) are what a run killed during its
    creation leaves: only purify's files, no checkpoint, and no store or a half-created one."""
    if not all(_is_ours(n) for n in names) or CHECKPOINT_NAME in names:
        return False
    if STORE_NAME not in names:
        return True
    store = store_path(run)
    return not (store / "zarr.json").exists() or _half_created_attrs(run) is not None


def creation_interrupted(run: str | Path) -> tuple[bool, str | None]:
    """Whether `run` holds a run killed while it was being created (nothing computed yet), and
    the config JSON its half-created store recorded, if any.

    Such a folder (a lock, temp files, a store without its ``format`` attribute, no checkpoint)
    is started from scratch by `prepare_run_dir`, with ``resume`` too.
    """
    run = Path(run)
    try:
        names = [n for n in os.listdir(run) if n != LOCK_NAME]
    except OSError:
        return False, None
    if not names:
        return True, None
    if not _creation_interrupted(run, names):
        return False, None
    attrs = _half_created_attrs(run)
    return True, None if attrs is None else attrs["config_json"]


def prepare_run_dir(run: str | Path, *, overwrite: bool, resume: bool) -> str:
    """Decide what to do with an output folder before any work starts.

    Parameters
    ----------
    run : str or Path
        The run folder.
    overwrite : bool
        Replace a run already there (only its store, checkpoint and figures are deleted).
    resume : bool
        Continue a run already there.

    Returns
    -------
    str
        ``"new"`` (the folder exists and is ready for a new run: also when it held only a
        run killed during its creation, with nothing computed, even with `resume`) or
        ``"resume"`` (it holds a fully created store, with or without a checkpoint; the
        caller checks which).

    Raises
    ------
    StoreError
        If both flags are given; the folder cannot be created or written; it is not empty
        and holds no purify run (even with `overwrite`); it holds a run and neither flag is
        given; there is nothing to resume; or a live process holds its lock.
    """
    if overwrite and resume:
        raise StoreError("--overwrite and --resume cannot be used together")
    run = Path(run)
    if not run.exists():
        if resume:
            raise StoreError(f"nothing to resume at {run}")
        try:
            run.mkdir(parents=True)
        except OSError as e:
            raise StoreError(f"cannot create run folder {run}: {e.strerror or e}") from e
        return "new"
    if not run.is_dir():
        raise StoreError(f"{run} exists and is not a folder")
    if not os.access(run, os.W_OK | os.X_OK):
        raise StoreError(f"run folder {run} is not writable")

    names = [n for n in _entries(run) if n != LOCK_NAME]
    pid, live, _ = _lock_holder(run / LOCK_NAME)
    if live and pid != os.getpid():
        raise StoreError(f"{run} is in use by process {pid} (lock {run / LOCK_NAME})")
    if not names or _creation_interrupted(run, names):
        # Nothing was computed here (an empty folder, or one killed while its store was being
        # created): a new run and --resume alike start it from scratch.
        if names:
            with RunLock(run):
                _remove_run_files(run)
        return "new"

    # A store without `format` is one killed during creation: still ours to overwrite if
    # nothing foreign sits beside it, but nothing to resume.
    holds_run = all(_is_ours(n) for n in names) and any(
        n in (STORE_NAME, CHECKPOINT_NAME) for n in names
    )
    if not holds_run:
        raise StoreError(
            f"{run} is not empty and holds no purify run; choose an empty or new folder"
        )
    if resume:
        try:
            read_attrs(run)
        except StoreError as e:
            raise StoreError(f"nothing to resume at {run}: {e}") from e
        # A complete store without a checkpoint was killed before its first checkpoint
        # (right after creation): resuming it means starting it at step 0, in place.
        return "resume"
    if overwrite:
        # Under the lock: of two overwrites started together, the second is told the folder is
        # in use instead of finding the old run half removed.
        with RunLock(run):
            _remove_run_files(run)
        return "new"
    raise StoreError(
        f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it"
    )

"""Writing a run store: create it pre-allocated, fill it in by index, replace whole groups.

Training pre-allocates the whole store with `create_store` and then fills it in by index
with `write_region`. Every file of the store is replaced atomically (a temp file in
``RUN/.zarr-tmp/`` renamed into place, `AtomicLocalStore`), so a run killed with SIGKILL at
any moment leaves a store that opens and whose completed writes are intact. Groups written
later (`write_group`) are staged outside the store and renamed into place, so they are either
absent or complete. In a version-3 store every write also refreshes the digests of
`purify.store.integrity`, in the same atomic rewrite of the root metadata; a chunk write first
adds the new digest beside the old one and drops the old one once the chunk is in place, so a
writer killed in between leaves a store that still verifies. Writers are expected to hold the
`RunLock` of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from purify.store.faults import fault_point
from purify.store.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INTEGRITY_ATTR,
    LAYOUT_ATTR,
    RESERVED_ATTRS,
    RUN_ID_ATTR,
    TMP_NAME,
    AttrValue,
    StoreError,
    StoreWriteError,
    store_path,
)
from purify.store.integrity import (
    attr_digest,
    file_digest,
    has_identity,
    integrity_record,
    read_manifest,
    root_metadata,
    scan_layout,
)

# checksum=True: a flipped bit in a chunk must fail to decode rather than read as a number.
_COMPRESSORS = (ZstdCodec(level=3, checksum=True),)
_STAGE_PREFIX = "group-"


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


class _StagingStore(AtomicLocalStore):
    """The store of a group being staged in ``RUN/.zarr-tmp/``; its temp files go beside it.

    zarr gathers some writes (an array's metadata with its parents', `asyncio.gather`), and a
    gather that fails on one write leaves its siblings running. Removing the stage while such a
    write is in flight or not yet started lets it re-create the stage (``mkdir(parents=True)``)
    after the removal, and the abandoned folder outlives the failed `write_group`. So the
    stage is retired first: `retire` refuses new writes and waits for those in flight.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self._idle = threading.Condition()
        self._in_flight = 0
        self._retired = False

    @property
    def tmp_dir(self) -> Path:
        return self.root.parent

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._idle:
            if self._retired:
                raise OSError(errno.ECANCELED, f"group staged in {self.root} was abandoned")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def retire(self) -> None:
        """Refuse every later write and return once no write is in flight."""
        with self._idle:
            self._retired = True
            self._idle.wait_for(lambda: self._in_flight == 0)

    async def set(self, key: str, value: Buffer) -> None:
        with self._writing():
            await super().set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        with self._writing():
            await super().set_if_not_exists(key, value)

    def set_sync(self, key: str, value: Buffer) -> None:
        with self._writing():
            super().set_sync(key, value)


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


def _encoding(ds: xr.Dataset, along: str | None) -> dict[str, dict[str, Any]]:
    """Chunks and compressors for every variable of one group.

    Data variables with dimension `along` get one chunk per index along it, so that writing
    one index (one snapshot) rewrites only its own chunk; everything else is a single chunk,
    since the other groups are small and rewriting a whole chunk per step keeps each step's
    write a single file.
    """
    encoding = {}
    for name, var in ds.variables.items():
        chunks = [max(1, n) for n in var.shape]
        if along is not None and name in ds.data_vars and along in var.dims:
            chunks[var.dims.index(along)] = 1
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
    store: AtomicLocalStore, where: str, ds: xr.Dataset, mode: str, *, along: str | None = None
) -> None:
    """Write `ds` as the group at path `where` of `store`, chunked one index `along` a dimension.

    Chunks equal to the fill value (NaN) are written too: in a version-2 store every chunk
    exists, so a missing one is damage.
    """
    ds = _prepare_dataset(ds)
    ds.to_zarr(
        store,
        group=where or None,
        mode=mode,
        zarr_format=3,
        consolidated=False,
        encoding=_encoding(ds, along),
        write_empty_chunks=True,
    )


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
    if has_identity(merged) and isinstance(run_id, str):
        try:
            known = integrity_record(merged)["files"]
        except ValueError:
            known = {}
        if drop is not None:
            known = {k: v for k, v in known.items() if not k.startswith(drop + "/")}
        known |= dict(files or {})
        digests = {k: attr_digest(run_id, k, v) for k, v in merged.items() if k != INTEGRITY_ATTR}
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
            out[prefix + key] = [file_digest(run_id, prefix + key, f.read_bytes())]
    return out


def create_store(
    run: str | Path,
    groups: Mapping[str, xr.Dataset],
    attrs: Mapping[str, AttrValue],
    *,
    chunk_along: Mapping[str, str] | None = None,
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
    chunk_along : Mapping[str, str], optional
        ``{group: dim}``: the data variables of `group` that have dimension `dim` get one
        chunk per index along it (e.g. one per snapshot), so that `write_region` at one index
        rewrites only that chunk. Every other variable is stored as a single chunk.

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
        along = dict(chunk_along or {})
        _write_group(store, "", root_ds.assign_attrs(root_attrs), mode="w-", along=along.get(""))
        for group in sorted(g for g in groups if g):  # parents before children
            _write_group(store, group, groups[group], mode="w-", along=along.get(group))
        layout = json.dumps(scan_layout(path), sort_keys=True)
        _merge_root_attrs(
            store, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, LAYOUT_ATTR: layout},
            files=_files_below(path, run_id),
        )
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from e


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
    meta = root_metadata(path)
    layout = read_manifest(path, meta)
    run_id = meta["attributes"].get(RUN_ID_ATTR) if has_identity(meta["attributes"]) else None
    tmp = path.parent / TMP_NAME
    stage = tmp / f"{_STAGE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    old: Path | None = None
    staging: _StagingStore | None = None
    try:
        tmp.mkdir(exist_ok=True)
        staging = _StagingStore(stage)
        staging.fault_prefix = group + "/"
        _write_group(staging, "", ds, mode="w-")
        arrays = scan_layout(stage)[""]
        files = _files_below(stage, run_id, group + "/") if run_id is not None else {}
        store = _writable_store(path)
        parts = group.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for parent in parents:
            if not (path / parent / "zarr.json").is_file():
                zarr.open_group(store, mode="a", path=parent, zarr_format=3)
            if run_id is not None:
                key = f"{parent}/zarr.json"
                files[key] = [file_digest(run_id, key, (path / key).read_bytes())]
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
        if staging is not None:
            staging.retire()  # before the removal: a write still running would re-create the stage
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _open_zarr_group(run: str | Path, group: str, store: AtomicLocalStore | None = None) -> zarr.Group:
    path = store_path(run)
    root_metadata(path)  # never write into a foreign or half-created store
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
    attrs = root_metadata(path)["attributes"]
    if not has_identity(attrs):
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
        new = {key: file_digest(run_id, key, tmp.read_bytes()) for key, tmp in deferred}
        try:
            known = integrity_record(attrs)["files"]
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
    root_metadata(path)
    _merge_root_attrs(_writable_store(path), checked)


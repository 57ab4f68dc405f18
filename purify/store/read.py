"""Reading a run store, after checking it: open, load, read its attributes, verify it whole.

`open_run` checks the structure of the group it opens (its arrays and chunks against the
manifest, in a version-3 store their metadata against their digests) and `load_run` also
decodes every value; `verify_run` checks the whole store, decodes every chunk and, in a
version-3 store, compares every file with its digest (`purify.store.integrity`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from zarr.storage import LocalStore

from purify.store.format import (
    HIDDEN_ATTRS,
    RUN_ID_ATTR,
    STATUSES,
    StoreError,
    one_line,
    read_json,
    read_node,
    run_dir,
    store_path,
)
from purify.store.integrity import (
    file_digest,
    has_identity,
    inconsistent,
    integrity_record,
    read_manifest,
    root_metadata,
    scan_layout,
)
from purify.store.lock import writer_pid


def read_attrs(run: str | Path) -> dict[str, Any]:
    """Return the root attributes of a run store.

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    """
    path = store_path(run)
    attrs = _visible_attrs(root_metadata(path)["attributes"])
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
    """Root attributes without the store's bookkeeping (manifest, identity, digests)."""
    return {k: v for k, v in attrs.items() if k not in HIDDEN_ATTRS}


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _check_file_digests(path: Path, attrs: Mapping[str, Any], groups: Mapping[str, list[str]],
                        *, chunks: bool) -> None:
    """Check the metadata of `groups` and their arrays (and with `chunks` every chunk) against
    their digests. Every file must be recorded: one copied in from elsewhere has no digest."""
    if not has_identity(attrs):
        return
    run_id = attrs[RUN_ID_ATTR]
    files = integrity_record(attrs)["files"]  # parsed by _check_attr_digests already

    def check(key: str, what: str) -> None:
        try:
            data = (path / key).read_bytes()
        except OSError as e:
            raise StoreError(f"cannot read {path / key}: {e.strerror or e}") from e
        if file_digest(run_id, key, data) not in files.get(key, ()):
            raise inconsistent(path, f"{what} does not match its digest")

    for group in sorted(groups):
        if group:
            check(f"{group}/zarr.json", f"the metadata of group {group!r}")
        for name in groups[group]:
            label = f"{group}/{name}" if group else name
            check(f"{label}/zarr.json", f"the metadata of array {label!r} (shape, type, byte order "
                                        "or chunking)")
            if not chunks:
                continue
            keys = _chunk_keys(read_json(path / label / "zarr.json")) or ()
            for key in keys:
                check(f"{label}/{key}", f"chunk {key} of array {label!r}")



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
        meta = read_json(where / "zarr.json")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise StoreError(f"cannot open {path}: array {label!r} is missing (no {label}/zarr.json); "
                         "the store is truncated or damaged") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot open {path}: the metadata of array {label!r} is unreadable "
                         f"({one_line(e)}); the store is damaged") from e
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
    meta = root_metadata(path) if meta is None else meta
    layout = read_manifest(path, meta)
    if layout is not None and group not in layout:
        raise StoreError(f"{path} has no group {group!r}")
    if group:
        node = read_node(path / group / "zarr.json")
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
    meta = root_metadata(path)
    _check_group(path, group, meta)
    layout = read_manifest(path, meta)
    if layout is not None:
        _check_file_digests(path, meta["attributes"], {group: layout[group]}, chunks=False)
    if require_complete:
        _check_status(run, meta["attributes"])
    try:
        ds = xr.open_zarr(path, group=group or None, consolidated=False, zarr_format=3)
    except Exception as e:  # a foreign or corrupted store can fail in any zarr/xarray layer
        raise StoreError(f"cannot open {path} (group {group!r}): {one_line(e)}") from e
    if not group:
        for name in HIDDEN_ATTRS:
            ds.attrs.pop(name, None)
    _check_byte_order(path, group, [str(name) for name in ds.variables])
    return ds


def _endian(meta_path: Path) -> str | None:
    """The byte order the ``bytes`` codec of an array's metadata declares, if any."""
    for codec in (read_node(meta_path) or {}).get("codecs") or ():
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
        raise StoreError(f"cannot read {store_path(run)} (group {group!r}): {one_line(e)}") from e




async def _decode_array(reader: LocalStore, label: str) -> str | None:
    """Open array `label` and decode each of its chunks; describe the first failure, if any."""
    from zarr.api.asynchronous import open_array

    try:
        array = await open_array(store=reader, path=label, mode="r", zarr_format=3)
    except Exception as e:  # metadata zarr cannot parse: any exception type
        return f"the metadata of array {label!r} is unreadable ({one_line(e)})"
    for index in np.ndindex(*array.cdata_shape):
        block = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, array.chunks, strict=True))
        try:
            await array.getitem(block)
        except Exception as e:  # codecs raise whatever their library raises
            where = ", ".join(map(str, index)) or "the only chunk"
            return f"chunk ({where}) of array {label!r} is corrupted ({one_line(e)})"
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
    meta = root_metadata(path)
    attrs = meta["attributes"]
    status = attrs.get("status")
    if status not in STATUSES:
        raise StoreError(f"{path} has an unknown status {status!r} (expected one of "
                         f"{', '.join(STATUSES)}); the store is damaged")
    done = attrs.get("completed_step", -1)
    if not isinstance(done, int) or isinstance(done, bool) or done < -1:
        raise StoreError(f"{path} has an invalid completed_step {done!r} (expected an integer "
                         ">= -1); the store is damaged")
    layout = read_manifest(path, meta)
    groups = layout if layout is not None else scan_layout(path)
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
        meta = root_metadata(path)
        _check_file_digests(path, meta["attributes"], read_manifest(path, meta) or groups, chunks=data)
    return _visible_attrs(meta["attributes"])


def has_group(run: str | Path, group: str) -> bool:
    """Whether `group` is completely stored (listed in the manifest of a version-2 store).

    Raises
    ------
    StoreError
        If there is no valid purify run store at `run`.
    """
    path = store_path(run)
    layout = read_manifest(path, root_metadata(path))
    if layout is not None:
        return group in layout
    return (read_node(path / group / "zarr.json") or {}).get("node_type") == "group"

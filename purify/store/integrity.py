"""What makes a store trustworthy: its root metadata, its manifest and its digests.

Integrity (format version 2): every chunk of every array is on disk from creation on (NaN
where nothing was written yet, so a missing chunk means a truncated store, not "not yet
written"), every zstd frame carries a checksum (a corrupted chunk fails to decode instead of
giving wrong numbers), and the root attributes hold a manifest of the groups and arrays the
store must have (``layout_json``, kept by the store and hidden from `read_attrs` and
`open_run`).

Identity (format version 3): checksums catch damage that breaks a file, not damage that leaves
every file well-formed (an edited attribute, a chunk copied over another step's, an edited
shape). A store is therefore created with a random run identity (``run_id``) and keeps, in
``integrity_json``, a digest of every root attribute and of every other file of the store
(array and group metadata: shapes, dtypes, byte order, chunking; and every chunk). Each digest
is a BLAKE2b keyed with the run identity over the file's path in the store and its bytes, so a
chunk moved from another step, array or run does not match. The writers recompute them on each
write, in the same atomic rewrite of the root metadata. Anyone who recomputes every digest can
still forge a store: this detects damage and mistakes, not an adversary who knows the format.

This module computes digests and reads and checks the root metadata (`root_metadata`), the
root attributes against their digests and the manifest; the files below the root are checked
by `purify.store.read`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from purify.store.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IDENTITY_VERSION,
    INTEGRITY_ATTR,
    LAYOUT_ATTR,
    RUN_ID_ATTR,
    StoreError,
    read_json,
    read_node,
)

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


def attr_digest(run_id: str, name: str, value: Any) -> str:
    """Digest of the root attribute `name` holding `value`."""
    return _digest(run_id, f"attr:{name}", json.dumps(value, sort_keys=True).encode())


def file_digest(run_id: str, key: str, data: bytes) -> str:
    """Digest of the store file at `key` (e.g. ``snapshots/W/c/3/0/0``): its key is its place."""
    return _digest(run_id, f"file:{key}", data)


def config_digest(run_id: str, config_json: str) -> str:
    """The digest of a run's ``config_json`` attribute, as its integrity record holds it."""
    return attr_digest(run_id, "config_json", config_json)


def integrity_record(attrs: Mapping[str, Any]) -> dict[str, Any]:
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


def has_identity(attrs: Mapping[str, Any]) -> bool:
    """Whether root attributes `attrs` are those of a store with a run identity and digests."""
    version = attrs.get("format_version")
    return isinstance(version, int) and version >= IDENTITY_VERSION


def integrity_note(attrs: Mapping[str, Any]) -> str | None:
    """What verification could not check in this store (None: everything), for a user note.

    Parameters
    ----------
    attrs : Mapping
        Root attributes of a store that passed `verify_run`.
    """
    if has_identity(attrs):
        return None
    return (f"this store was written before run identities (format version "
            f"{attrs.get('format_version')}): edited attributes, moved chunks and foreign "
            "checkpoints cannot be detected in it")


# --------------------------------------------------------------------------------------
# Root metadata and its attributes
# --------------------------------------------------------------------------------------


def root_metadata(path: Path) -> dict[str, Any]:
    """Read and validate the root ``zarr.json`` of the store at `path`; return it.

    Raises
    ------
    StoreError
        If there is no store, it is not a purify store of a known version, or a root
        attribute does not match its digest.
    """
    if not path.exists():
        raise StoreError(f"no run at {path.parent}")
    not_ours = f"{path} is not a purify run store"
    try:
        meta = read_json(path / "zarr.json")
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


def inconsistent(path: Path, what: str) -> StoreError:
    """The error for a store at `path` whose `what` does not match its record."""
    hint = _UNTRUSTED.replace("RUN", str(path.parent))
    return StoreError(f"{path} is inconsistent: {what} (edited or damaged); {hint}")


def _check_attr_digests(path: Path, attrs: Mapping[str, Any]) -> None:
    """Check every root attribute against its digest (version 3); refuse identity in older stores."""
    if not has_identity(attrs):
        if RUN_ID_ATTR in attrs or INTEGRITY_ATTR in attrs:  # a version-3 store edited back
            raise inconsistent(path, f"format version {attrs.get('format_version')!r} predates the "
                                     "run identity and digests it holds")
        return
    run_id = attrs.get(RUN_ID_ATTR)
    if not isinstance(run_id, str) or not run_id:
        raise inconsistent(path, f"its run identity ({RUN_ID_ATTR}) is missing")
    try:
        recorded = integrity_record(attrs)["attrs"]
    except ValueError as e:
        raise inconsistent(path, f"its digest record ({INTEGRITY_ATTR}) is {e}") from None
    names = set(attrs) - {INTEGRITY_ATTR}
    for name in sorted(names | set(recorded)):
        what = (f"its manifest of groups and arrays ({LAYOUT_ATTR})" if name == LAYOUT_ATTR
                else f"root attribute {name!r}")
        if name not in names:
            raise inconsistent(path, f"{what} was removed")
        if name not in recorded:
            raise inconsistent(path, f"{what} was added")
        if recorded[name] != attr_digest(run_id, name, attrs[name]):
            raise inconsistent(path, f"{what} does not match its digest")


# --------------------------------------------------------------------------------------
# The manifest of groups and arrays (format version 2)
# --------------------------------------------------------------------------------------


def read_manifest(path: Path, meta: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """The manifest ``{group: [array, ...]}`` of a version-2 store; None for version 1."""
    attrs = meta["attributes"]
    if attrs.get("format_version", 1) < 2:
        return None
    try:
        found = json.loads(attrs[LAYOUT_ATTR])
        if not isinstance(found, dict) or not all(
            isinstance(g, str) and isinstance(a, list) and all(isinstance(n, str) for n in a)
            for g, a in found.items()
        ):
            raise ValueError("not a {group: [array, ...]} object")
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"cannot open {path}: its manifest of groups and arrays ({LAYOUT_ATTR}) "
                         "is missing or damaged") from e
    return found


def scan_layout(root: Path, prefix: str = "") -> dict[str, list[str]]:
    """``{group: sorted array names}`` of every group found on disk below `root`.

    Group paths are relative to `root`, with `prefix` (``"a/b/"``) put in front.
    """
    found: dict[str, list[str]] = {}
    for meta_path in sorted(root.rglob("zarr.json")):
        meta = read_node(meta_path)
        if meta is None or meta.get("node_type") != "group":
            continue
        rel = meta_path.parent.relative_to(root).as_posix()
        group = (prefix + ("" if rel == "." else rel)).strip("/")
        found[group] = sorted(
            child.name
            for child in meta_path.parent.iterdir()
            if (read_node(child / "zarr.json") or {}).get("node_type") == "array"
        )
    return found

"""On-disk layout of one run: a zarr v3 store, a checkpoint and a lock, in a run folder.

A run folder ``RUN/`` holds ``store.zarr/`` (a zarr v3 store written with xarray: the root
group, the groups its writer creates, ``analysis/<name>``), ``checkpoint.pt`` (the latest
resumable training state), ``.lock`` (the one-writer lock), ``.zarr-tmp/`` (temp files of
in-flight writes) and ``figures/``. Every file is replaced atomically, so a run killed with
SIGKILL at any moment leaves a store that opens and whose completed writes are intact; every
reader checks what it opens, and `verify_run` checks a whole store against its manifest,
checksums and keyed digests.

The package is in layers, each module importing only from those above it in this list:

* `format` — names, format versions, errors, paths;
* `integrity` — digests, the root metadata and its checks, the manifest of groups and arrays;
* `faults` — atomic file replacement and the fault points where tests kill a writer;
* `lock` — `RunLock`, stale locks, SIGTERM while it is held, `writer_pid`;
* `checkpoint` — `save_checkpoint`, `load_checkpoint` (stamped with the run identity);
* `write` — `create_store`, `write_region`, `write_group`, `update_attrs`;
* `read` — `open_run`, `load_run`, `read_attrs`, `verify_run`, `has_group`;
* `rundir` — `prepare_run_dir`, `creation_interrupted`, `half_created`.

The store knows no run-specific names: the groups, their chunking (``chunk_along``) and the
extra entries of a run folder (``also_ours``) are the callers'.
"""

from purify.store.checkpoint import CHECKPOINT_IDENTITY, load_checkpoint, save_checkpoint
from purify.store.faults import fault_point, write_atomically, write_text_atomically
from purify.store.format import (
    CHECKPOINT_NAME,
    FIGURES_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    HIDDEN_ATTRS,
    IDENTITY_VERSION,
    INTEGRITY_ATTR,
    LAYOUT_ATTR,
    LOCK_NAME,
    RESERVED_ATTRS,
    RUN_ID_ATTR,
    STATUSES,
    STORE_NAME,
    TMP_NAME,
    AttrValue,
    StoreError,
    StoreWriteError,
    one_line,
    run_dir,
    store_path,
)
from purify.store.integrity import config_digest, integrity_note
from purify.store.lock import LOCK_GRACE_SECONDS, RunLock, is_ours, writer_pid
from purify.store.read import has_group, load_run, open_run, read_attrs, verify_run
from purify.store.rundir import creation_interrupted, half_created, prepare_run_dir
from purify.store.write import AtomicLocalStore, create_store, update_attrs, write_group, write_region

__all__ = [
    "CHECKPOINT_IDENTITY",
    "CHECKPOINT_NAME",
    "FIGURES_NAME",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HIDDEN_ATTRS",
    "IDENTITY_VERSION",
    "INTEGRITY_ATTR",
    "LAYOUT_ATTR",
    "LOCK_GRACE_SECONDS",
    "LOCK_NAME",
    "RESERVED_ATTRS",
    "RUN_ID_ATTR",
    "STATUSES",
    "STORE_NAME",
    "TMP_NAME",
    "AtomicLocalStore",
    "AttrValue",
    "RunLock",
    "StoreError",
    "StoreWriteError",
    "config_digest",
    "create_store",
    "creation_interrupted",
    "fault_point",
    "half_created",
    "has_group",
    "integrity_note",
    "is_ours",
    "load_checkpoint",
    "load_run",
    "one_line",
    "open_run",
    "prepare_run_dir",
    "read_attrs",
    "run_dir",
    "save_checkpoint",
    "store_path",
    "update_attrs",
    "verify_run",
    "write_atomically",
    "write_group",
    "write_region",
    "write_text_atomically",
    "writer_pid",
]

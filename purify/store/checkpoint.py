"""The resumable training state of a run: ``RUN/checkpoint.pt``, replaced atomically.

In a version-3 store the checkpoint carries the store's run identity and config digest, so a
checkpoint of another run, config or seed, or one older than the store's progress, is refused
on load instead of resuming the wrong training.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from purify.store.faults import write_atomically
from purify.store.format import (
    CHECKPOINT_NAME,
    CHECKPOINT_TMP_PREFIX,
    RUN_ID_ATTR,
    StoreError,
    one_line,
    run_dir,
    store_path,
)
from purify.store.integrity import config_digest, has_identity, root_metadata

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
    if has_identity(attrs):
        run_id = attrs[RUN_ID_ATTR]
        state = state | {CHECKPOINT_IDENTITY: {
            "run_id": run_id, "config_digest": config_digest(run_id, attrs.get("config_json", ""))}}

    def write(tmp: Path) -> None:
        # Serialized in memory, then written by Python: a failing write (EFBIG, ENOSPC) is then
        # an OSError, whereas torch's own file writer raises a RuntimeError.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with tmp.open("wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())

    write_atomically(path, write, tmp=path.with_name(f"{CHECKPOINT_TMP_PREFIX}{os.getpid()}"),
                     fault="checkpoint")


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
        raise StoreError(f"checkpoint {path} is unreadable ({one_line(e)})") from e
    if not isinstance(state, dict):
        raise StoreError(f"checkpoint {path} does not hold a dict")
    _check_checkpoint(path, state, _store_attrs(run))
    state.pop(CHECKPOINT_IDENTITY, None)
    return state


def _store_attrs(run: str | Path) -> dict[str, Any]:
    """Root attributes of the run's store; empty if it has none yet (a checkpoint on its own)."""
    path = store_path(run)
    return root_metadata(path)["attributes"] if path.exists() else {}


def _check_checkpoint(path: Path, state: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
    if not has_identity(attrs):
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

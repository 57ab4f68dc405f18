"""A fully spelled-out small run writes the same arrays, bit for bit, as the code it was pinned on.

Each recording in ``tests/pins/bitwise_run.json`` holds the hashes of every array of the store
outside the analyses: the AMD one was recorded before the trainer/recorder/store redesign, the
Intel one at stop 31's code.  Refactors must keep them; a deliberate change of numbers
re-records them (and says so in the commit).  An array added to the store after a recording is
named in its ``added_since`` and is not compared.  Bits depend on the torch build, the CPU's
vector unit and its vendor (MKL, behind ``@``, runs its AVX2 code on AMD processors and its
AVX-512 code on Intel ones), so the test runs only where a recording matches all three.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from purify import matmul
from purify.config import DataConfig, EvalConfig, NetConfig, RunConfig, TrainConfig
from purify.simulate import simulate

RECORDINGS = json.loads((Path(__file__).parent / "pins" / "bitwise_run.json").read_text())["recordings"]


def this_machine() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_vendor": matmul.cpu_vendor()}


def _recording() -> dict | None:
    here = this_machine()
    for recording in RECORDINGS:
        if all(recording["recorded_with"][key] == value for key, value in here.items()):
            return recording
    return None


def _config(adv_bias: str) -> RunConfig:
    """Every field spelled out, so that no change of a default can move the pinned run."""
    return RunConfig(
        data=DataConfig(d=48, k=4, dictionary="orthogonal", n_features=48, p_one=2 / 48,
                        p_small=4 / 48, extra_levels=(), sigma_x=0.1, spike_level=4**-0.501,
                        spike_prob=0.05, n_train=None, n_test=200),
        net=NetConfig(width=96, sigma0=1 / 48, activation="smooth", bias_schedule="norm",
                      r_start=1.5, r_end=0.6, r_decay_fraction=0.7, c_b=1.0, sigma_rho_ratio=0.05,
                      lam=0.0),
        train=TrainConfig(clean_steps=160, adv_steps=32, lr=1.0, adv_lr=0.5, batch_size=64,
                          adv_attack="fgm", adv_norm="l2", adv_tau=0.5, adv_pgd_steps=3,
                          adv_init="clean", adv_bias=adv_bias, clean_snapshots=4,
                          adv_snapshots=2, log_points=10),
        eval=EvalConfig(tau=0.5, tau_linf=0.5 / 48**0.5, radii=(0.5, 1.0), norms=("l2", "linf"),
                        attacks=("fgm", "pgd", "dense", "noise"), pgd_steps=5, pgd_restarts=1,
                        pgd_rel_step=0.5, n_eval=100, strength="fast"),
        seed=3, problem_seed=3, device="cpu", preset="boundary")


def _hashes(store: Path) -> dict[str, str]:
    """sha256[:16] of every array's bytes, keyed by its path in the store; analyses excluded."""
    def walk(group, prefix=""):
        yield prefix, group
        for name, sub in group.groups():
            yield from walk(sub, f"{prefix}{name}/")

    out = {}
    for prefix, group in walk(zarr.open_group(store, mode="r")):
        if prefix.startswith("analysis"):
            continue
        for name, array in group.arrays():
            data = np.ascontiguousarray(array[...])
            out[prefix + name] = hashlib.sha256(data.tobytes()).hexdigest()[:16]
    return out


@pytest.mark.skipif(
    _recording() is None,
    reason="bits are pinned for given torch builds, CPU vector units and vendors; none is this machine's",
)
@pytest.mark.parametrize("adv_bias", ["radius", "norm"])
def test_small_run_is_bitwise_pinned(tmp_path, adv_bias):
    recording = _recording()
    simulate(_config(adv_bias), tmp_path / "run", progress=False)
    got = _hashes(tmp_path / "run" / "store.zarr")
    want = recording["adv_bias"][adv_bias]
    assert set(want) <= set(got), f"arrays gone from the store: {sorted(set(want) - set(got))}"
    assert set(got) - set(want) <= set(recording["added_since"]), "the store has arrays the recording does not know"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"arrays changed: {changed}"

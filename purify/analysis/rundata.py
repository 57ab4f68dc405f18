"""A read-only view of a stored run, shaped for the analyses.

Analyses are pure functions of arrays; this module is the one place that turns a run folder
into those arrays (weights per snapshot, the dictionary, the teacher, the regenerated
held-out set) and into networks that the attacks and evaluations accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from purify import rng
from purify import store as S
from purify.config import RunConfig
from purify.data import Batch, SparseCodingProblem
from purify.learners.symmetric import SymmetricReLUNet


@dataclass
class RunData:
    """Everything an analysis reads from a run.

    Attributes
    ----------
    run : the run folder.
    config : the resolved config stored with the run.
    root, snapshots : the store's root and ``snapshots`` groups (lazy ``xr.Dataset``).
    """

    run: Path
    config: RunConfig
    root: xr.Dataset
    snapshots: xr.Dataset

    @classmethod
    def open(cls, run: str | Path, *, require_complete: bool = True) -> RunData:
        run = S.run_dir(run)
        attrs = S.read_attrs(run)
        root = S.open_run(run, require_complete=require_complete)
        return cls(run, RunConfig.from_json(attrs["config_json"]), root, S.open_run(run, "snapshots"))

    # -- the problem ------------------------------------------------------------------

    @cached_property
    def problem(self) -> SparseCodingProblem:
        prob = S.open_run(self.run, "problem")
        dc = self.config.data
        return SparseCodingProblem(
            torch.from_numpy(prob.M.values), torch.from_numpy(prob.w_star.values), dc.levels,
            dc.sigma_x, dc.spike_level or 0.0, dc.spike_prob or 0.0)

    @property
    def M(self) -> np.ndarray:
        """Dictionary ``(d, D)``."""
        return self.problem.M.numpy()

    @property
    def w_star(self) -> np.ndarray:
        """Teacher ``(D,)``."""
        return self.problem.w_star.numpy()

    @cached_property
    def test(self) -> Batch:
        """The run's held-out set, regenerated from its seed (identical to the one it used)."""
        return self.problem.sample(self.config.data.n_test, generator=rng.generator(self.config.data_seed, "test"))

    # -- the weights ------------------------------------------------------------------

    @property
    def steps(self) -> np.ndarray:
        """Snapshot steps ``(n_snapshots,)``."""
        return self.snapshots.step.values

    @property
    def clean_end(self) -> int:
        """Step of the clean model (end of clean training)."""
        return int(self.config.train.clean_steps)

    @property
    def final(self) -> int:
        """Step of the robust model (end of adversarial training)."""
        return int(self.steps[-1])

    def W(self, step: int) -> np.ndarray:
        """Weights ``(m, d)`` at snapshot ``step``."""
        return self.snapshots.W.sel(step=step).values

    def coefficients(self, step: int) -> np.ndarray:
        """Neurons in the dictionary basis, ``<M_j, w_i>``: ``(m, D)``."""
        return self.W(step) @ self.M

    def network(self, step: int, W: np.ndarray | None = None) -> SymmetricReLUNet:
        """The network at ``step`` (its stored bias and smoothing), optionally with other weights."""
        snap = self.snapshots.sel(step=step)
        return SymmetricReLUNet(torch.from_numpy(self.W(step) if W is None else W),
                                torch.from_numpy(snap.b.values), torch.from_numpy(snap.sigma_rho.values))

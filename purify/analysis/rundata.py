"""A read-only view of a stored run, shaped for the analyses.

Analyses are pure functions of arrays; this module is the one place that turns a run folder
into those arrays (weights per snapshot, the dictionary, the teacher, the regenerated
held-out set) and into networks that the attacks and evaluations accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from purify import rng
from purify import schema as V
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
        return cls(run, RunConfig.from_json(attrs["config_json"]), root, S.open_run(run, V.SNAPSHOTS))

    # -- the problem ------------------------------------------------------------------

    @cached_property
    def problem(self) -> SparseCodingProblem:
        prob = S.open_run(self.run, V.PROBLEM)
        dc = self.config.data
        return SparseCodingProblem(
            torch.from_numpy(prob[V.M].values), torch.from_numpy(prob[V.W_STAR].values), dc.levels,
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
        """The run's held-out set: regenerated from its seed, with the labels the run stored
        (:func:`purify.schema.with_stored_labels`), so it is the one the run evaluated on."""
        test = self.problem.sample(self.config.data.n_test, generator=rng.generator(self.config.data_seed, "test"))
        return V.with_stored_labels(test, S.open_run(self.run, V.PROBLEM))

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
        return self.snapshots[V.W].sel(step=step).values

    def coefficients(self, step: int) -> np.ndarray:
        """Neurons in the dictionary basis, ``<M_j, w_i>``: ``(m, D)``."""
        return self.W(step) @ self.M

    def trajectories(self, neurons: Sequence[int] | np.ndarray) -> xr.DataArray:
        """Dictionary coefficients ``<M_j, w_i(t)>`` of the chosen neurons at every snapshot.

        The per-neuron view of Allen-Zhu & Li's Theorem 5.2 / Figure 8: how each coordinate of
        a neuron in the dictionary basis grows over clean training and changes in adversarial
        training.  Computed in float64 from the stored float32 weights.

        Parameters
        ----------
        neurons : neuron indices (in ``[0, m)``), in the order wanted.

        Returns
        -------
        xr.DataArray
            ``(step, neuron, feature)``, coordinates ``step``, ``phase(step)`` (``clean`` /
            ``adversarial``), ``neuron`` (the given indices) and ``feature``; the shape
            :func:`purify.plots.lottery_trajectories` takes.
        """
        idx = np.asarray(neurons, dtype=np.int64).reshape(-1)
        m = int(self.snapshots.sizes[V.NEURON])
        if idx.size and (idx.min() < 0 or idx.max() >= m):
            raise IndexError(f"neuron indices must be in [0, {m}); got {idx.tolist()}")
        W = self.snapshots[V.W].isel(neuron=idx).values.astype(np.float64)  # (step, len(idx), d)
        C = W @ self.M.astype(np.float64)
        coords = {V.STEP: self.steps, V.NEURON: idx, V.FEATURE: np.arange(C.shape[-1])}
        if V.PHASE in self.snapshots.coords:
            coords[V.PHASE] = (V.STEP, self.snapshots[V.PHASE].values)
        return xr.DataArray(C, dims=(V.STEP, V.NEURON, V.FEATURE), coords=coords,
                            attrs={"long_name": "<M_j, w_i> at each snapshot"})

    def network(self, step: int, W: np.ndarray | None = None) -> SymmetricReLUNet:
        """The network at ``step`` (its stored bias and smoothing), optionally with other weights."""
        snap = self.snapshots.sel(step=step)
        return SymmetricReLUNet(torch.from_numpy(self.W(step) if W is None else W),
                                torch.from_numpy(snap[V.B].values), torch.from_numpy(snap[V.SIGMA_RHO].values))

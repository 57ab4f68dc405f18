"""What a figure's drawer reads: :class:`FigureInput`, one complete run opened for drawing.

A drawer (the ``draw`` of an entry of :data:`purify.registry.FIGURES`) takes a
:class:`FigureInput`, picks what its figure shows and calls the figure function of its module;
it returns ``None`` when the run lacks the data (an analysis run without an option, a group
older stores do not have).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from purify import rng
from purify import store as S
from purify.analysis import done, open_analysis
from purify.analysis.rundata import RunData
from purify.plots.style import caption


@dataclass
class FigureInput:
    """A run opened for drawing: its data, its caption and its stored analyses."""

    data: RunData
    caption: str
    available: list[str]  # the analyses completely stored
    _analyses: dict[str, xr.Dataset] = field(default_factory=dict)

    @classmethod
    def open(cls, run: str | Path) -> FigureInput:
        """Open ``run`` (``purify.store.StoreError`` unless it is a complete run)."""
        data = RunData.open(run)
        folder = S.run_dir(run)
        return cls(data, caption(data.config, folder.name), done(folder))

    def analysis(self, name: str) -> xr.Dataset:
        """The stored analysis ``name``, loaded once and shared by the figures that use it."""
        if name not in self._analyses:
            self._analyses[name] = open_analysis(self.data.run, name).load()
        return self._analyses[name]

    def group(self, name: str) -> xr.Dataset | None:
        """Store group ``name`` loaded, or ``None`` if the run has none (older stores; the
        ``attack_strength`` group of a fast-strength run)."""
        run = self.data.run
        return S.load_run(run, name) if S.has_group(run, name) else None

    def numpy_rng(self, stream: str) -> np.random.Generator:
        """A seeded generator for choosing what to show (named stream of the run's seed)."""
        return np.random.default_rng(rng.stream_seed(int(self.data.config.seed), stream))

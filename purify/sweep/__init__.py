"""Sweeps: many runs over a grid of configs, on Dask, combined into one dataset.

* :mod:`purify.sweep.spec` — the sweep file: a base config, axes over any config field (seed
  included), the analyses and summaries to collect; every cell validated up front;
* :mod:`purify.sweep.execute` — one Dask task per cell (a ``simulate`` run in its own store
  under ``SWEEP/cells/``, through :mod:`purify.pipeline`), retries, resume; its progress bar is
  :mod:`purify.sweep.progress`;
* :mod:`purify.sweep.combine` — the cells' summaries as one xarray dataset indexed by the
  axes, stored as ``SWEEP/sweep.zarr``.

Theory is tested by sweeping (Allen-Zhu & Li 2020: robust accuracy over ``d``, ``k``, ``τ``,
``σ_x`` and seeds); ``purify sweep-plot`` (:mod:`purify.plots.sweep`) draws the phase diagrams.
"""

from purify.sweep.combine import COMBINED_NAME, Outcome, combine, open_combined, write_combined
from purify.sweep.execute import (
    SweepError,
    SweepInterrupted,
    SweepResult,
    default_workers,
    format_result,
    machine_cores,
    run_cell,
    run_sweep,
    stored_spec,
)
from purify.sweep.spec import (
    MAX_CELLS,
    SUMMARIES,
    SWEEP_ANALYSES,
    Axis,
    Cell,
    SweepSpec,
    axis_path,
    axis_values,
    build_spec,
    default_out,
    spec_from_dict,
)

__all__ = [
    "COMBINED_NAME", "MAX_CELLS", "SUMMARIES", "SWEEP_ANALYSES", "Axis", "Cell", "Outcome", "SweepError", "SweepInterrupted",
    "SweepResult", "SweepSpec", "axis_path", "axis_values", "build_spec", "combine", "default_out",
    "default_workers", "format_result", "machine_cores", "open_combined", "run_cell", "run_sweep", "spec_from_dict", "stored_spec",
    "write_combined",
]

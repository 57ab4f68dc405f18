"""Analyses that follow every neuron (Allen-Zhu & Li §5–§6, §8.3), stored beside the run.

Each analysis is a module with ``compute(data: RunData, **params) -> xr.Dataset`` and one
entry in :data:`purify.registry.ANALYSES` (which :data:`ANALYSES` is);
:func:`analyze` runs the ones a run is missing and stores each as group ``analysis/<name>``
of the run store.  A root attribute ``analyses_done`` lists the analyses whose group was
written completely, so a killed ``purify analyze`` recomputes only what it had not finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from purify import store as S
from purify.analysis.rundata import RunData
from purify.registry import ANALYSES, load


def module(name: str):
    """The module of analysis ``name`` (``ValueError`` naming the allowed ones if unknown)."""
    return load(ANALYSES.entry(name).module)


def done(run: str | Path) -> list[str]:
    """Analyses completely stored in ``run``."""
    text = S.read_attrs(run).get("analyses_done", "")
    # A `--force` recomputation killed while swapping the group in leaves the name listed
    # but the group gone: the store's manifest has the last word.
    return [n for n in text.split(",") if n and S.has_group(run, f"analysis/{n}")]


def analyze(
    run: str | Path,
    *,
    names: Sequence[str] = ANALYSES,
    force: bool = False,
    others: Sequence[str | Path] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Compute the analyses ``names`` that ``run`` lacks (all of them with ``force``).

    ``others`` are further runs of the same problem for the transfer analysis (§6.2).
    Returns the seconds each computed analysis took; the costs are also stored as root
    attributes ``analysis_seconds_<name>``.
    """
    for name in names:
        module(name)  # unknown names fail before any work
    data = RunData.open(run)
    other_data = [RunData.open(o) for o in others]
    if other_data and any(ANALYSES.entry(n).uses_others for n in names):
        from purify.analysis.transfer import check_same_problem

        for other in other_data:  # refuse before any work, not after the cheaper analyses
            check_same_problem(data, other)
    finished = done(run)
    costs: dict[str, float] = {}
    for name in names:
        if name in finished and not force:
            continue
        if log is not None:
            log(f"analysis: {name} ...")
        t0 = time.perf_counter()
        mod = module(name)
        ds = mod.compute(data, other=other_data) if ANALYSES.entry(name).uses_others else mod.compute(data)
        S.write_group(run, f"analysis/{name}", ds)
        costs[name] = time.perf_counter() - t0
        finished = [n for n in done(run) if n != name] + [name]
        S.update_attrs(run, analyses_done=",".join(finished), **{f"analysis_seconds_{name}": costs[name]})
    return costs


def open_analysis(run: str | Path, name: str):
    """The stored dataset of analysis ``name`` (``StoreError`` if it was not computed)."""
    if name not in done(run):
        raise S.StoreError(f"{run} has no {name} analysis; run: purify analyze {run}")
    return S.open_run(run, f"analysis/{name}")

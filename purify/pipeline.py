"""One run through the whole pipeline — simulate, analyze, plot — or the run already there.

:func:`ensure_run` is what ``purify simulate`` does (training and evaluation, then the
per-neuron analyses of :mod:`purify.analysis`, then the figures of :mod:`purify.plots`), as a
library call that is safe to repeat: a folder that already holds a complete run *of the same
config* is reused, and only what it lacks (analyses, figures) is computed.  Notebooks and
scripts call it at their top, so running them a second time, or running several of them
against one folder, costs the training once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from purify import store as S
from purify.analysis import ANALYSES, analyze
from purify.config import RunConfig
from purify.simulate import simulate


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """The fields where two configs differ, as ``"section.field: a != b"`` lines (sorted)."""
    fa, fb = _flat(dataclasses.asdict(a)), _flat(dataclasses.asdict(b))
    return [f"{key}: {fa.get(key)!r} != {fb.get(key)!r}" for key in sorted(fa.keys() | fb.keys())
            if fa.get(key) != fb.get(key)]


def ensure_run(
    config: RunConfig,
    run: str | Path,
    *,
    analyses: Sequence[str] = ANALYSES,
    figures: bool = True,
    progress: bool = True,
) -> Path:
    """Make sure ``run`` holds the complete run of ``config``, with its analyses and figures.

    * ``run`` does not exist (or is an empty folder): simulate ``config`` into it;
    * it holds a run of the same resolved config: reuse it — resumed from its checkpoint if it
      was stopped, untouched if complete;
    * it holds a run of another config: refuse (:class:`purify.store.StoreError` naming the
      first differing fields); nothing is deleted.

    Then compute the analyses of ``analyses`` that the run lacks (:func:`purify.analysis.analyze`,
    idempotent) and, with ``figures``, draw the figures missing from ``RUN/figures``
    (:func:`purify.plots.plot_run`).

    Parameters
    ----------
    config : the run's config. Give it a ``seed``: a config without one resolves to a freshly
        drawn seed and therefore never matches a stored run.
    run : the run folder.
    analyses : names from :data:`purify.analysis.ANALYSES` (``()`` for none).
    figures : draw the figures the run has data for (PNG).
    progress : show the training progress bars.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    purify.store.StoreError
        ``run`` holds another run, is not a purify run, is in use, or its run failed.
    """
    run = Path(run)
    resolved = config.resolve()
    exists = run.exists() and any(run.iterdir())
    if exists and S.store_path(run).exists():
        attrs = S.read_attrs(run)
        stored = RunConfig.from_json(attrs["config_json"])
        diff = config_differences(stored, resolved)
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise S.StoreError(f"{run} holds a run of another config (stored != asked: {shown}); "
                               f"choose another folder or delete this one")
        if attrs.get("status") == "failed":
            S.open_run(run, require_complete=True)  # raises, with the stored reason
        if attrs.get("status") != "complete":
            simulate(resolved, run, resume=True, progress=progress)
    else:
        # An empty or missing folder starts a new run; anything else is refused by simulate.
        simulate(resolved, run, progress=progress)
    if analyses:
        with S.RunLock(run):
            analyze(run, names=tuple(analyses))
    if figures:
        from purify.plots import FIGURES, plan, plot_run

        folder = run / S.FIGURES_NAME
        missing = [name for name, why in plan(run).items()
                   if why is None and not (folder / f"{name}.png").exists()]
        if missing:
            plot_run(run, names=[n for n in FIGURES if n in missing])
    return run

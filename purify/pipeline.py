"""One orchestration path: simulate or resume → analyze under the lock → plot.

The command line (``purify simulate``, ``purify analyze``), the notebooks and the sweep cells
all go through these functions, so a run is made, continued, analysed and drawn the same way
whoever asks:

* :func:`run_simulation` — :func:`purify.simulate.simulate` plus the run's provenance record
  (:mod:`purify.provenance`: command line, host, device, threads, versions), one per session,
  on the run's matmul backend (:func:`run_backend`);
* :func:`simulate_or_resume` — start a run, or continue the one stored in the folder if it is of
  the same config (refusing another config);
* :func:`analyze_locked` — the analyses a run lacks, computed while holding its lock, on the
  backend the run was trained on;
* :func:`draw_figures` — its figures;
* :func:`ensure_run` — all three, safe to repeat: notebooks and scripts call it at their top,
  so running them a second time, or several of them against one folder, costs the training once.

:func:`notebook_config` is the one small run the notebooks share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from purify import matmul, provenance
from purify import store as S
from purify.analysis import ANALYSES, analyze, done
from purify.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from purify.simulate import simulate

#: The run folder of the notebooks, relative to the kernel's working folder.
NOTEBOOK_RUN = Path("runs/notebooks-d200-k10-seed0")


def notebook_config() -> RunConfig:
    """The small run the notebooks share (``d = 200``, ``k = 10``, seed 0): more weight snapshots
    than ``purify simulate``'s defaults (notebook 01 follows neurons through them) and only
    ℓ₂ attacks, to halve the evaluation time."""
    return RunConfig(
        data=DataConfig(d=200, k=10),
        train=TrainConfig(clean_snapshots=12, adv_snapshots=6),
        eval=EvalConfig(norms=("l2",)),
        seed=0,
    )


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


def run_backend(run: str | Path, *, resume: bool) -> str:
    """The matmul backend (:mod:`purify.matmul`) of a session of ``run``: the one the run stored
    (``blas`` for a store written before purify recorded it) when ``resume`` and the store is
    readable, else :func:`purify.matmul.choose_backend`'s fresh choice (``PURIFY_MATMUL`` overrides).

    Raises
    ------
    ValueError
        A fresh choice with a ``PURIFY_MATMUL`` that names no usable backend.
    """
    stored = None
    if resume:
        with contextlib.suppress(S.StoreError, OSError, ValueError):  # unreadable: simulate says why
            stored = S.read_attrs(run).get("matmul", "blas")
    return matmul.choose_backend(override=os.environ.get(matmul.ENV), stored=stored)


def run_simulation(
    config: RunConfig,
    run: str | Path,
    *,
    on_start: Callable[[RunConfig], None] | None = None,
    command: Sequence[str] | None = None,
    backend: str | None = None,
    **options: bool,
) -> dict:
    """:func:`purify.simulate.simulate` (``options``: ``resume``, ``overwrite``, ``progress``),
    recording the session's provenance in the store.

    The products run on ``backend`` (default :func:`run_backend`: the stored one when resuming),
    which the store records; the caller's backend is restored after.

    The record (``command`` defaults to ``sys.argv``) is taken when the session starts and
    appended when it ends — complete, stopped, diverged or failed — so a resumed run lists
    every command that wrote it.  ``on_start``, the return value and the exceptions are
    simulate's.
    """
    import torch

    records: list[provenance.Provenance] = []

    def start(resolved: RunConfig) -> None:
        # Called under the run's lock: a resumed store's records are read before this session
        # writes anything (a new store has none, and a half-created one is started afresh).
        if options.get("resume"):
            with contextlib.suppress(S.StoreError, OSError):
                records.extend(provenance.read(S.read_attrs(run)))
        records.append(provenance.current(kind="run", config=resolved.to_json(), seed=int(resolved.seed),
                                          device=resolved.device, threads=torch.get_num_threads(),
                                          command=command))
        if on_start is not None:
            on_start(resolved)

    if backend is None:
        backend = run_backend(run, resume=bool(options.get("resume")))
    try:
        with matmul.using(backend):
            return simulate(config, run, on_start=start, **options)
    finally:
        if records:
            with contextlib.suppress(S.StoreError, OSError):  # the store's own error is what is reported
                S.update_attrs(run, **provenance.attrs(records))


def simulate_or_resume(
    config: RunConfig, run: str | Path, *, restart_unreadable: bool = False, resume_failed: bool = False,
    **session: Any,
) -> None:
    """Make ``run`` hold the complete run of ``config``, training only what is missing.

    * ``run`` does not exist (or is an empty folder): simulate ``config`` into it;
    * it holds a run of the same resolved config: resume it from its checkpoint (nothing to do
      if it is complete);
    * it holds a run of another config: refuse (:class:`purify.store.StoreError` naming the
      first differing fields); nothing is deleted.

    Parameters
    ----------
    restart_unreadable : start afresh a folder whose store cannot be read (a sweep cell killed
        while its store was being created), instead of refusing it.
    resume_failed : resume a run marked ``failed`` (a write error, which may not repeat)
        instead of refusing it with its stored reason.
    session : ``progress``, and ``command``, the command line recorded as provenance
        (:func:`run_simulation`).
    """
    run = Path(run)
    resolved = config.resolve()
    if not run.exists() or not any(run.iterdir()) or not (restart_unreadable or S.store_path(run).exists()):
        # An empty or missing folder starts a new run; anything else is refused by simulate.
        run_simulation(resolved, run, **session)
        return
    try:
        attrs = S.read_attrs(run)
    except S.StoreError:
        if not restart_unreadable:
            raise
        run_simulation(resolved, run, overwrite=True, **session)
        return
    diff = config_differences(RunConfig.from_json(attrs["config_json"]), resolved)
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise S.StoreError(f"{run} holds a run of another config (stored != asked: {shown}); "
                           f"choose another folder or delete this one")
    if attrs.get("status") == "failed" and not resume_failed:
        S.open_run(run, require_complete=True)  # raises, with the stored reason
    if attrs.get("status") != "complete":
        run_simulation(resolved, run, resume=True, **session)


def analyze_locked(run: str | Path, names: Sequence[str] = ANALYSES, **options: Any) -> dict[str, float]:
    """:func:`purify.analysis.analyze` (``options``: ``force``, ``others``, ``log``) while
    holding the run's lock, so that no other process resumes, overwrites or analyses it
    meanwhile; the lock is not taken when nothing is missing (and no ``others`` are to be
    checked).  The analyses' products run on the backend the run was trained on, so computing
    them later (``purify analyze --force``) gives the numbers ``purify simulate`` stored.
    Returns the seconds each computed analysis took."""
    if not options.get("force") and not options.get("others") and all(n in done(run) for n in names):
        return {}
    with S.RunLock(S.run_dir(run)), matmul.using(run_backend(run, resume=True)):
        return analyze(run, names=tuple(names), **options)


def draw_figures(run: str | Path, *, only_missing: bool = False, formats: Sequence[str] = ("png",)) -> list[Path]:
    """The run's figures that it has data for (:func:`purify.plots.plot_run`), in each of
    ``formats``; with ``only_missing``, only those without a PNG in ``RUN/figures`` yet.
    Returns the files written."""
    from purify.plots import FIGURES, plan, plot_run

    if not only_missing:
        return plot_run(run, formats=formats)
    folder = S.run_dir(run) / S.FIGURES_NAME
    missing = [name for name, why in plan(run).items() if why is None and not (folder / f"{name}.png").exists()]
    return plot_run(run, formats=formats, names=[n for n in FIGURES if n in missing]) if missing else []


def ensure_run(
    config: RunConfig,
    run: str | Path,
    *,
    analyses: Sequence[str] = ANALYSES,
    figures: bool = True,
    progress: bool = True,
) -> Path:
    """Make sure ``run`` holds the complete run of ``config``, with its analyses and figures.

    :func:`simulate_or_resume` (a run of another config, or a failed one, is refused with
    :class:`purify.store.StoreError`), then the analyses of ``analyses`` the run lacks
    (:func:`analyze_locked`) and, with ``figures``, the figures missing from ``RUN/figures``
    (:func:`draw_figures`).

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
    """
    run = Path(run)
    simulate_or_resume(config, run, progress=progress)
    if analyses:
        analyze_locked(run, analyses)
    if figures:
        draw_figures(run, only_missing=True)
    return run

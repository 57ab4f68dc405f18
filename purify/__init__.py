"""purify: watch feature purification and adversarial robustness happen in two-layer networks.

The pipeline, one stage each: :mod:`purify.config` → :mod:`purify.data` →
:mod:`purify.learners` → :mod:`purify.train` → :mod:`purify.attacks` → :mod:`purify.evaluate`
→ :mod:`purify.store` → :mod:`purify.summary` → :mod:`purify.analysis` → :mod:`purify.plots`
→ :mod:`purify.cli`.  :mod:`purify.simulate` runs one training run end to end,
:mod:`purify.pipeline` adds its analyses and figures, :mod:`purify.sweep` runs grids of runs
and :mod:`purify.experiments` the companion papers' experiments.  The mathematics each module
implements is written out in ``docs/theory.md``.
"""

__version__ = "0.1.0"

# The names a notebook or script needs, importable from the top (``from purify import
# ensure_run, RunData``) but loaded on first use, so ``purify --help`` does not import torch.
# The function ``simulate`` stays at ``purify.simulate.simulate``: the top-level name is the module.
_EXPORTS = {
    "RunConfig": "purify.config",
    "DataConfig": "purify.config",
    "NetConfig": "purify.config",
    "TrainConfig": "purify.config",
    "EvalConfig": "purify.config",
    "ensure_run": "purify.pipeline",
    "open_run": "purify.store",
    "load_run": "purify.store",
    "RunData": "purify.analysis.rundata",
    "analyze": "purify.analysis",
    "open_analysis": "purify.analysis",
    "plot_run": "purify.plots",
    "draw": "purify.plots",
    "summarize": "purify.summary",
    "format_summary": "purify.summary",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'purify' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""The companion papers' experiments, reproduced on synthetic or package-bundled data.

One module per experiment, each with ``TITLE``, ``PAPER``, ``FULL_TIME`` (expected wall time of
full mode on 2 cores) and ``run(ctx: Context) -> Result``; :func:`run_experiment` owns
everything around it — the output folder, its lock, the zarr store, figures and the markdown
summary — so the experiment modules are pure computation plus plotting.

    purify experiment NAME [--quick]  ==  run_experiment(NAME, quick=True)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from purify.experiments.framework import Claim, Context, Result, run_experiment

#: name on the command line -> module in this package.
EXPERIMENTS: dict[str, str] = {
    "lazy-vs-feature": "lazy_vs_feature",
    "lazy-single-step": "lazy_single_step",
    "lazy-adversarial": "lazy_adversarial",
    "random-net": "random_net",
    "ntk-adversarial": "ntk_adversarial",
    "ntk-lower-bound": "ntk_lower_bound",
}


def load(name: str) -> ModuleType:
    """The module of experiment ``name``; ``ValueError`` naming the allowed ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; allowed: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"purify.experiments.{EXPERIMENTS[name]}")


def default_out(name: str, quick: bool) -> Path:
    """``runs/experiments/NAME`` (``NAME-quick`` in quick mode), relative to the working folder."""
    return Path("runs") / "experiments" / (f"{name}-quick" if quick else name)


__all__ = ["EXPERIMENTS", "Claim", "Context", "Result", "default_out", "load", "run_experiment"]

"""Run the `lazy-adversarial` experiment (see `purify/experiments/lazy_adversarial.py`).

    python experiments/lazy_adversarial.py [--quick] [--seed S] [--out DIR] [--overwrite] [--quiet]

is `purify experiment lazy-adversarial ...`; from Python, `main(quick=True)` runs it and returns the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import purify.cli
import purify.experiments

NAME = "lazy-adversarial"


def main(quick: bool = False, out: str | Path | None = None) -> Path:
    """Run the experiment into `out` (default `runs/experiments/NAME[-quick]`); return the folder."""
    return purify.experiments.run_experiment(NAME, out, quick=quick)


if __name__ == "__main__":
    sys.exit(purify.cli.main(["experiment", NAME, *sys.argv[1:]]))

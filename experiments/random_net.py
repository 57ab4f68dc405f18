"""Run the `random-net` experiment (see `purify/experiments/random_net.py`).

    python experiments/random_net.py [--quick] [--seed S] [--out DIR] [--overwrite] [--quiet]

is `purify experiment random-net ...`; from Python, `main(quick=True)` runs it and returns the folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import purify.cli
import purify.experiments

NAME = "random-net"


def main(quick: bool = False, out: str | Path | None = None) -> Path:
    """Run the experiment into `out` (default `runs/experiments/NAME[-quick]`); return the folder."""
    return purify.experiments.run_experiment(NAME, out, quick=quick)


if __name__ == "__main__":
    sys.exit(purify.cli.main(["experiment", NAME, *sys.argv[1:]]))

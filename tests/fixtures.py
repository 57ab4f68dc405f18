"""Small models with closed forms, shared by the attack and evaluation tests."""

from __future__ import annotations

import contextlib
import io

import torch

from purify.cli import main


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class LinearModel:
    """f(x) = <w, x>; the steepest-descent attack on it has a closed form."""

    def __init__(self, w: torch.Tensor) -> None:
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    __call__ = forward

    def forward_and_input_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.w, self.w.expand_as(x)


def run_main(*argv) -> tuple[int, str, str]:
    """``purify.cli.main(argv)`` in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


#: Options that resume a run quietly, without analyses.
RESUME = ["--resume", "--quiet", "--no-analysis"]
#: Every command that reads a run store, as argv templates (``{run}`` is the run folder).
READERS = {
    "info": ["info", "{run}"],
    "info --json": ["info", "{run}", "--json"],
    "analyze": ["analyze", "{run}"],
    "plot": ["plot", "{run}"],
    "simulate --resume": ["simulate", "--out", "{run}", *RESUME],
}

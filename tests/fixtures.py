"""Small models with closed forms, shared by the attack and evaluation tests."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import xarray as xr

from purify import store as S
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


#: Root attributes that legitimately differ between two runs of the same config: the last
#: session's wall time and the sessions that wrote the run.
VOLATILE_ATTRS = ("elapsed_seconds", "final_evaluation_seconds", "provenance_json")


def all_groups(run: Path) -> list[str]:
    """Every group of the store, found on disk (so an unexpected extra group is noticed)."""
    root = S.store_path(run)
    groups = []
    for meta in root.rglob("zarr.json"):
        if json.loads(meta.read_text()).get("node_type") == "group":
            groups.append("" if meta.parent == root else meta.parent.relative_to(root).as_posix())
    return sorted(groups)


def assert_same_store(a: Path, b: Path, groups: Sequence[str] | None = None) -> None:
    """Every group identical (``groups``, and no other; default: those of ``a``): values bit for
    bit, coordinates, attributes (but wall time)."""
    groups = all_groups(a) if groups is None else groups
    assert all_groups(a) == all_groups(b) == sorted(groups)
    for group in groups:
        x, y = S.load_run(a, group), S.load_run(b, group)
        if not group:
            x.attrs = {k: v for k, v in x.attrs.items() if k not in VOLATILE_ATTRS}
            y.attrs = {k: v for k, v in y.attrs.items() if k not in VOLATILE_ATTRS}
        xr.testing.assert_identical(x, y)
        for name in x.variables:
            if x[name].dtype.kind == "f":
                assert x[name].values.tobytes() == y[name].values.tobytes(), (group, name)

"""What every experiment shares: its context, its result, and how a result is written.

An experiment folder holds ``store.zarr`` (a purify store: format-versioned, atomic writes,
``status`` ``running`` → ``complete``), ``figures/*.png`` and ``summary.md``, the measured
numbers next to the paper's.  The folder is locked while the experiment runs, and an existing
one is only replaced with ``overwrite`` — the rules ``purify simulate`` follows.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import xarray as xr
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from purify import provenance, rng
from purify import store as S

SUMMARY_NAME = "summary.md"
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """How to run: mode, seed, device, progress, and where figures and store will go."""

    name: str
    out: Path
    quick: bool
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def generator(self, stream: str) -> torch.Generator:
        """An independent named stream of the experiment's seed (see :mod:`purify.rng`)."""
        return rng.generator(self.seed, f"{self.name}/{stream}", self.device)

    def seed_for(self, stream: str) -> int:
        """An integer seed of a named stream, for numpy / scikit-learn / purify configs."""
        return rng.stream_seed(self.seed, f"{self.name}/{stream}") % (2**31)

    def bar(self, items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
        """``items`` with a progress bar unless progress is off."""
        return iter(tqdm(items, total=total, desc=desc, disable=not self.progress, leave=False))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's count.

    The experiments' matmuls are small (``(n, m)`` with ``n ≤ 100`` or stacks of small nets),
    so thread synchronization costs more than it saves: on a loaded 2-core machine one thread
    was 2–15× faster than two. One thread also makes the numbers independent of the machine's
    thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Claim:
    """One row of "What purify reproduces": a claim, what purify measured, what the paper says.

    ``agrees`` is ``True``/``False`` when the measurement can be compared with the paper's
    number or statement, ``None`` when it is only reported.
    """

    claim: str
    measured: str
    paper: str
    agrees: bool | None = None


@dataclass
class Result:
    """What an experiment's ``run`` returns: data, figures, claims, parameters, notes."""

    groups: Mapping[str, xr.Dataset]
    figures: Mapping[str, Figure]
    claims: list[Claim]
    params: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""


def _verdict(agrees: bool | None) -> str:
    return {True: "agrees", False: "disagrees", None: "reported"}[agrees]


def summary_markdown(module, ctx: Context, result: Result, elapsed: float) -> str:
    """The ``summary.md`` of an experiment: a table of claims and the figures."""
    mode = "quick" if ctx.quick else "full"
    command = f"purify experiment {ctx.name}" + (" --quick" if ctx.quick else "")
    lines = [
        f"# {module.TITLE}",
        "",
        f"Reproduces: {module.PAPER}.  ",
        f"Command: `{command}` (seed {ctx.seed}, {mode} mode, {elapsed:.0f} s on this machine; "
        f"full mode: {module.FULL_TIME}).",
        "",
        "| claim | purify measured | paper | agreement |",
        "|---|---|---|---|",
    ]
    for c in result.claims:
        lines.append(f"| {c.claim} | {c.measured} | {c.paper} | {_verdict(c.agrees)} |")
    if result.notes:
        lines += ["", result.notes.strip()]
    if result.figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}](figures/{name}.png)" for name in result.figures]
    return "\n".join(lines) + "\n"


def run_experiment(
    name: str,
    out: str | Path | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    command: Sequence[str] | None = None,
) -> Path:
    """Run experiment ``name`` and write its folder; return the folder.

    ``command`` is the command line recorded as its provenance (default ``sys.argv``).

    Raises
    ------
    ValueError
        Unknown experiment.
    purify.store.StoreError
        The folder holds something else, an experiment already (without ``overwrite``), or is
        in use by another process.
    """
    from purify.experiments import default_out, load
    from purify.plots import save_figure

    module = load(name)
    out = Path(out) if out is not None else default_out(name, quick)
    S.prepare_run_dir(out, overwrite=overwrite, resume=False, also_ours=(SUMMARY_NAME,))
    ctx = Context(name=name, out=out, quick=quick, seed=seed, device=device, progress=progress)
    with S.RunLock(out):
        record = provenance.current(kind="experiment", seed=seed, device=device, command=command,
                                    experiment=name, quick=quick)
        start = time.perf_counter()
        result: Result = module.run(ctx)
        elapsed = time.perf_counter() - start
        attrs = {
            "kind": "experiment",
            "experiment": name,
            "quick": quick,
            "seed": seed,
            "device": device,
            "elapsed_seconds": round(elapsed, 1),
            "params_json": json.dumps(dict(result.params), default=str),
            "claims_json": json.dumps([c.__dict__ for c in result.claims]),
            **provenance.attrs([dataclasses.replace(record, config=json.dumps(dict(result.params), default=str))]),
        }
        S.create_store(out, dict(result.groups), attrs)
        figures = out / S.FIGURES_NAME
        figures.mkdir(exist_ok=True)
        for fig_name, fig in result.figures.items():
            save_figure(fig, figures / f"{fig_name}.png", "png")
        S.write_text_atomically(out / SUMMARY_NAME, summary_markdown(module, ctx, result, elapsed))
        S.update_attrs(out, status="complete")
    return out


def module_doc(name: str) -> str:
    """First line of an experiment module's docstring (for ``purify experiment --list``)."""
    from purify.experiments import EXPERIMENTS

    mod = importlib.import_module(f"purify.experiments.{EXPERIMENTS[name]}")
    return (mod.__doc__ or "").strip().splitlines()[0]

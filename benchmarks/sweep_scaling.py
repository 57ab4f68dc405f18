"""Benchmark: the same sweep on a local Dask cluster of 1 worker and of 2, and their ratio.

    python benchmarks/sweep_scaling.py [--d 64] [--k 4] [--seeds 8] [--workers 1,2] [--quick]

Each cell is one ``purify simulate`` run (one torch thread) in its own worker process, so on a
machine with ``N`` free cores ``N`` workers should take ``1/N`` of the time, less the fixed
costs that do not shrink: starting the cluster, importing torch in every worker, the last
cell running alone, and combining the stores.  Cells have to be large against those (seconds,
not milliseconds) for the ratio to approach ``N``.  Both sweeps must combine into identical
datasets: a cell's numbers depend on its threads, not on how many workers ran the sweep.
Timings on a shared machine are inflated by the other jobs; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import xarray as xr

from purify.sweep import build_spec, machine_cores, run_sweep


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seeds", type=int, default=8, help="cells: one per seed")
    p.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    p.add_argument("--quick", action="store_true", help="tiny cells (d=24, 100 steps): shows the overhead")
    args = p.parse_args(argv)
    d, steps = (24, 100) if args.quick else (args.d, None)
    fixed = [("data.d", (d,)), ("data.k", (args.k,)), ("eval.norms", (("l2",),)), ("eval.radii", ((1.0,),)),
             ("seed", tuple(range(args.seeds)))]
    if steps is not None:
        fixed += [("train.clean_steps", (steps,)), ("eval.n_eval", (100,)), ("data.n_test", (500,))]
    spec = build_spec(None, fixed)
    counts = [int(w) for w in args.workers.split(",")]
    cfg = spec.cells()[0].config
    print(f"sweep of {len(spec.cells())} cells: d={d} k={args.k} m={cfg.net.width} steps clean={cfg.train.clean_steps} "
          f"adv={cfg.train.adv_steps}, eval l2 at tau only; {machine_cores()} cores, 1 torch thread per cell")
    walls: dict[int, float] = {}
    results: dict[int, xr.Dataset] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            t0 = time.perf_counter()
            res = run_sweep(spec, Path(tmp) / f"workers{n}", workers=n, progress=False, log=lambda _: None)
            walls[n] = time.perf_counter() - t0
            results[n] = res.dataset
            print(f"{n} worker{'s' * (n != 1)}: {walls[n]:7.1f} s wall, "
                  f"{float(res.dataset.elapsed_seconds.mean()):5.1f} s training+evaluation per cell")
    base = counts[0]
    for n in counts[1:]:
        print(f"ratio {base} -> {n} workers: {walls[base] / walls[n]:.2f}x")
        same = all(results[n][v].equals(results[base][v]) for v in results[base].data_vars
                   if v not in ("attempts", "elapsed_seconds"))
        print(f"identical results with {n} and {base} workers: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

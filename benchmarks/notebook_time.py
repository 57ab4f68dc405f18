"""Benchmark: what each notebook costs a reader, in CPU time and in this machine's GEMM units.

    python benchmarks/notebook_time.py              # every notebooks/NN_*.py, in order
    python benchmarks/notebook_time.py notebooks/02_lazy_vs_feature_learning.py

Executes each notebook top to bottom on a fresh kernel (nbclient, one torch thread, as
``tests/test_notebooks.py`` does) in one temporary working folder, in the order given, so the
run that ``00_quickstart`` makes is reused by the notebooks after it: a reader's path through
them.  Prints each notebook's CPU seconds (the kernel's user + system time, which a busy
neighbour inflates far less than wall time), its wall seconds, and the CPU time in units of
this machine's one-thread float32 GEMM rate measured in this process before and after
(``TFLOP-eq`` = CPU seconds × rate): the size of the notebook's work, which compares across
machines where seconds do not.  The suite executes the notebooks but asserts no time: how
fast a machine is belongs here, not in a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from run_time import gemm_rate

ROOT = Path(__file__).resolve().parents[1]
#: The default run's product shape (batch × d) @ (d × m): the rate a notebook's runs come close to.
SHAPE = (512, 1000, 2000)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(path: Path, workdir: Path) -> tuple[float, float]:
    """Run the notebook at ``path`` in ``workdir`` on a fresh one-thread kernel; returns (CPU
    seconds of the kernel, wall seconds).  Raises nbclient's CellExecutionError on any error."""
    import jupytext
    import nbclient

    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cpu0, t0 = _children_cpu(), time.perf_counter()
    client.execute(env=env)
    # the kernel has exited and been reaped by now, so its time is in RUSAGE_CHILDREN
    return _children_cpu() - cpu0, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="jupytext notebooks to run in order (default: notebooks/NN_*.py)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    for path in paths:
        if not path.is_file():
            parser.error(f"{path}: no such notebook")

    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f}; one thread per kernel", flush=True)
    before = max(gemm_rate(*SHAPE).values())
    rows = []
    with tempfile.TemporaryDirectory(prefix="purify-notebooks-") as workdir:
        for path in paths:
            cpu, wall = execute(path, Path(workdir))
            rows.append((path.stem, cpu, wall))
            print(f"  ran {path.stem}: {cpu:.1f} s CPU", file=sys.stderr, flush=True)
    after = max(gemm_rate(*SHAPE).values())
    rate = statistics.mean([before, after])

    print(f"GEMM {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} float32, 1 thread: {before / 1e9:.1f} GFLOP/s before, "
          f"{after / 1e9:.1f} after; load average {os.getloadavg()[0]:.1f}")
    print(f"{'notebook':<32} {'CPU s':>8} {'wall s':>8} {'TFLOP-eq':>9}")
    for name, cpu, wall in rows:
        print(f"{name:<32} {cpu:8.1f} {wall:8.1f} {cpu * rate / 1e12:9.2f}")
    total = sum(r[1] for r in rows)
    print(f"{'total':<32} {total:8.1f} {sum(r[2] for r in rows):8.1f} {total * rate / 1e12:9.2f}")


if __name__ == "__main__":
    main()

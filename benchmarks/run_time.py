"""Benchmark: where the time of a whole ``purify simulate`` run goes, against its GEMM floor.

    python benchmarks/run_time.py                  # the default run (d = 1000, k = 60)
    python benchmarks/run_time.py --d 2000         # the large run
    python benchmarks/run_time.py --quick          # d = 300: a smoke test of a minute or two
    python benchmarks/run_time.py -- --n-eval 200  # anything after -- goes to purify simulate

Runs ``purify simulate`` (analyses and figures included) in this process with lightweight
timers wrapped around the library's functions from here — nothing in the library is
instrumented — and prints the time of each part: training steps (with the attack inside an
adversarial step), batch sampling, evaluation (by attack and by snapshot), analyses, figures,
store writes, and the rest.  Parts are exclusive: a store write inside an evaluation counts as
a store write, so the parts add up to the wall time.

The floor: the run's matrix-product FLOPs divided by the rate of a ``(batch × d) @ (d × m)``
float32 product measured in this process, at the run's thread count, before and after the run,
on each matmul backend available (``purify.matmul``); the fastest rate is used, whichever
backend the run used.  The FLOPs are counted exactly from the shapes of every product of
the two networks' forward and gradient passes (``X Wᵀ``, ``C W`` and ``Cᵀ X`` of the symmetric
network, ``X M`` and its transpose of the ideal model), wherever they run — training, the
snapshot evaluations, the end-of-phase evaluation, the analyses — so the floor is what the run
would cost doing nothing but those products.  Matrix-vector products, the Lasso and the
analyses' numpy work are not counted, which can only lower the floor (and raise the ratio).
The ratio ``wall / floor`` is how far the run is from doing nothing but its matrix products.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


class Timers:
    """Exclusive wall time per part: a part nested in another is subtracted from its parent."""

    def __init__(self) -> None:
        self.self_time: dict[str, float] = defaultdict(float)
        self.calls: dict[str, list[float]] = defaultdict(list)  # inclusive time of each call
        self._stack: list[list] = []  # [name, start, child time]

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        if self._stack and self._stack[-1][0] == name:  # re-entrant: counted once, outermost
            yield
            return
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.perf_counter() - frame[1]
            self.self_time[name] += total - frame[2]
            self.calls[name].append(total)
            if self._stack:
                self._stack[-1][2] += total

    def current(self) -> str | None:
        return self._stack[-1][0] if self._stack else None

    def outermost(self, names: tuple[str, ...]) -> str | None:
        """The outermost running part among ``names``."""
        return next((f[0] for f in self._stack if f[0] in names), None)


#: Parts under which FLOPs are tallied: the outermost of these on the timer stack.
AREAS = ("training steps", "evaluation", "final evaluation", "analyses")


class Flops:
    """Matrix-product FLOPs by area (:data:`AREAS`), counted from the products' shapes."""

    def __init__(self, timers: Timers) -> None:
        self.by_area: dict[str, float] = defaultdict(float)
        self.timers = timers

    def add(self, flops: float) -> None:
        area = self.timers.outermost(AREAS) or "other"
        self.by_area[area] += flops


def _wrap(owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.attr`` by ``make(original)`` if it exists (the library may change)."""
    original = getattr(owner, attr, None)
    if original is not None:
        setattr(owner, attr, functools.wraps(original)(make(original)))


def instrument(timers: Timers, flops: Flops) -> dict[str, int]:
    """Wrap the library's functions with timers and FLOP tallies; return the step counts."""
    import purify.analysis
    import purify.attacks
    import purify.data
    import purify.plots
    import purify.simulate
    import purify.store
    from purify.learners.ideal import IdealRobustModel
    from purify.learners.symmetric import SymmetricReLUNet

    steps = {"clean": 0, "adversarial": 0, "evaluations": 0}

    def timed(name: str) -> Callable[[Callable], Callable]:
        def make(fn: Callable) -> Callable:
            def wrapper(*args, **kwargs):
                with timers.part(name):
                    return fn(*args, **kwargs)
            return wrapper
        return make

    def train_step(fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            steps["adversarial" if kwargs.get("attack") is not None else "clean"] += 1
            with timers.part("training steps"):
                return fn(*args, **kwargs)
        return wrapper

    def evaluation(fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            steps["evaluations"] += 1
            with timers.part("evaluation"):
                return fn(*args, **kwargs)
        return wrapper

    def attack_call(fn: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            where = timers.outermost(AREAS) or "evaluation"
            where = "training" if where == "training steps" else where
            norm = getattr(getattr(self, "norm", None), "name", None) or str(getattr(self, "norm", ""))
            with timers.part(f"{where}: attack {type(self).__name__} {norm}".rstrip()):
                return fn(self, *args, **kwargs)
        return wrapper

    def products(count: Callable[[Any, Any], float]) -> Callable[[Callable], Callable]:
        # 2·n·d·m per (n × d) @ (d × m) product, from the shapes of the model and the input
        def make(fn: Callable) -> Callable:
            def wrapper(model, x, *args, **kwargs):
                flops.add(count(model, x))
                return fn(model, x, *args, **kwargs)
            return wrapper
        return make

    def net_product(model, x) -> float:  # X Wᵀ, C W or Cᵀ X: n·m·d multiply-adds each
        return 2.0 * x.shape[0] * model.W.shape[0] * model.W.shape[1]

    def ideal_product(model, x) -> float:  # X M or (active ⊙ w*) Mᵀ
        return 2.0 * x.shape[0] * model.M.shape[0] * model.M.shape[1]

    _wrap(purify.trainer, "train_step", train_step)
    _wrap(purify.simulate, "evaluate", evaluation)
    _wrap(purify.simulate.Simulation, "_write_eval", timed("evaluation point"))
    _wrap(purify.simulate.Simulation, "final_evaluation", timed("final evaluation"))
    _wrap(purify.attacks.Attack, "__call__", attack_call)
    # preactivation is X Wᵀ of every pass; the gradient passes add one product each
    _wrap(SymmetricReLUNet, "preactivation", products(net_product))
    _wrap(SymmetricReLUNet, "forward_and_input_grad", products(net_product))
    _wrap(SymmetricReLUNet, "input_grad", products(net_product))  # FGM's: C W without the output
    _wrap(SymmetricReLUNet, "loss_and_grad", products(net_product))
    _wrap(IdealRobustModel, "_active", products(ideal_product))
    _wrap(IdealRobustModel, "forward_and_input_grad", products(ideal_product))
    _wrap(purify.data.DataStream, "next", timed("batch sampling"))
    _wrap(purify.data.SparseCodingProblem, "sample", timed("batch sampling"))
    _wrap(purify.analysis, "analyze", timed("analyses"))
    _wrap(purify.plots, "plot_run", timed("figures"))
    # The store's writers. Not the generic file helpers (write_atomically, ...): figures are
    # saved through them, and their rendering would count as a store write.
    for name in ("create_store", "write_group", "write_region", "update_attrs", "save_checkpoint"):
        _wrap(purify.store, name, timed("store writes"))
    return steps


def gemm_rate(n: int, d: int, m: int, seconds: float = 1.5) -> dict[str, float]:
    """FLOP/s of ``(n × d) @ (d × m)`` in float32 at the current thread count (median of runs),
    per matmul backend available here; the floor uses the fastest, whichever the run used."""
    from purify import matmul

    a, b = torch.randn(n, d), torch.randn(d, m)
    previous, rates = matmul.backend(), {}
    try:
        for name in matmul.BACKENDS:
            if name == "onednn" and not matmul.onednn_available():
                continue
            matmul.set_backend(name)
            matmul.matmul(a, b)
            runs, t_end = [], time.perf_counter() + seconds
            while time.perf_counter() < t_end or len(runs) < 5:
                t0 = time.perf_counter()
                matmul.matmul(a, b)
                runs.append(2.0 * n * d * m / (time.perf_counter() - t0))
            rates[name] = statistics.median(runs)
    finally:
        matmul.set_backend(previous)
    return rates


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=None, help="input dimension (default 1000; 300 with --quick)")
    p.add_argument("--k", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="d = 300: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one, deleted)")
    args = p.parse_args(argv)
    d = args.d or (300 if args.quick else 1000)

    from purify import store as S
    from purify.cli import build_parser, config_from_args
    from purify.cli import main as purify_main
    from purify.threads import configure_threads

    sim_args = ["simulate", "--d", str(d), "--k", str(args.k), "--seed", str(args.seed), "--quiet", *extra]
    config = config_from_args(build_parser().parse_args(sim_args)).resolve()
    setting = configure_threads()  # what purify simulate will choose, so the rate matches
    n, m = config.train.batch_size, config.net.width
    load0 = os.getloadavg()[0]
    rate0 = gemm_rate(n, d, m)
    timers = Timers()
    flops = Flops(timers)
    steps = instrument(timers, flops)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = purify_main([*sim_args, "--out", str(out)])
        wall = time.perf_counter() - t0
        used = S.read_attrs(out).get("matmul", "?") if code == 0 else "?"  # the run records its backend
    if code != 0:
        raise SystemExit(f"purify simulate failed with exit code {code}:\n{stdout.getvalue()}")
    rate1 = gemm_rate(n, d, m)
    load1 = os.getloadavg()[0]

    print(f"purify simulate --d {d} --k {args.k} --seed {args.seed} {' '.join(extra)}".rstrip())
    print(f"  m={m} batch={n} steps clean={steps['clean']} adversarial={steps['adversarial']}; "
          f"threads: {setting.describe()}; load average {load0:.1f} before, {load1:.1f} after")
    print(f"{'part':44}{'time (s)':>10}{'share':>8}")
    # (part, prefix of the parts nested in it and printed under it)
    order = [("training steps", "training: "), ("batch sampling", None), ("evaluation", "evaluation: "),
             ("evaluation point", None), ("final evaluation", "final evaluation: "), ("analyses", "analyses: "), ("figures", None), ("store writes", None)]
    rest = [k for k in timers.self_time if k not in dict(order)
            and not any(prefix and k.startswith(prefix) for _, prefix in order)]
    for name, prefix in [*order, *((k, None) for k in sorted(rest))]:
        if name in timers.self_time:
            t = timers.self_time[name]
            label = {"evaluation": "evaluation (outside the attacks)",
                     "evaluation point": "evaluation bookkeeping (snapshots, rows)",
                     "final evaluation": "final evaluation (outside the attacks)"}.get(name, name)
            if name == "training steps":
                label += " (outside the attacks)"
            print(f"  {label:42}{t:10.1f}{t / wall:8.1%}")
        for sub in sorted(k for k in timers.self_time if prefix and k.startswith(prefix)):
            t = timers.self_time[sub]
            print(f"    {sub[len(prefix):]:40}{t:10.1f}{t / wall:8.1%}")
    other = wall - sum(timers.self_time.values())
    print(f"  {'other (setup, summary, progress)':42}{other:10.1f}{other / wall:8.1%}")
    print(f"  {'total (wall)':42}{wall:10.1f}")
    per_point = timers.calls.get("evaluation point", [])
    if per_point:
        print("  evaluation by snapshot (s, incl. its store writes): "
              + " ".join(f"{t:.1f}" for t in per_point))
    total = sum(flops.by_area.values())
    print("matrix-product FLOPs (the networks' products, counted from their shapes): "
          + ", ".join(f"{a} {flops.by_area[a] / 1e12:.3f} T" for a in (*AREAS, "other") if flops.by_area.get(a))
          + f"; total {total / 1e12:.3f} T")
    rate = max(*rate0.values(), *rate1.values())
    floor = total / rate
    print(f"GEMM rate ({n}x{d} @ {d}x{m}, float32), before / after: "
          + ", ".join(f"{name} {rate0[name] / 1e9:.0f} / {rate1[name] / 1e9:.0f} GFLOP/s" for name in rate0)
          + f"; the run's products on {used}; floor (the fastest rate) = {floor:.1f} s")
    print(f"run / floor = {wall / floor:.2f}")
    print("by area (inclusive wall time against its own products' floor):")
    for area in AREAS:
        if flops.by_area.get(area):
            t = sum(timers.calls.get(area, []))
            f = flops.by_area[area] / rate
            print(f"  {area:40}{t:8.1f} s  floor {f:7.1f} s  ratio {t / f:5.2f}")


if __name__ == "__main__":
    main()

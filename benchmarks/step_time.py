"""Benchmark: one training step against its bare matrix products, as a ratio.

    python benchmarks/step_time.py [--d 1000] [--m 2000] [--batch 512] [--repeats 20]

A clean step of the symmetric network costs two (batch × d × m) matrix products
(``X Wᵀ`` and ``Cᵀ X``); an adversarial (FGM) step adds two more (``X Wᵀ`` and ``C W``) for
the input gradient.  The ratio ``step time / bare matmul time`` says how much the
elementwise work (smoothed ReLU, loss, update) and bookkeeping add on top.  Times are noisy
on shared machines, so each is the median of ``--repeats`` runs, and only ratios are meant
to be compared across machines.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from purify.attacks import FGM
from purify.config import DataConfig, RunConfig
from purify.learners.symmetric import SymmetricReLUNet
from purify.simulate import make_problem
from purify.train import train_step


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, thread pool
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--m", type=int, default=2000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.d, generator=g) / args.d**0.5
    y = torch.where(torch.randn(args.batch, generator=g) > 0, 1.0, -1.0)
    W = torch.randn(args.m, args.d, generator=g) * 0.05
    b = 0.8 * W.norm(dim=1) / 60**0.5
    net = SymmetricReLUNet(W, b, 0.05 * b)
    C = torch.rand(args.batch, args.m, generator=g)

    bare_clean = _median_time(lambda: (x @ W.T, C.T @ x), args.repeats)
    bare_adv = _median_time(lambda: (x @ W.T, C @ W, x @ W.T, C.T @ x), args.repeats)
    rho = torch.Generator().manual_seed(1)
    clean = _median_time(
        lambda: train_step(net, _batch(x, y), lr=1.0, lam=0.0, noisy=False, rho_generator=rho),
        args.repeats,
    )
    fgm = FGM("l2")
    adv = _median_time(
        lambda: train_step(net, _batch(x, y), lr=1.0, lam=0.0, noisy=False, rho_generator=rho,
                           attack=fgm, tau=0.1, attack_generator=rho),
        args.repeats,
    )
    # purify simulate draws a fresh batch every step (online SGD): its cost is part of a step.
    problem = make_problem(RunConfig(data=DataConfig(d=args.d)).resolve(seed=0))
    data_gen = torch.Generator().manual_seed(4)
    sample = _median_time(lambda: problem.sample(args.batch, generator=data_gen), args.repeats)
    print(f"d={args.d} m={args.m} batch={args.batch} threads={torch.get_num_threads()}")
    print(f"{'':24}{'step (ms)':>12}{'bare matmuls (ms)':>20}{'ratio':>8}")
    print(f"{'clean step':24}{clean * 1e3:12.1f}{bare_clean * 1e3:20.1f}{clean / bare_clean:8.2f}")
    print(f"{'adversarial step (FGM)':24}{adv * 1e3:12.1f}{bare_adv * 1e3:20.1f}{adv / bare_adv:8.2f}")
    print(f"{'sampling a batch':24}{sample * 1e3:12.1f}{bare_clean * 1e3:20.1f}{sample / bare_clean:8.2f}"
          "   (ratio to the clean step's matmuls)")


def _batch(x, y):
    from purify.data import Batch

    return Batch(x, y, x)


if __name__ == "__main__":
    main()

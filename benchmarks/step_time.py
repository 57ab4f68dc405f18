"""Benchmark: one training step against its bare matrix products and a plain autograd step.

    python benchmarks/step_time.py [--d 1000] [--m 2000] [--batch 512] [--repeats 20] [--threads N]

A clean step of the symmetric network costs two (batch × d × m) matrix products
(``X Wᵀ`` and ``Cᵀ X``); an adversarial (FGM) step adds two more (``X Wᵀ`` and ``C W``) for
the input gradient.  ``purify simulate`` draws a fresh batch every step (online SGD), so the
"online" rows include drawing it.  Each ratio is ``time / bare matrix-product time`` of the
same step: what the elementwise work, the sampling and the bookkeeping add on top.  The steps
and their bare products run on the matmul backend ``purify simulate`` would choose
(``PURIFY_MATMUL`` overrides; see ``purify.matmul``); the same clean products on the other
backend (where this torch build has both) are printed too.

The plain-autograd rows are the same smoothed network written as a user would without
purify: torch ops on a leaf ``W`` (no ``nn.Module``), ``loss.backward()``, and for FGM a
``torch.autograd.grad`` for the input gradient first.  Their ratio to purify's step is the
speed-up of the hand-written gradients.

All variants run interleaved (one repetition of each, in turn, ``--repeats`` times), so a
change of machine load hits them alike; each time is the median.  Compare ratios, not
milliseconds, across machines.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from purify import matmul
from purify.attacks import FGM
from purify.config import DataConfig, RunConfig
from purify.data import Batch
from purify.learners.symmetric import SymmetricReLUNet
from purify.threads import configure_threads
from purify.train import train_step
from purify.trainer import make_problem

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin ``repeats`` times after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _plain_output(W: torch.Tensor, b: torch.Tensor, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_i E_ρ[ReLU(u − b + ρ) − ReLU(−u − b + ρ)]`` with ``E ReLU(v + ρ) = vΦ(v/s) + sφ(v/s)``."""
    u = x @ W.T

    def smooth(v: torch.Tensor) -> torch.Tensor:
        a = v / s
        return v * torch.special.ndtr(a) + s * torch.exp(-0.5 * a * a) * _INV_SQRT_2PI

    return (smooth(u - b) - smooth(-u - b)).sum(dim=1)


def plain_clean_step(W, b, s, x, y, lr):
    """One SGD step with autograd: the baseline a user would write."""
    Wl = W.detach().requires_grad_()
    loss = F.softplus(-y * _plain_output(Wl, b, s, x)).mean()
    loss.backward()
    with torch.no_grad():
        return W - lr * Wl.grad


def plain_fgm_step(W, b, s, x, y, lr, tau):
    """FGM (ℓ2, radius ``tau``) on the smoothed network, then the clean step on ``x + δ``."""
    xl = x.detach().requires_grad_()
    (g,) = torch.autograd.grad((y * _plain_output(W, b, s, xl)).sum(), xl)
    delta = -tau * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return plain_clean_step(W, b, s, x + delta, y, lr)


def parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options a step-level benchmark shares: sizes, repeats and threads."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--d", type=int, default=1000)
    p.add_argument("--m", type=int, default=2000)
    p.add_argument("--k", type=int, default=None, help="sparsity (default 60, at most d/10)")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=None,
                   help="torch/BLAS threads (default: as purify simulate chooses them)")
    return p


def configure(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, object, str]:
    """``(k, thread setting, matmul backend)``: threads and backend set as ``purify simulate`` sets them."""
    k = min(60, max(1, args.d // 10)) if args.k is None else args.k
    if not 1 <= k <= args.d:
        p.error(f"--k {k}: must be in [1, d={args.d}]")
    if args.threads is not None:
        os.environ["PURIFY_THREADS"] = str(args.threads)
    setting = configure_threads()
    backend = matmul.choose_backend(override=os.environ.get(matmul.ENV))  # as purify simulate
    matmul.set_backend(backend)
    return k, setting, backend


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=20)
    p.add_argument("--batch", type=int, default=512)
    args = p.parse_args(argv)
    k, setting, backend = configure(p, args)
    g = torch.Generator().manual_seed(0)
    problem = make_problem(RunConfig(data=DataConfig(d=args.d, k=k)).resolve(seed=0))
    data_gen = torch.Generator().manual_seed(4)
    batch = problem.sample(args.batch, generator=data_gen)
    x, y = batch.x, batch.y
    # A network in the regime of training: b_i ∝ ‖w_i‖ and σ_ρ = b/20 (the norm schedule), so
    # most (example, neuron) pairs are off, as after the lottery phase.
    W = torch.randn(args.m, args.d, generator=g) * 0.05
    b = 0.8 * W.norm(dim=1) / k**0.5
    s = 0.05 * b
    net = SymmetricReLUNet(W, b, s)
    C = torch.rand(args.batch, args.m, generator=g)
    rho = torch.Generator().manual_seed(1)
    fgm = FGM("l2")
    tau = 1 / k**0.5

    def step(bt: Batch, attack=None):
        return train_step(net, bt, lr=1.0, lam=0.0, noisy=False, rho_generator=rho,
                          attack=attack, tau=tau, attack_generator=rho)

    other = "blas" if backend == "onednn" else "onednn" if matmul.onednn_available() else None

    def bare_clean_other():
        with matmul.using(other):
            return matmul.linear(x, W), matmul.matmul(C.T, x)

    times = _interleaved({
        # the products on the backend the steps use (matmul.linear/matmul), and on the other one
        "bare clean": lambda: (matmul.linear(x, W), matmul.matmul(C.T, x)),
        "bare adv": lambda: (matmul.linear(x, W), matmul.matmul(C, W), matmul.linear(x, W), matmul.matmul(C.T, x)),
        **({"bare clean other": bare_clean_other} if other else {}),
        "clean": lambda: step(batch),
        "adv": lambda: step(batch, fgm),
        "sample": lambda: problem.sample(args.batch, generator=data_gen),
        "online clean": lambda: step(problem.sample(args.batch, generator=data_gen)),
        "online adv": lambda: step(problem.sample(args.batch, generator=data_gen), fgm),
        "plain clean": lambda: plain_clean_step(W, b, s, x, y, 1.0),
        "plain adv": lambda: plain_fgm_step(W, b, s, x, y, 1.0, tau),
    }, args.repeats)
    bc, ba = times["bare clean"], times["bare adv"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"d={args.d} k={k} m={args.m} batch={args.batch} threads={setting.describe()} matmul={backend} "
          f"load average at the end={load:.1f} repeats={args.repeats} (medians, interleaved)")
    print(f"{'':30}{'time (ms)':>10}{'bare matmuls (ms)':>19}{'ratio':>7}")
    rows = [("clean step", "clean", bc), ("adversarial step (FGM)", "adv", ba),
            ("sampling a batch", "sample", bc), ("online clean step (+ sampling)", "online clean", bc),
            ("online FGM step (+ sampling)", "online adv", ba),
            ("plain autograd clean step", "plain clean", bc), ("plain autograd FGM step", "plain adv", ba)]
    for label, key, bare in rows:
        print(f"{label:30}{times[key] * 1e3:10.1f}{bare * 1e3:19.1f}{times[key] / bare:7.2f}")
    if other:
        print(f"bare clean products on {other}: {times['bare clean other'] * 1e3:.1f} ms, "
              f"{times['bare clean other'] / bc:.2f}x those on {backend}")
    print(f"plain autograd / purify: clean {times['plain clean'] / times['clean']:.2f}x, "
          f"FGM {times['plain adv'] / times['adv']:.2f}x (same batch, no sampling in either)")


if __name__ == "__main__":
    main()

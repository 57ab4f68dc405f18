"""Benchmark: two layouts of the evaluation's work that were asked for, against the ones in use.

    python benchmarks/eval_layout.py [--d 1000] [--m 2000] [--n-eval 500] [--radii 5] [--repeats 10]

The per-step evaluation (:func:`purify.evaluate.evaluate`) attacks ``n_eval`` held-out
examples once per radius of the grid.  Stacking the radii into one call (``radii × n_eval``
rows) would give each matrix product more rows and the Python loop fewer turns.  The rows
"PGD-10 …" time PGD-10 (the per-step evaluation's attack) both ways on the same examples:
``one by one`` is the loop in use, ``stacked`` one call on the examples repeated once per
radius.  The stacked call here uses one radius for every row: the cost of an attack does not
depend on its radius (every entry is computed), and a per-row radius would need a tensor
``τ`` in the attack API, which is only worth building if the stacked layout is faster.  The
"bare products" rows are the same products alone, ``X Wᵀ`` and ``C W`` per step.

The elementwise pass of the smoothed network (:meth:`SymmetricReLUNet._smoothed_one_sided`,
its sum over neurons included) on one ``n_eval × m`` block: ``whole`` is the pass in use,
``by R rows`` the same operations on row blocks of ``R`` rows, whose buffers stay in a core's
L2 cache (the bits are checked equal before timing).

All variants run interleaved (one repetition of each, in turn, ``--repeats`` times); each time
is the median, and each ratio is to the layout in use.  Compare ratios across machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from step_time import _interleaved, configure, parser

from purify import matmul
from purify.attacks import make_attack
from purify.config import DataConfig, RunConfig
from purify.learners.symmetric import _INV_SQRT_2PI, _SQRT_HALF, SymmetricReLUNet, _gauss_
from purify.trainer import make_problem

#: Row blocks of the chunked elementwise pass.
CHUNK_ROWS = (32, 64, 128)


def rows_pass(net: SymmetricReLUNet, u: torch.Tensor, s: torch.Tensor, inv: torch.Tensor,
              rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`SymmetricReLUNet._smoothed_one_sided` (its output and ``Φ(a)``) by the same
    operations, ``rows`` rows at a time, then the one sum over neurons."""
    val, cdf = torch.empty_like(u), torch.empty_like(u)
    a = torch.empty(min(rows, u.shape[0]), u.shape[1], dtype=u.dtype)
    for i in range(0, u.shape[0], rows):
        block = u[i : i + rows]
        ai = a[: block.shape[0]]
        torch.abs(block, out=ai).sub_(net.b).mul_(inv)
        c = cdf[i : i + rows]
        torch.mul(ai, _SQRT_HALF, out=c).erf_().add_(1.0).mul_(0.5)  # _ndtr's steps, into place
        v = val[i : i + rows]
        torch.mul(ai, c, out=v).add_(_gauss_(ai), alpha=_INV_SQRT_2PI).copysign_(block)
    return val @ s, cdf


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=10)
    p.add_argument("--n-eval", type=int, default=500, help="examples per radius (the per-step evaluation's)")
    p.add_argument("--radii", type=int, default=5, help="radii of the grid (the default grid has 5)")
    args = p.parse_args(argv)
    k, setting, backend = configure(p, args)
    g = torch.Generator().manual_seed(0)
    problem = make_problem(RunConfig(data=DataConfig(d=args.d, k=k)).resolve(seed=0))
    batch = problem.sample(args.n_eval, generator=torch.Generator().manual_seed(4))
    x, y = batch.x, batch.y
    xs, ys = x.repeat(args.radii, 1), y.repeat(args.radii)
    # A network in the regime of training, as in step_time.py: b_i ∝ ‖w_i‖, σ_ρ = b/20.
    W = torch.randn(args.m, args.d, generator=g) * 0.05
    b = 0.8 * W.norm(dim=1) / k**0.5
    net = SymmetricReLUNet(W, b, 0.05 * b)
    C = torch.rand(args.n_eval, args.m, generator=g)
    Cs = C.repeat(args.radii, 1)
    tau = {"l2": 1 / k**0.5, "linf": 1 / (k * args.d) ** 0.5}
    pgd = {norm: make_attack("pgd", norm, pgd_steps=10) for norm in tau}
    rng = torch.Generator().manual_seed(1)
    u = net.preactivation(x)
    s, inv = net._scales()
    whole = net._smoothed_one_sided(u, s, inv)
    for rows in CHUNK_ROWS:  # the same bits, or the comparison would be of different work
        chunked = rows_pass(net, u, s, inv, rows)
        if not all(torch.equal(a, c) for a, c in zip(whole, chunked, strict=True)):
            raise SystemExit(f"the pass by {rows} rows differs from the whole pass on this build")

    def one_by_one(norm: str) -> None:
        for _ in range(args.radii):
            pgd[norm](net, x, y, tau[norm], generator=rng)

    def bare_one_by_one() -> None:
        for _ in range(args.radii):
            matmul.linear(x, W), matmul.matmul(C, W)

    def in_place_pass(rows: int | None) -> Callable[[], object]:
        # PGD-10 on every radius with the network's pass replaced by the one by rows: the pass
        # where it runs, between the products (alone, a block may stay in cache it would not keep)
        def run() -> None:
            if rows is None:
                return one_by_one("l2")
            net._smoothed_one_sided = lambda u, s, inv: rows_pass(net, u, s, inv, rows)
            try:
                one_by_one("l2")
            finally:
                del net._smoothed_one_sided
        return run

    # Three groups, each interleaved within itself: a stacked call's large buffers change the
    # cache and allocator state the small passes then meet.
    groups: list[dict[str, Callable[[], object]]] = [
        {
            "bare one by one": bare_one_by_one,
            "bare stacked": lambda: (matmul.linear(xs, W), matmul.matmul(Cs, W)),
            **{f"pgd {norm} one by one": (lambda norm=norm: one_by_one(norm)) for norm in tau},
            **{f"pgd {norm} stacked": (lambda norm=norm: pgd[norm](net, xs, ys, tau[norm], generator=rng))
               for norm in tau},
        },
        {
            "pass whole": lambda: net._smoothed_one_sided(u, s, inv),
            **{f"pass {rows}": (lambda rows=rows: rows_pass(net, u, s, inv, rows)) for rows in CHUNK_ROWS},
        },
        {"pgd in place whole": in_place_pass(None), "pgd in place rows": in_place_pass(CHUNK_ROWS[-1])},
    ]
    times: dict[str, float] = {}
    for fns in groups:
        times.update(_interleaved(fns, args.repeats))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"d={args.d} k={k} m={args.m} n_eval={args.n_eval} radii={args.radii} threads={setting.describe()} "
          f"matmul={backend} load average at the end={load:.1f} repeats={args.repeats} (medians, interleaved)")
    print(f"{'':50}{'time (ms)':>10}{'ratio':>7}")
    rows = [("bare products of a PGD step, one by one", "bare one by one", "bare one by one"),
            ("bare products of a PGD step, stacked", "bare stacked", "bare one by one")]
    for norm in tau:
        rows += [(f"PGD-10 {norm}, radii one by one", f"pgd {norm} one by one", f"pgd {norm} one by one"),
                 (f"PGD-10 {norm}, radii stacked", f"pgd {norm} stacked", f"pgd {norm} one by one")]
    rows += [("elementwise pass alone, whole block", "pass whole", "pass whole")]
    rows += [(f"elementwise pass alone, by {r} rows", f"pass {r}", "pass whole") for r in CHUNK_ROWS]
    rows += [("PGD-10 l2, radii one by one, pass in use", "pgd in place whole", "pgd in place whole"),
             (f"PGD-10 l2, radii one by one, pass by {CHUNK_ROWS[-1]} rows", "pgd in place rows",
              "pgd in place whole")]
    for label, key, base in rows:
        print(f"{label:50}{times[key] * 1e3:10.2f}{times[key] / times[base]:7.2f}")


if __name__ == "__main__":
    main()

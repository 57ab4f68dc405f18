"""The benchmark scripts run and print self-consistent tables, at tiny sizes: a smoke test of the
scripts the README's performance numbers come from, not a timing.  Each runs in its own process,
because ``run_time.py`` wraps the library's functions with timers for the rest of its process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--m", "64", "--clean-steps", "60", "--adv-steps", "20", "--n-test", "200", "--n-eval", "100",
            "--batch-size", "128", "--pgd-steps", "3", "--clean-snapshots", "4", "--adv-snapshots", "2",
            "--log-points", "10"]


def _bench(script: str, *args: str) -> str:
    env = {**os.environ, "PURIFY_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_step_time_prints_each_step_against_its_products():
    # big enough that the bare products print as more than 0.0 ms on MKL too (a few µs at d = 32)
    out = _bench("step_time.py", "--d", "128", "--m", "256", "--batch", "128", "--repeats", "2")
    assert "d=128 k=12 m=256 batch=128" in out  # k defaults to min(60, d/10)
    rows = re.findall(r"^(\S[^\n\d]*?) +([\d.]+) +([\d.]+) +([\d.]+)$", out, flags=re.M)
    assert [r[0] for r in rows] == ["clean step", "adversarial step (FGM)", "sampling a batch",
                                    "online clean step (+ sampling)", "online FGM step (+ sampling)",
                                    "plain autograd clean step", "plain autograd FGM step"]
    for _, *printed in rows:
        t, bare, ratio = map(float, printed)
        assert t > 0 and bare > 0
        # the ratio is of the unrounded times, each printed to 0.1 ms and itself to 0.01
        assert (t - 0.05) / (bare + 0.05) - 0.005 <= ratio <= (t + 0.05) / max(bare - 0.05, 1e-3) + 0.005
    assert re.search(r"plain autograd / purify: clean [\d.]+x, FGM [\d.]+x", out)


def test_eval_layout_prints_each_layout_against_the_one_in_use():
    out = _bench("eval_layout.py", "--d", "64", "--m", "128", "--n-eval", "40", "--radii", "3", "--repeats", "2")
    assert "d=64 k=6 m=128 n_eval=40 radii=3" in out
    rows = re.findall(r"^(\S[^\n]*?) +([\d.]+) +([\d.]+)$", out, flags=re.M)
    labels = [r[0] for r in rows]
    assert labels == ["bare products of a PGD step, one by one", "bare products of a PGD step, stacked",
                      "PGD-10 l2, radii one by one", "PGD-10 l2, radii stacked",
                      "PGD-10 linf, radii one by one", "PGD-10 linf, radii stacked",
                      "elementwise pass alone, whole block", "elementwise pass alone, by 32 rows",
                      "elementwise pass alone, by 64 rows", "elementwise pass alone, by 128 rows",
                      "PGD-10 l2, radii one by one, pass in use", "PGD-10 l2, radii one by one, pass by 128 rows"]
    times = {label: float(t) for label, t, _ in rows}
    bases = {0: 0, 1: 0, 2: 2, 3: 2, 4: 4, 5: 4, 6: 6, 7: 6, 8: 6, 9: 6, 10: 10, 11: 10}
    for i, (_, t, ratio) in enumerate(rows):
        base = times[labels[bases[i]]]
        assert float(t) > 0
        # each time printed to 0.01 ms, the ratio (of the unrounded times) to 0.01
        assert (float(t) - 0.005) / (base + 0.005) - 0.005 <= float(ratio) <= (float(t) + 0.005) / max(base - 0.005, 1e-4) + 0.005
        if bases[i] == i:
            assert float(ratio) == 1.0


def test_eval_layout_passes_by_rows_are_the_pass_in_use(monkeypatch):
    """The row-block pass the benchmark times computes what the library's one-sided pass does,
    bit for bit (else its timing would compare different work)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import eval_layout as el
    import torch

    from purify.learners.symmetric import SymmetricReLUNet

    g = torch.Generator().manual_seed(3)
    W = torch.randn(70, 30, generator=g)
    b = 0.8 * W.norm(dim=1)
    net = SymmetricReLUNet(W, b, 0.05 * b)
    u = net.preactivation(torch.randn(45, 30, generator=g))
    s, inv = net._scales()
    assert net._one_sided
    out, cdf = net._smoothed_one_sided(u, s, inv)
    for rows in (1, 7, 32, 128):
        o, c = el.rows_pass(net, u, s, inv, rows)
        assert torch.equal(o, out) and torch.equal(c, cdf)


def test_run_time_parts_add_up_and_figures_are_not_store_writes():
    out = _bench("run_time.py", "--d", "32", "--k", "3", "--", *TINY_RUN)
    assert "steps clean=60 adversarial=20" in out
    parts = {name.strip(): float(t) for name, t in re.findall(r"^ {2,4}(\S.*?)\s+([\d.]+)\s+[\d.]+%$", out, flags=re.M)}
    total = float(re.search(r"total \(wall\)\s+([\d.]+)", out).group(1))
    # parts are exclusive, so they add up to the wall time (each printed to 0.1 s)
    assert abs(sum(parts.values()) - total) <= 0.05 * len(parts) + 0.1
    # figures are saved through the store's atomic file writer; rendering them is not a store write
    # (it was, and made store writes look 5x what they are)
    assert parts["figures"] > parts["store writes"]
    assert float(re.search(r"run / floor = ([\d.]+)", out).group(1)) > 1
    flops = re.search(r"total ([\d.]+) T", out)
    assert flops and float(flops.group(1)) > 0


_COUNT = """
import sys, torch
sys.path.insert(0, "benchmarks")
import run_time as rt
timers = rt.Timers(); flops = rt.Flops(timers); rt.instrument(timers, flops)
import purify.trainer
from purify.attacks import FGM, PGD
from purify.data import Batch
from purify.learners.symmetric import SymmetricReLUNet
g = torch.Generator().manual_seed(0)
n, d, m = 16, 8, 12
W = torch.randn(m, d, generator=g)
for b in (torch.full((m,), 0.5), torch.full((m,), 0.01)):  # one-sided and two-sided passes
    net = SymmetricReLUNet(W, b, torch.full((m,), 0.02))
    x = torch.randn(n, d, generator=g); y = torch.sign(torch.randn(n, generator=g))
    kw = dict(lr=1.0, lam=0.0, noisy=False, rho_generator=g, tau=0.1, attack_generator=g)
    for attack in (None, FGM("l2")):
        before = flops.by_area["training steps"]
        purify.trainer.train_step(net, Batch(x, y, None), attack=attack, **kw)
        print(round((flops.by_area["training steps"] - before) / (2 * n * d * m)))
    before = flops.by_area["other"]
    PGD("l2", steps=3)(net, x, y, 0.1, generator=g)
    print(round((flops.by_area["other"] - before) / (2 * n * d * m)))
"""


def test_run_time_counts_every_product_of_a_step_and_an_attack():
    # a clean step is X Wᵀ and Cᵀ X; an FGM step adds X Wᵀ and C W for the input gradient (a
    # count of 3 missed FGM's shortcut); PGD-3 is three passes with gradient and a scored last one
    done = subprocess.run([sys.executable, "-c", _COUNT], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PURIFY_THREADS": "1"}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "4", "7"] * 2


def test_notebook_time_prints_cpu_wall_and_gemm_units_per_notebook(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("jupytext")
    pytest.importorskip("ipykernel")
    # a stand-in notebook that burns a known amount of CPU in its kernel: the real ones take minutes
    notebook = tmp_path / "00_spin.py"
    notebook.write_text("# %% [markdown]\n# # Spin\n\n# %%\nimport time\nt = time.process_time()\n"
                        "while time.process_time() - t < 1.0:\n    pass\n")
    out = _bench("notebook_time.py", str(notebook))
    rate = re.search(r"1 thread: ([\d.]+) GFLOP/s before, ([\d.]+) after", out)
    row = re.search(r"^00_spin +([\d.]+) +([\d.]+) +([\d.]+)$", out, flags=re.M)
    assert rate and row, out
    cpu, wall, teq = map(float, row.groups())
    assert cpu >= 1.0 and wall >= 1.0  # the kernel's own CPU time, which the spin alone makes ≥ 1 s
    # TFLOP-eq = CPU s × the mean GEMM rate, up to the printed roundings (0.1 s, 0.1 GFLOP/s, 0.01)
    mean_rate = (float(rate.group(1)) + float(rate.group(2))) / 2
    assert abs(teq - cpu * mean_rate / 1e3) <= 0.005 + (0.05 * mean_rate + 0.05 * cpu) / 1e3 + 1e-9
    assert re.search(r"^total +([\d.]+)", out, flags=re.M).group(1) == row.group(1)


def test_notebook_time_refuses_a_missing_notebook(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "notebook_time.py"), str(tmp_path / "no.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 2 and "no such notebook" in done.stderr and "Traceback" not in done.stderr

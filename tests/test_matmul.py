"""The matmul backends: oneDNN's products equal ``@`` to float round-off, everything oneDNN does
not take falls back to ``@`` bit for bit, a run on either backend stores the same numbers to
float tolerance, and a run records its backend and resumes with it.  A reused weight's packed
products equal the plain ones bit for bit, so packing changes no stored number."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest
import torch
from fixtures import assert_same_store

from purify import matmul
from purify import store as S
from purify.cli import main
from purify.learners.symmetric import SymmetricReLUNet

needs_onednn = pytest.mark.skipif(not matmul.onednn_available(), reason="this torch build has no usable oneDNN")


@pytest.fixture
def onednn():
    previous = matmul.backend()
    matmul.set_backend("onednn")
    yield
    matmul.set_backend(previous)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@needs_onednn
@pytest.mark.parametrize(("n", "d", "m"), [(512, 300, 600), (37, 64, 128), (1, 50, 7)])
def test_onednn_products_equal_at_to_round_off(onednn, n, d, m):
    g = _gen(n)
    x, W, C = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g), torch.rand(n, m, generator=g)
    # the three products of a step, transposed views and a strided slice as the library passes them
    cases = [(matmul.linear(x, W), x @ W.T), (matmul.matmul(C, W), C @ W), (matmul.matmul(C.T, x), C.T @ x),
             (matmul.linear(x[::2], W), x[::2] @ W.T), (matmul.linear(x.T.contiguous().T, W), x @ W.T)]
    for got, want in cases:
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6 * scale * d**0.5)


@needs_onednn
def test_what_onednn_does_not_take_falls_back_to_at_bit_for_bit(onednn):
    g = _gen(1)
    x64, W64 = torch.randn(20, 30, generator=g, dtype=torch.float64), torch.randn(10, 30, generator=g, dtype=torch.float64)
    assert torch.equal(matmul.linear(x64, W64), x64 @ W64.T)
    x, W = x64.float(), W64.float().requires_grad_()
    assert torch.equal(matmul.linear(x, W), x @ W.T) and matmul.linear(x, W).requires_grad
    assert matmul.linear(torch.zeros(0, 30), W.detach()).shape == (0, 10)
    assert matmul.matmul(torch.zeros(4, 0), torch.zeros(0, 3)).shape == (4, 3)


@needs_onednn
def test_the_network_on_onednn_matches_blas(onednn):
    g = _gen(2)
    W = torch.randn(400, 200, generator=g) * 0.1
    b = 0.8 * W.norm(dim=1) / 6.0
    net = SymmetricReLUNet(W, b, 0.05 * b)
    x, y = torch.randn(256, 200, generator=g), torch.where(torch.rand(256, generator=g) < 0.5, 1.0, -1.0)
    out, grad = net.forward_and_input_grad(x)
    step = net.loss_and_grad(x, y)
    matmul.set_backend("blas")
    out_b, grad_b = net.forward_and_input_grad(x)
    step_b = net.loss_and_grad(x, y)
    for got, want in ((out, out_b), (grad, grad_b), (step.grad, step_b.grad)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    assert step.loss == pytest.approx(step_b.loss, rel=1e-6)


@needs_onednn
def test_a_reused_weight_gives_the_plain_products_bit_for_bit(onednn):
    assert matmul.packing_exact()
    g = _gen(3)
    W = torch.randn(300, 128, generator=g)
    for weight in (W, W.T):
        reused = matmul.Reused(weight)
        # one row takes another kernel, and must stay plain; the rest is packed from the third use
        for n in (64, 2, 1, 300, 17, 64, 5):
            x = torch.randn(n, weight.shape[1], generator=g)
            assert torch.equal(reused(x), matmul.linear(x, weight)), n
        assert reused._packed is not None, "a weight used seven times is packed"
        W.mul_(0.5)  # in place: the packed copy is stale and must not be used
        x = torch.randn(40, weight.shape[1], generator=g)
        for _ in range(4):
            assert torch.equal(reused(x), matmul.linear(x, weight))
    matmul.set_backend("blas")
    x = torch.randn(9, 128, generator=g)
    assert torch.equal(matmul.Reused(W)(x), x @ W.T)


@needs_onednn
def test_a_network_follows_its_weights_when_they_are_replaced(onednn):
    g = _gen(4)
    W = torch.randn(64, 32, generator=g)
    b = 0.3 * W.norm(dim=1)
    net = SymmetricReLUNet(W, b, 0.05 * b)
    x = torch.randn(20, 32, generator=g)
    for _ in range(4):
        net.forward_and_input_grad(x)
    net.W = 2 * W
    out, grad = net.forward_and_input_grad(x)
    fresh = SymmetricReLUNet(2 * W, b, 0.05 * b).forward_and_input_grad(x)
    assert torch.equal(out, fresh[0]) and torch.equal(grad, fresh[1])


def test_backend_rules(monkeypatch):
    assert matmul.backend() == "blas"  # the library's default: the numbers of earlier versions
    assert matmul.choose_backend(stored="blas") == "blas"
    assert matmul.choose_backend(stored="blas", override="onednn") == "blas"  # a resume keeps its own
    assert matmul.choose_backend(override="blas") == "blas"
    for vendor, fresh in (("GenuineIntel", "blas"), ("AuthenticAMD", "onednn"), ("", "onednn")):
        monkeypatch.setattr(matmul, "cpu_vendor", lambda vendor=vendor: vendor)
        assert matmul.choose_backend() == (fresh if matmul.onednn_available() else "blas")
        assert matmul.choose_backend(stored="onednn") == ("onednn" if matmul.onednn_available() else "blas")
    with pytest.raises(ValueError, match="PURIFY_MATMUL='mkl': allowed blas, onednn"):
        matmul.choose_backend(override="mkl")
    with pytest.raises(ValueError, match="allowed"):
        matmul.set_backend("cublas")
    monkeypatch.setattr(matmul, "onednn_available", lambda: False)
    assert matmul.choose_backend() == "blas" and matmul.choose_backend(stored="onednn") == "blas"
    with pytest.raises(ValueError, match="no usable oneDNN"):
        matmul.choose_backend(override="onednn")


def test_a_bad_override_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(matmul.ENV, "fast")
    assert main(["simulate", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PURIFY_MATMUL='fast'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


TINY = ["--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20", "--n-test", "200",
        "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3", "--clean-snapshots", "4",
        "--adv-snapshots", "2", "--log-points", "10", "--quiet", "--no-analysis", "--seed", "0"]


def _run(monkeypatch, run, backend: str | None, *args: str) -> int:
    if backend is None:
        monkeypatch.delenv(matmul.ENV, raising=False)
    else:
        monkeypatch.setenv(matmul.ENV, backend)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["simulate", *args, "--out", str(run)])
    assert matmul.backend() == "blas", "purify simulate gives an in-process caller its backend back"
    return code if code == 0 else pytest.fail(err.getvalue())


@needs_onednn
def test_a_small_run_on_either_backend_stores_the_same_numbers(monkeypatch, tmp_path):
    """The optimisation's switch: the same run on MKL and on oneDNN, compared."""
    for backend in ("blas", "onednn"):
        # d = 128: at d = 32 the two libraries happen to sum in the same order (identical runs)
        _run(monkeypatch, tmp_path / backend, backend, *TINY, "--d", "128", "--m", "256")
        assert S.read_attrs(tmp_path / backend)["matmul"] == backend
    a, b = (S.load_run(tmp_path / name) for name in ("blas", "onednn"))
    Wa, Wb = (S.load_run(tmp_path / name, "snapshots").W.values.astype(np.float64) for name in ("blas", "onednn"))
    np.testing.assert_allclose(Wa, Wb, rtol=0, atol=1e-4 * np.abs(Wa).max())
    np.testing.assert_allclose(a.loss.values, b.loss.values, rtol=1e-4)
    # an example at the margin may change sides: one of 200 (clean), of 100 per attack (robust)
    np.testing.assert_allclose(a.clean_accuracy.values, b.clean_accuracy.values, rtol=0, atol=1 / 200 + 1e-9)
    np.testing.assert_allclose(a.robust_accuracy.values, b.robust_accuracy.values, rtol=0, atol=1 / 100 + 1e-9)


@needs_onednn
def test_packing_reused_weights_changes_no_stored_number(monkeypatch, tmp_path):
    """The optimisation's switch: one oneDNN run with weights never packed and packed after two uses."""
    for name, after in (("plain", 10**9), ("packed", matmul.PACK_AFTER)):
        monkeypatch.setattr(matmul, "PACK_AFTER", after)
        _run(monkeypatch, tmp_path / name, "onednn", *TINY, "--d", "128", "--m", "256")
    assert_same_store(tmp_path / "plain", tmp_path / "packed")


@needs_onednn
def test_a_resumed_run_keeps_the_backend_it_started_with(monkeypatch, tmp_path):
    run = tmp_path / "run"
    small = [*TINY, "--clean-steps", "4", "--adv-steps", "1", "--clean-snapshots", "2", "--adv-snapshots", "1",
             "--attacks", "fgm", "--norms", "l2", "--n-test", "40", "--n-eval", "20"]
    fresh = matmul.choose_backend()
    other = "onednn" if fresh == "blas" else "blas"
    _run(monkeypatch, run, other, *small)
    used: list[str] = []
    original = matmul.set_backend
    monkeypatch.setattr(matmul, "set_backend", lambda name: (used.append(name), original(name)))
    _run(monkeypatch, run, None, "--resume", "--quiet", "--no-analysis")  # the fresh choice would be the other
    assert used[0] == other and S.read_attrs(run)["matmul"] == other


def test_using_restores_the_backend_even_on_an_error():
    with pytest.raises(ZeroDivisionError), matmul.using("blas"):
        matmul.set_backend("blas")
        _ = 1 / 0
    assert matmul.backend() == "blas"
    with pytest.raises(ValueError, match="allowed"), matmul.using("fast"):
        pass
    assert matmul.backend() == "blas"


@needs_onednn
def test_analyses_run_on_the_backend_the_run_stored(monkeypatch, tmp_path):
    """``purify analyze`` in a process whose backend is blas, with ``PURIFY_MATMUL=blas``, computes
    a oneDNN run's analyses on oneDNN: bit for bit what they are there, not what blas gives.
    At d = 128 the two backends sum alike on an Intel Xeon with AVX-512 (MKL runs its AVX-512
    code there), though not on AMD cores; at d = 256 their backward products differ there too."""
    from purify.analysis import analyze

    run, groups = tmp_path / "run", ("purification", "perturbations")
    _run(monkeypatch, run, "onednn", *TINY, "--d", "256", "--m", "512")
    monkeypatch.setenv(matmul.ENV, "blas")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["analyze", "--only", ",".join(groups), str(run)]) == 0
    assert matmul.backend() == "blas"
    stored = {g: S.load_run(run, f"analysis/{g}").load() for g in groups}

    def same(backend: str) -> bool:
        with matmul.using(backend):
            analyze(run, names=groups, force=True)
        return all(np.array_equal(S.load_run(run, f"analysis/{g}")[n].values, v.values, equal_nan=True)
                   for g in groups for n, v in stored[g].data_vars.items())

    assert same("onednn") and not same("blas")


def test_a_session_resumes_on_the_stored_backend_and_starts_on_a_fresh_choice(monkeypatch, tmp_path):
    from purify.pipeline import run_backend

    run = tmp_path / "run"
    _run(monkeypatch, run, "blas", *TINY, "--clean-steps", "4", "--adv-steps", "1", "--clean-snapshots", "2",
         "--adv-snapshots", "1", "--attacks", "fgm", "--norms", "l2", "--n-test", "40", "--n-eval", "20")
    monkeypatch.setenv(matmul.ENV, "onednn" if matmul.onednn_available() else "blas")
    assert run_backend(run, resume=True) == "blas"
    assert run_backend(run, resume=False) == matmul.choose_backend(override=os.environ.get(matmul.ENV))
    assert run_backend(tmp_path / "missing", resume=True) == matmul.choose_backend(override=os.environ.get(matmul.ENV))
    monkeypatch.setenv(matmul.ENV, "fast")
    assert run_backend(run, resume=True) == "blas"  # a resume does not look at the override
    with pytest.raises(ValueError, match="PURIFY_MATMUL='fast'"):
        run_backend(run, resume=False)

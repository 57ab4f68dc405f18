"""The networks' matrix products, on the faster of torch's two CPU matrix-product libraries.

On x86 CPUs torch's ``@`` calls MKL, which runs its AVX2 code on AMD processors; oneDNN
(``torch.ops.mkldnn``, shipped in the same wheel) picks its code by instruction set, so it
runs AVX-512 wherever the CPU has it.  On the 2-core Zen 5 machines purify is measured on, the
three products of a default step ran at 390–427 GFLOP/s with oneDNN against 184–198 with
MKL (``benchmarks/step_time.py`` prints both); on a 2-core AVX2-only EPYC the two were even
(MKL's clean-step products took 0.82–1.00× the time of oneDNN's) and shortened default
runs took the same time on either (README, "MKL or oneDNN on AVX2"), so oneDNN is the
default on AMD.  On Intel processors MKL runs its own AVX-512 code: on a 2-core Intel Xeon it
was the faster of the two (309–337 against 227–272 GFLOP/s at ``d = 2000``, and reduced
``d = 2000`` runs took 4 % less; README, "On an Intel Xeon with AVX-512"), so a fresh run
there takes MKL.  The two sum in different orders, so their results agree to float round-off,
not bit for bit: like the thread count, the backend is part of what makes a run reproducible, and a
run stores it (attribute ``matmul``) and resumes with it.

``onednn`` applies to non-empty float32 CPU tensors outside autograd; everything else (float64,
CUDA, tensors that require grad, empty ones) takes ``@`` whatever the setting.  The library starts on ``blas``
(``@`` everywhere, the numbers of earlier versions).  A run made through :mod:`purify.pipeline`
(``purify simulate``, sweep cells, notebooks) chooses with :func:`choose_backend`
(``PURIFY_MATMUL`` overrides) and runs under it with :func:`using`; its analyses, whenever they
are computed (``purify analyze`` included), run on the backend the run stored.

A network evaluated many times with the same weights (an attack, an evaluation) multiplies by
them through :class:`Reused`, which keeps oneDNN's reordered copy of the weight once it has
been used :data:`PACK_AFTER` times: the same numbers bit for bit, without the reorder each
product would otherwise do.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

#: Environment variable that overrides the choice of a new run (a resumed run keeps its own).
ENV = "PURIFY_MATMUL"
#: ``blas``: torch's ``@`` (MKL on x86); ``onednn``: ``torch.ops.mkldnn._linear_pointwise``.
BACKENDS = ("blas", "onednn")

_backend = "blas"


@functools.cache
def onednn_available() -> bool:
    """Whether this torch build has oneDNN's product and it agrees with ``@`` on a small case."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(5, 7, generator=g), torch.randn(3, 7, generator=g)
        out = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return out.shape == (5, 3) and bool(torch.allclose(out, x @ w.T, rtol=1e-5, atol=1e-6))


@functools.cache
def cpu_vendor() -> str:
    """``vendor_id`` of /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``), or ``""`` where there
    is none.  MKL picks its code by vendor: its AVX-512 code on Intel, AVX2 on AMD."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def choose_backend(*, override: str | None = None, stored: str | None = None) -> str:
    """The backend of a run: the stored one for a resumed run (``blas`` for stores written before
    purify recorded it: pass ``"blas"``), else ``override`` (``PURIFY_MATMUL``), else ``blas`` on
    Intel processors (:func:`cpu_vendor`) and ``onednn`` elsewhere where available.

    Raises
    ------
    ValueError
        If ``override`` is not one of :data:`BACKENDS`, or asks for ``onednn`` where it is not available.
    """
    if stored is not None:
        return stored if stored in BACKENDS and (stored != "onednn" or onednn_available()) else "blas"
    if override is not None and override != "":
        if override not in BACKENDS:
            raise ValueError(f"{ENV}={override!r}: allowed {', '.join(BACKENDS)}")
        if override == "onednn" and not onednn_available():
            raise ValueError(f"{ENV}=onednn: this torch build has no usable oneDNN; use blas")
        return override
    return "onednn" if onednn_available() and cpu_vendor() != "GenuineIntel" else "blas"


def set_backend(name: str) -> None:
    """Make ``name`` (one of :data:`BACKENDS`) the backend of every later product."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"matmul backend {name!r}: allowed {', '.join(BACKENDS)}")
    if name == "onednn" and not onednn_available():
        raise ValueError("matmul backend 'onednn': this torch build has no usable oneDNN")
    _backend = name


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """``name`` as the backend inside the block and the previous one after it, even on an error:
    in-process callers (tests, notebooks, sweep workers) keep the backend they had."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def backend() -> str:
    """The backend in use (one of :data:`BACKENDS`)."""
    return _backend


def _onednn_takes(x: Tensor, w: Tensor) -> bool:
    return (_backend == "onednn" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.device.type == "cpu" and w.device.type == "cpu" and x.dim() == 2 and w.dim() == 2
            and x.numel() > 0 and w.numel() > 0 and not (x.requires_grad or w.requires_grad))


def linear(x: Tensor, w: Tensor) -> Tensor:
    """``x @ wᵀ`` for ``x (n, d)`` and ``w (m, d)``; either may be a transposed view."""
    if _onednn_takes(x, w):
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    return x @ w.T


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D ``a (n, k)`` and ``b (k, m)``, on the backend in use."""
    return linear(a, b.T)


#: Products a :class:`Reused` weight takes plainly before it is reordered once for all later ones.
#: The reorder costs about one plain product's overhead (0.9 ms for 2000 × 1000 here) and saves
#: 3–10 % of each later product at n ≥ 256 rows, up to 2.7× at a few rows, so it pays from the
#: third use: a clean or FGM training step, which uses its weights at most twice, never reorders
#: (PGD training does, bit for bit).
PACK_AFTER = 2


@functools.cache
def packing_exact() -> bool:
    """Whether oneDNN's products against a reordered weight equal the plain ones bit for bit
    (for ``n ≥ 2`` rows; one row takes another kernel) on a few shapes, weights and transposed
    views: :class:`Reused` packs only where they do, so packing never changes a number."""
    if not onednn_available():
        return False
    g = torch.Generator().manual_seed(0)
    product = torch.ops.mkldnn._linear_pointwise
    try:
        for m, d in ((37, 19), (300, 128)):
            w = torch.randn(m, d, generator=g)
            for weight in (w, w.T):
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 64)
                for n in (2, 3, 17, 64, 200):
                    x = torch.randn(n, weight.shape[1], generator=g)
                    if not torch.equal(product(x, packed, None, "none", [], ""), product(x, weight, None, "none", [], "")):
                        return False
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


class Reused:
    """Products ``x @ wᵀ`` against one weight ``w (m, d)`` (or a transposed view) that many share.

    oneDNN reorders a plain weight into its blocked layout inside every product; an attack on
    a fixed network pays that hundreds of times.  After :data:`PACK_AFTER` products on the
    ``onednn`` backend, this keeps the reordered copy and multiplies by it, with results equal
    to :func:`linear`'s bit for bit (:func:`packing_exact`; one-row products stay plain).  An
    in-place change of ``w`` (its version counter moves) drops the copy, and anything
    :func:`linear` would not send to oneDNN goes to :func:`linear`.
    """

    __slots__ = ("w", "_packed", "_version", "_uses")

    def __init__(self, w: Tensor) -> None:
        self.w = w
        self._packed: Tensor | None = None
        self._version = -1
        self._uses = 0

    def __call__(self, x: Tensor) -> Tensor:
        w = self.w
        if not (_onednn_takes(x, w) and x.shape[0] >= 2 and packing_exact()):
            return linear(x, w)
        try:
            version = w._version
        except RuntimeError:  # an inference tensor has no version counter: no way to see a change
            return linear(x, w)
        if version != self._version:
            self._packed, self._version, self._uses = None, version, 0
        if self._packed is None:
            self._uses += 1
            if self._uses <= PACK_AFTER:
                return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), x.shape[0])
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, None, "none", [], "")

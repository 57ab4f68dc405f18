"""Sparse-coding data ``x = M z + ξ``, ``y = sign(<w*, z>)`` (Allen-Zhu & Li 2020, §2).

Pure, batched functions in the style of scikit-learn's ``make_sparse_coded_signal``: every
random draw takes an explicit ``torch.Generator``; rows are examples.  Shapes use
``n`` examples, ``d`` input dimension and ``D`` dictionary atoms (``D = d`` unless the
dictionary is over-complete).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from purify.norms import sign

DICTIONARIES = ("identity", "orthogonal", "overcomplete")


def make_dictionary(
    kind: str, d: int, n_features: int, *, generator: torch.Generator, dtype=torch.float32
) -> Tensor:
    """Dictionary ``M`` of shape ``(d, D)`` with unit-norm columns (Allen-Zhu & Li §2; docs/theory.md §1).

    ``identity`` and ``orthogonal`` (Haar-random, via QR with the sign fix of Mezzadri 2007)
    need ``D = d`` and satisfy ``MᵀM = I``.  ``overcomplete`` draws ``D > d`` Gaussian columns
    and normalizes them; their mutual coherence is ``O(sqrt(log D / d))`` w.h.p.
    """
    if kind in ("identity", "orthogonal") and n_features != d:
        # QR of a (d, D) matrix would silently return a (d, min(d, D)) dictionary.
        raise ValueError(f"a {kind} dictionary needs n_features == d, got {n_features} != {d}")
    if kind == "identity":
        return torch.eye(d, dtype=dtype)
    g = torch.randn(d, n_features, generator=generator, dtype=torch.float64)
    if kind == "orthogonal":
        q, r = torch.linalg.qr(g)
        # Without the sign correction QR's output is not Haar-distributed.
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return q.to(dtype)
    if kind == "overcomplete":
        return (g / g.norm(dim=0, keepdim=True)).to(dtype)
    raise ValueError(f"unknown dictionary {kind!r}; allowed: {', '.join(DICTIONARIES)}")


def make_teacher(n_features: int, *, generator: torch.Generator, dtype=torch.float32) -> Tensor:
    """Teacher ``w* ∈ {±1}^D``, uniform signs (Allen-Zhu & Li §2: ``|w*_i| = Θ(1)``)."""
    return torch.randint(0, 2, (n_features,), generator=generator).to(dtype) * 2 - 1


def sample_hidden(
    n: int,
    n_features: int,
    *,
    levels: tuple[tuple[float, float], ...],
    generator: torch.Generator,
    dtype=torch.float32,
) -> Tensor:
    """Hidden codes ``z`` of shape ``(n, D)`` with i.i.d. symmetric coordinates (Assumption 2.1).

    ``levels`` lists ``(magnitude, probability)`` pairs: ``|z_i| = magnitude`` with that
    probability, otherwise ``z_i = 0``; the sign is a fair coin.  The paper's case is
    ``((1, p_1), (1/√k, p_k))`` with ``p_1 = Ω(1/d)`` and ``p_k = Ω(k/d)``.
    """
    flat, values = _nonzeros(uniform_bits((n, n_features), generator=generator), levels, dtype)
    return _densify(flat, values, n, n_features)


_BITS = 53  # a float64 uniform of torch.rand is m · 2⁻⁵³ for an integer 0 ≤ m < 2⁵³
_MASK = (1 << _BITS) - 1


def uniform_bits(shape: tuple[int, ...], *, generator: torch.Generator) -> np.ndarray:
    """The uniforms ``torch.rand(shape, dtype=float64, generator=generator)`` would draw, as the
    integers ``m = u · 2⁵³`` (int64 numpy array), leaving ``generator`` where that call would.

    torch draws a float64 uniform from one 64-bit output of its Mersenne twister and keeps the
    low 53 bits (``uniform_real_distribution``); ``Tensor.random_()`` on int64 returns the same
    output modulo 2⁶³ without the per-entry float conversion, about 1.3 ms sooner for the
    default batch's 1M draws.  The integers also let the scans compare exactly without floats
    (:func:`_nonzeros`).  Where :func:`_random_bits_match` finds this torch build disagreeing,
    the integers come from ``torch.rand`` itself (``u · 2⁵³`` is exact).
    """
    if not _random_bits_match():
        return (torch.rand(shape, generator=generator, dtype=torch.float64).numpy() * 2.0**_BITS).astype(np.int64)
    m = torch.empty(shape, dtype=torch.int64).random_(generator=generator).numpy()
    return np.bitwise_and(m, _MASK, out=m)


@cache
def _random_bits_match() -> bool:
    """Whether ``random_()``'s low 53 bits are ``torch.rand``'s float64 uniforms on this build,
    drawn from the same place of the stream (checked once, on sizes around the twister's
    624-word block, with the generators' states compared after)."""
    ga, gb = torch.Generator().manual_seed(20261203), torch.Generator().manual_seed(20261203)
    for n in (1, 311, 312, 313, 1000, 4099):
        u = torch.rand(n, generator=ga, dtype=torch.float64).numpy()
        m = torch.empty(n, dtype=torch.int64).random_(generator=gb).numpy() & _MASK
        if not np.array_equal(u * 2.0**_BITS, m.astype(np.float64)):
            return False
    return torch.equal(ga.get_state(), gb.get_state())


def _nonzeros(m: np.ndarray, levels: tuple[tuple[float, float], ...], dtype) -> tuple[Tensor, Tensor]:
    """The nonzero coordinates of the codes that the uniforms ``u = m · 2⁻⁵³`` decide, for
    ``m (n, D)`` from :func:`uniform_bits`.

    One uniform per coordinate decides both level and sign: level j owns
    ``[lower_j, lower_j + p_j)``, its lower half giving −magnitude and its upper half
    +magnitude, so the sign is a fair coin independent of the level (u is uniform within each
    interval); above ``Σ p_j`` the coordinate is 0 (:func:`_scan` finds the others).

    Returns
    -------
    flat : (nnz,) int64 row-major indices into ``m``, increasing.
    values : (nnz,) the codes there (exact zeros only for a zero magnitude).
    """
    flat, code = _scan(m, levels)
    return torch.from_numpy(flat), _level_values(levels, dtype)[torch.from_numpy(code)]


def _level_values(levels: tuple[tuple[float, float], ...], dtype) -> Tensor:
    """``(−m₁, m₁, −m₂, m₂, …)``: the value of each code :func:`_scan` returns."""
    return torch.tensor([v for magnitude, _ in levels for v in (-magnitude, magnitude)], dtype=dtype)


def _scan(m: np.ndarray, levels: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_nonzeros` in numpy alone: the row-major indices of the nonzeros (increasing) and
    each one's code, an index into :func:`_level_values`.

    Only the ``≈ D Σ p_j`` coordinates below ``Σ p_j`` per row are bucketed: a full-size
    bucketize and gather cost more than the draw.  ``u < bound`` is decided exactly as
    ``m < ⌈bound · 2⁵³⌉`` (``bound · 2⁵³`` is exact in float64), so the codes are those of
    comparing the float uniforms.  No torch call, so that the sampler's helper thread runs it
    without a second OpenMP team (:func:`_submitter`).
    """
    bounds, lower = [], 0.0
    for _, prob in levels:
        bounds += [lower + prob / 2, lower + prob]
        lower += prob
    if not bounds:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.intp)
    edges = [math.ceil(b * 2.0**_BITS) for b in bounds]
    # numpy's nonzero beats torch's here (default batch: 2.1 against 2.4 ms for the codes, 0.65
    # against 1.06 for the spikes); for a few levels, counting the edges at or below each drawn
    # value beats a binary search (0.09 against 0.35 ms), and gives searchsorted's "right" side.
    mn = m.reshape(-1)
    flat = np.flatnonzero(mn < edges[-1])
    hit = mn[flat]
    code = (hit >= edges[0]).astype(np.intp)
    for edge in edges[1:-1]:
        code += hit >= edge
    return flat.astype(np.int64, copy=False), code


def _densify(flat: Tensor, values: Tensor, n: int, n_features: int) -> Tensor:
    """The ``(n, D)`` matrix with ``values`` at the row-major indices ``flat``, zero elsewhere."""
    z = torch.zeros(n * n_features, dtype=values.dtype)
    z[flat] = values
    return z.view(n, n_features)


def _merged_scan(codes: Future, m: np.ndarray, levels, spike_levels) -> tuple[np.ndarray, np.ndarray]:
    """The scan of ``z`` (the future ``codes``) and that of the spikes ``ξ''`` (uniforms ``m``),
    merged into one (numpy alone, for the helper thread): an index in both keeps the code's entry
    before the spike's, the order in which the product then sums them.  Spike codes index
    after the ``2 len(levels)`` values of ``z``.

    A stable sort of the concatenation; numpy's (timsort) finds the two sorted runs and merges
    them in one linear pass, where torch's sorts from scratch (default batch: 0.47 against 1.0 ms).
    """
    flat, code = codes.result()
    flat_s, code_s = _scan(m, spike_levels)
    both = np.concatenate([flat, flat_s])
    order = np.argsort(both, kind="stable")
    return both[order], np.concatenate([code, code_s + 2 * len(levels)])[order]


#: Bytes of ``Mᵀ`` one pass of :func:`sparse_times_dictionary` reads: a column block of this
#: size stays in a core's L2 cache (2 MB on the Intel Xeon of the README), where the whole
#: ``Mᵀ`` (4 MB at d = 1000, 16 MB at 2000) streams from L3 for every active atom.
ATOM_BLOCK_BYTES = 1 << 20
#: Column blocks are a multiple of this wide, so that each column keeps its place within a
#: vector (up to 64 lanes) and its tail: every entry is computed by the same operations as
#: without blocks (:func:`_blocks_exact`).
_BLOCK_ALIGN = 64


def atom_blocks(atoms: Tensor, block_bytes: int | None = None) -> tuple[Tensor, ...]:
    """``atoms (D, d)`` split into contiguous column blocks of at most ``block_bytes`` each
    (default :data:`ATOM_BLOCK_BYTES`; a multiple of 64 columns wide, at least 64): the
    argument of :func:`sparse_times_dictionary`.
    One block, ``atoms`` itself, where this torch build's ``embedding_bag`` would not give the
    same bits by blocks (:func:`_blocks_exact`)."""
    D, d = atoms.shape
    block_bytes = ATOM_BLOCK_BYTES if block_bytes is None else block_bytes
    width = max(_BLOCK_ALIGN, block_bytes // (D * atoms.element_size()) // _BLOCK_ALIGN * _BLOCK_ALIGN)
    if width >= d or not _blocks_exact(atoms.dtype):
        return (atoms,)
    return tuple(atoms[:, i : i + width].contiguous() for i in range(0, d, width))


@cache
def _blocks_exact(dtype: torch.dtype) -> bool:
    """Whether ``embedding_bag`` by column blocks of :data:`_BLOCK_ALIGN` gives the bits of one
    pass on this torch build (checked once per dtype, on widths with a tail and repeated atoms)."""
    g = torch.Generator().manual_seed(20261205)
    atoms = torch.randn(50, 3 * _BLOCK_ALIGN + 21, generator=g, dtype=dtype)
    flat = torch.randint(0, 50 * 7, (120,), generator=g).sort().values
    values = torch.randn(120, generator=g, dtype=dtype)
    whole = sparse_times_dictionary(flat, values, 7, (atoms,))
    blocks = tuple(atoms[:, i : i + _BLOCK_ALIGN].contiguous() for i in range(0, atoms.shape[1], _BLOCK_ALIGN))
    return torch.equal(whole, sparse_times_dictionary(flat, values, 7, blocks))


def sparse_times_dictionary(flat: Tensor, values: Tensor, n: int, blocks: Sequence[Tensor]) -> Tensor:
    """``H Mᵀ`` (n, d) for the ``(n, D)`` matrix ``H`` given by its nonzeros.

    Parameters
    ----------
    flat : (nnz,) int64 row-major indices of the nonzeros of ``H``, grouped by row in row order
        (repeats are summed).
    values : (nnz,) the entries there, of ``atoms``' dtype.
    n : rows of ``H``.
    blocks : ``Mᵀ`` (D, d) as contiguous column blocks (:func:`atom_blocks`, or ``(Mᵀ,)``): row
        ``c`` of ``Mᵀ`` is the dictionary atom ``M[:, c]``.

    Each row of ``H`` holds about ``k + 2`` nonzeros out of ``D``, so gathering and summing
    the active atoms (one ``embedding_bag`` per block) costs ``nnz · d`` instead of the
    ``n · D · d`` of a dense product: at d = D = 1000, k = 60 about 16× fewer multiply-adds.
    Each entry is the same sum, in the same order, whatever the blocks; by blocks that fit
    in L2 it took 1.1 against 2.1 ms at d = 1000 and 2.7 against 4.9 ms at d = 2000 (2 threads,
    idle Intel Xeon).
    """
    D = blocks[0].shape[0]
    starts = torch.searchsorted(flat, torch.arange(n, dtype=torch.int64) * D)
    atom = flat % D
    parts = [F.embedding_bag(atom, b, starts, mode="sum", per_sample_weights=values) for b in blocks]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def labels(z: Tensor, w_star: Tensor) -> Tensor:
    """``y = sign(<w*, z>)`` with ``sign(0) = +1``; shape ``(n,)``, values ``±1``.

    The sum is float32 and not exact: where ``<w*, z> = 0`` exactly (about 1.6 % of examples
    at the default ``d = 1000, k = 60``, where ``w* ∈ {±1}^D`` meets two magnitudes), its
    round-off decides the label, −1 for about a third of them (README, "Notes and deviations").
    """
    return sign(z @ w_star)


@dataclass(frozen=True)
class Batch:
    """Inputs ``x (n, d)``, labels ``y (n,)`` in ``{±1}``, hidden codes ``z (n, D)``."""

    x: Tensor
    y: Tensor
    z: Tensor

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.x.to(device), self.y.to(device), self.z.to(device))


@dataclass(frozen=True)
class SparseCodingProblem:
    """A fixed draw of the data distribution: dictionary, teacher and noise parameters.

    Parameters
    ----------
    M : (d, D) dictionary with unit-norm columns.
    w_star : (D,) teacher.
    levels : ``(magnitude, probability)`` pairs of ``|z_i|`` (see :func:`sample_hidden`).
    sigma_x : Gaussian noise level, ``ξ' ~ N(0, σ_x²/d I)``.
    spike_level, spike_prob : spike noise ``ξ''_i = ±spike_level`` w.p. ``spike_prob``
        (mean zero, ``|ξ''_i| ≤ 1/k^0.501`` in the theory), entering as ``M ξ''``.
    """

    M: Tensor
    w_star: Tensor
    levels: tuple[tuple[float, float], ...]
    sigma_x: float
    spike_level: float
    spike_prob: float

    @property
    def d(self) -> int:
        return self.M.shape[0]

    @property
    def n_features(self) -> int:
        return self.M.shape[1]

    def dense_direction(self) -> Tensor:
        """``M w* / ‖M w*‖₂`` (d,): the perturbation direction of Thm 5.1(c)."""
        v = self.M @ self.w_star
        return v / v.norm()

    def expected_sq_norm_z(self) -> float:
        """``E‖z‖² = D Σ_levels magnitude² · probability``."""
        return self.n_features * sum(m * m * p for m, p in self.levels)

    @cached_property
    def atoms(self) -> tuple[Tensor, ...]:
        """``Mᵀ`` (D, d) on the CPU by column blocks (:func:`atom_blocks`), for the sparse product."""
        return atom_blocks(self.M.cpu().T.contiguous())

    def sample(self, n: int, *, generator: torch.Generator) -> Batch:
        """Draw ``n`` i.i.d. examples (on the CPU; move with :meth:`Batch.to`).

        The draws, in order: one uniform per coordinate of ``z``, then (with spike noise) one
        per coordinate of ``ξ''``, then the Gaussian ``ξ'``.  ``x = M(z + ξ'') + ξ'`` is formed
        from the nonzeros of ``z + ξ''`` (:func:`sparse_times_dictionary`).

        The draws are one serial stream on one core; with two torch threads or more, a helper
        thread scans each block of uniforms for its nonzeros while the next block is drawn
        (:func:`_submitter`).  The same operations on the same values either way, so the same
        batch; at the default size 8–9 against 12–13 ms a batch (2 threads, idle Intel Xeon).
        """
        D, dtype = self.n_features, self.M.dtype
        spikes = self.spike_prob > 0 and self.spike_level > 0
        submit = _submitter()
        codes = submit(_scan, uniform_bits((n, D), generator=generator), self.levels)
        table = _level_values(self.levels, dtype)
        if spikes:
            # x = M z + M ξ'' = M (z + ξ''): one product with M; a coordinate where both are
            # nonzero appears twice and the product sums it.
            spike_levels = ((self.spike_level, self.spike_prob),)
            both = submit(_merged_scan, codes, uniform_bits((n, D), generator=generator), self.levels, spike_levels)
            table = torch.cat([table, _level_values(spike_levels, dtype)])
        noise = torch.randn(n, self.d, generator=generator, dtype=dtype) if self.sigma_x > 0 else None
        flat, code = codes.result()
        z = _densify(torch.from_numpy(flat), table[torch.from_numpy(code)], n, D)
        if spikes:
            flat, code = both.result()
        x = sparse_times_dictionary(torch.from_numpy(flat), table[torch.from_numpy(code)], n, self.atoms)
        if noise is not None:
            x.add_(noise, alpha=self.sigma_x / math.sqrt(self.d))
        return Batch(x, labels(z, self.w_star.cpu()), z)


_HELPER: tuple[int, ThreadPoolExecutor] | None = None


def _submitter() -> Callable[..., Future]:
    """``submit(fn, *args)``: to the helper thread of :meth:`SparseCodingProblem.sample` while
    torch may use two threads or more, else run at once (a loaded machine, where the run chose
    one thread, or a sweep's single-threaded cells: no core to spare).  The helper runs numpy
    scans, which release the GIL, and draws nothing.  It calls no torch operation: one would give
    the helper its own OpenMP team, whose threads then compete with the main thread's (the
    sparse product after the scans took 2.3 instead of 1.3 ms).  One helper per process (a
    forked child makes its own)."""
    global _HELPER
    if torch.get_num_threads() < 2:
        return _now
    if _HELPER is None or _HELPER[0] != os.getpid():
        _HELPER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="purify-sampler"))
    return _HELPER[1].submit


def _now(fn: Callable, *args) -> Future:
    """``fn(*args)`` run here, as a finished future (exceptions are kept for ``result()``)."""
    done: Future = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as e:
        done.set_exception(e)
    return done


class DataStream:
    """Training batches: fresh samples every step (online SGD) or a fixed set of size ``N``.

    With a fixed set, each epoch visits a permutation drawn from ``generator`` in batches,
    dropping the last ``N mod batch_size`` examples of the permutation (they are as likely as
    any to come first in the next one); a batch size of at least ``N`` is full-batch gradient
    descent (Algorithm 1).  The stream's position is
    entirely held by ``generator`` plus ``(epoch order, cursor)``, which :meth:`state_dict`
    returns so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        problem: SparseCodingProblem,
        *,
        batch_size: int,
        generator: torch.Generator,
        train_set: Batch | None = None,
    ) -> None:
        self.problem = problem
        self.batch_size = batch_size
        self.generator = generator
        self.train_set = train_set
        self._order: Tensor | None = None
        self._cursor = 0

    def next(self) -> Batch:
        if self.train_set is None:
            return self.problem.sample(self.batch_size, generator=self.generator)
        n = self.train_set.x.shape[0]
        if self.batch_size >= n:
            return self.train_set
        if self._order is None or self._cursor + self.batch_size > n:
            self._order = torch.randperm(n, generator=self.generator)
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        s = self.train_set
        return Batch(s.x[idx], s.y[idx], s.z[idx])

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state(), "order": self._order, "cursor": self._cursor}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["rng"])
        self._order, self._cursor = state["order"], state["cursor"]

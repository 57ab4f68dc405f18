"""Tests of purify.data: dictionaries, hidden codes, labels, noise, sampling and the data stream.

Statistical checks compare an empirical mean with its expectation and allow ``Z`` standard
errors, the standard error being computed from the variance of the quantity averaged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import purify.data
from purify.config import DataConfig
from purify.data import (
    DICTIONARIES,
    Batch,
    DataStream,
    SparseCodingProblem,
    _nonzeros,
    labels,
    make_dictionary,
    make_teacher,
    sample_hidden,
    uniform_bits,
)

Z = 5.0  # standard errors allowed in statistical checks (two-sided p ≈ 6e-7 each)
F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def problem(d=20, k=4, *, kind="orthogonal", sigma_x=0.0, spike_level=0.0, spike_prob=0.0, seed=0):
    M = make_dictionary(kind, d, d, generator=gen(seed), dtype=F64)
    w = make_teacher(d, generator=gen(seed + 1), dtype=F64)
    levels = ((1.0, 1.0 / d), (1.0 / math.sqrt(k), k / d))
    return SparseCodingProblem(M, w, levels, sigma_x, spike_level, spike_prob)


# ---------------------------------------------------------------------------- dictionaries


@pytest.mark.parametrize("kind", ["identity", "orthogonal"])
def test_square_dictionaries_are_orthogonal(kind):
    M = make_dictionary(kind, 30, 30, generator=gen(1), dtype=F64)
    assert M.shape == (30, 30)
    torch.testing.assert_close(M.T @ M, torch.eye(30, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(M @ M.T, torch.eye(30, dtype=F64), atol=1e-12, rtol=0)


def test_orthogonal_dictionary_float32_is_orthogonal_to_float_precision():
    M = make_dictionary("orthogonal", 50, 50, generator=gen(2))
    assert M.dtype == torch.float32
    torch.testing.assert_close(M.T @ M, torch.eye(50), atol=1e-5, rtol=0)


def test_orthogonal_dictionary_reproducible_and_seed_dependent():
    a = make_dictionary("orthogonal", 15, 15, generator=gen(7), dtype=F64)
    b = make_dictionary("orthogonal", 15, 15, generator=gen(7), dtype=F64)
    c = make_dictionary("orthogonal", 15, 15, generator=gen(8), dtype=F64)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_orthogonal_dictionary_is_haar():
    # For Haar Q (d×d): M[0,0] is a coordinate of a uniform unit vector, so E M00² = 1/d,
    # E M00⁴ = 3/(d(d+2)); M00 is symmetric; E tr Q = 0 with Var tr Q = 1.  Without the QR
    # sign fix LAPACK's Q has a biased diagonal (e.g. Q[0,0] < 0 always), which this catches.
    d, n = 8, 800  # unfixed QR: diagonal mean ≈ −0.25 vs 5 SE = 0.08 here
    g = gen(3)
    Ms = torch.stack([make_dictionary("orthogonal", d, d, generator=g, dtype=F64) for _ in range(n)])
    m00 = Ms[:, 0, 0]
    var_sq = 3.0 / (d * (d + 2)) - 1.0 / d**2
    assert abs(float((m00**2).mean()) - 1.0 / d) < Z * math.sqrt(var_sq / n)
    assert abs(float((m00 > 0).double().mean()) - 0.5) < Z * 0.5 / math.sqrt(n)
    diag = torch.diagonal(Ms, dim1=1, dim2=2)
    for i in range(d):  # every diagonal entry unbiased, Var M_ii = 1/d
        assert abs(float(diag[:, i].mean())) < Z * math.sqrt(1.0 / (d * n))
    assert abs(float(diag.sum(dim=1).mean())) < Z / math.sqrt(n)


def test_overcomplete_dictionary_unit_columns_and_incoherent():
    d, D = 200, 400
    M = make_dictionary("overcomplete", d, D, generator=gen(4), dtype=F64)
    assert M.shape == (d, D)
    torch.testing.assert_close(M.norm(dim=0), torch.ones(D, dtype=F64), atol=1e-12, rtol=0)
    G = M.T @ M - torch.eye(D, dtype=F64)
    coherence = float(G.abs().max())
    assert coherence < 4 * math.sqrt(math.log(D) / d)
    assert coherence > 0.05  # really random, not accidentally orthogonal


def test_unknown_dictionary_raises_naming_allowed():
    with pytest.raises(ValueError) as e:
        make_dictionary("hadamard", 4, 4, generator=gen(0))
    for kind in DICTIONARIES:
        assert kind in str(e.value)


@pytest.mark.parametrize("kind", ["identity", "orthogonal"])
@pytest.mark.parametrize("D", [10, 30])
def test_square_dictionaries_reject_other_widths(kind, D):
    with pytest.raises(ValueError, match="n_features"):
        make_dictionary(kind, 20, D, generator=gen(0))


def test_teacher_is_balanced_signs():
    n = 20000
    w = make_teacher(n, generator=gen(5), dtype=F64)
    assert set(w.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(w.mean())) < Z / math.sqrt(n)


# ---------------------------------------------------------------------------- hidden codes

LEVELS = ((1.0, 0.02), (0.25, 0.15), (0.6, 0.05))


def test_sample_hidden_level_frequencies_and_signs():
    n, D = 4000, 50
    z = sample_hidden(n, D, levels=LEVELS, generator=gen(6), dtype=F64)
    assert z.shape == (n, D) and z.dtype == F64
    N = n * D
    a = z.abs()
    total = 0.0
    for mag, p in LEVELS:
        hit = a == mag
        freq = float(hit.double().mean())
        assert abs(freq - p) < Z * math.sqrt(p * (1 - p) / N), (mag, freq, p)
        # signs are a fair coin at every level
        pos = float((z[hit] > 0).double().mean())
        assert abs(pos - 0.5) < Z * 0.5 / math.sqrt(int(hit.sum()))
        total += p
    # nothing but the listed magnitudes and zero
    assert bool(((a == 0) | (a == 1.0) | (a == 0.25) | (a == 0.6)).all())
    p0 = 1 - total
    assert abs(float((a == 0).double().mean()) - p0) < Z * math.sqrt(p0 * (1 - p0) / N)


def test_sample_hidden_l0_and_squared_norm_means():
    n, D = 3000, 40
    prob = SparseCodingProblem(torch.eye(D, dtype=F64), torch.ones(D, dtype=F64), LEVELS, 0.0, 0.0, 0.0)
    z = sample_hidden(n, D, levels=LEVELS, generator=gen(7), dtype=F64)
    q = sum(p for _, p in LEVELS)
    l0 = (z != 0).sum(dim=1).double()
    assert abs(float(l0.mean()) - D * q) < Z * math.sqrt(D * q * (1 - q) / n)
    # E‖z‖² = D Σ m²p; Var ‖z‖² = D (Σ m⁴p − (Σ m²p)²) (independent coordinates)
    m2 = sum(m**2 * p for m, p in LEVELS)
    m4 = sum(m**4 * p for m, p in LEVELS)
    assert prob.expected_sq_norm_z() == pytest.approx(D * m2, rel=1e-12)
    sq = (z**2).sum(dim=1)
    assert abs(float(sq.mean()) - prob.expected_sq_norm_z()) < Z * math.sqrt(D * (m4 - m2**2) / n)


def test_sample_hidden_keeps_requested_dtype():
    z = sample_hidden(5, 6, levels=((0.5, 0.5),), generator=gen(0))
    assert z.dtype == torch.float32


# ---------------------------------------------------------------------------- labels


def test_labels_sign_zero_is_plus_one():
    w = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    z = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.25]], dtype=F64)
    assert labels(z, w).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_labels_balanced_for_pm1_teacher():
    # <w*, z> is symmetric, so Pr[y = +1 | <w*,z> ≠ 0] = 1/2; ties go to +1.
    p = problem(d=30, k=4, seed=11)
    b = p.sample(6000, generator=gen(12))
    s = b.z @ p.w_star
    nz = s != 0
    frac = float((b.y[nz] > 0).double().mean())
    assert abs(frac - 0.5) < Z * 0.5 / math.sqrt(int(nz.sum()))
    assert bool((b.y[~nz] == 1).all())
    assert set(b.y.unique().tolist()) <= {-1.0, 1.0}


# ---------------------------------------------------------------------------- problem.sample


def test_noiseless_sample_is_dictionary_times_code():
    p = problem(d=25, k=4, seed=1)
    b = p.sample(200, generator=gen(2))
    # x is summed over the nonzeros of z, a dense product sums in another order
    torch.testing.assert_close(b.x, b.z @ p.M.T, rtol=0, atol=1e-14)
    assert torch.equal(b.y, labels(b.z, p.w_star))
    assert b.x.shape == (200, 25) and b.z.shape == (200, 25) and b.y.shape == (200,)


def test_gaussian_noise_has_expected_energy_and_is_isotropic():
    d, n, sigma = 40, 3000, 0.7
    p = problem(d=d, k=4, sigma_x=sigma, seed=3)
    b = p.sample(n, generator=gen(4))
    xi = b.x - b.z @ p.M.T
    sq = (xi**2).sum(dim=1)
    # ‖ξ'‖² ~ σ²/d · χ²_d: mean σ², variance 2σ⁴/d
    assert abs(float(sq.mean()) - sigma**2) < Z * sigma**2 * math.sqrt(2.0 / (d * n))
    # each coordinate has mean 0 and variance σ²/d
    se_mean = sigma / math.sqrt(d * n)
    assert float(xi.mean(dim=0).abs().max()) < Z * se_mean * 1.5  # max of d means: a bit more room
    assert abs(float(xi[:, 0].var()) - sigma**2 / d) < Z * sigma**2 / d * math.sqrt(2.0 / n)


def test_spike_noise_lives_on_dictionary_and_is_bounded():
    d, n, level, pr = 30, 2000, 0.12, 0.3
    p = problem(d=d, k=4, spike_level=level, spike_prob=pr, seed=5)
    b = p.sample(n, generator=gen(6))
    coef = (b.x - b.z @ p.M.T) @ p.M  # ξ'' in the dictionary basis (MᵀM = I)
    assert float(coef.abs().max()) <= level + 1e-12
    on = coef.abs() > level / 2
    # every coefficient is 0 or ±level
    assert float((coef[on].abs() - level).abs().max()) < 1e-12
    assert float(coef[~on].abs().max()) < 1e-12
    N = n * d
    assert abs(float(on.double().mean()) - pr) < Z * math.sqrt(pr * (1 - pr) / N)
    assert abs(float((coef[on] > 0).double().mean()) - 0.5) < Z * 0.5 / math.sqrt(int(on.sum()))


def _reference_sample(p: SparseCodingProblem, n: int, generator: torch.Generator) -> Batch:
    """The sampler written with torch alone (nonzero, bucketize, a full stable sort), as it was
    before its scans moved to numpy: the switch test below holds them equal bit for bit."""

    def nonzeros(u, levels):
        bounds, values, lower = [], [], 0.0
        for magnitude, prob in levels:
            bounds += [lower + prob / 2, lower + prob]
            values += [-magnitude, magnitude]
            lower += prob
        edges = torch.tensor(bounds, dtype=F64)
        flat = (u < edges[-1]).view(-1).nonzero().squeeze(1)
        return flat, torch.tensor(values, dtype=p.M.dtype)[torch.bucketize(u.view(-1)[flat], edges, right=True)]

    D = p.n_features
    spikes = p.spike_prob > 0 and p.spike_level > 0
    u = torch.rand(2 if spikes else 1, n, D, generator=generator, dtype=F64)
    flat, values = nonzeros(u[0], p.levels)
    z = torch.zeros(n * D, dtype=p.M.dtype)
    z[flat] = values
    z = z.view(n, D)
    if spikes:
        flat_s, values_s = nonzeros(u[1], ((p.spike_level, p.spike_prob),))
        flat, order = torch.cat([flat, flat_s]).sort(stable=True)
        values = torch.cat([values, values_s])[order]
    starts = torch.searchsorted(flat, torch.arange(n) * D)
    x = torch.nn.functional.embedding_bag(flat % D, p.M.T.contiguous(), starts, mode="sum", per_sample_weights=values)
    if p.sigma_x > 0:
        x.add_(torch.randn(n, p.d, generator=generator, dtype=p.M.dtype), alpha=p.sigma_x / math.sqrt(p.d))
    return Batch(x, labels(z, p.w_star), z)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("spike_prob", [0.0, 0.05, 0.4])
def test_sample_is_bit_for_bit_the_torch_only_sampler(dtype, spike_prob):
    """The optimisation's switch: numpy's scans and merge give the batches torch's gave."""
    base = problem(d=64, k=8, sigma_x=0.2, spike_level=0.1, spike_prob=spike_prob, seed=11)
    p = SparseCodingProblem(base.M.to(dtype), base.w_star.to(dtype), base.levels, 0.2, 0.1, spike_prob)
    g_new, g_ref = gen(12), gen(12)
    for n in (1, 7, 300):
        a, b = p.sample(n, generator=g_new), _reference_sample(p, n, g_ref)
        assert a.x.dtype == b.x.dtype == dtype
        for got, want in ((a.x, b.x), (a.y, b.y), (a.z, b.z)):
            assert torch.equal(got, want)
    # the generators were left in the same place
    assert torch.equal(g_new.get_state(), g_ref.get_state())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("spike_prob", [0.0, 0.05])
def test_sample_by_atom_blocks_and_helper_thread_is_bit_for_bit_the_torch_only_sampler(
        threads, spike_prob, monkeypatch):
    """The switches of the sampler's speed-ups: ``Mᵀ`` by column blocks (here three, the last
    with a tail) and, with two torch threads, the nonzero scans on the helper thread, give the
    batches of the torch-only sampler and leave the generator where it left it."""
    monkeypatch.setattr(purify.data, "ATOM_BLOCK_BYTES", 130 * 64 * 4)  # 64 columns of 130 atoms
    base = problem(d=130, k=8, sigma_x=0.2, spike_level=0.1, spike_prob=spike_prob, seed=13)
    p = SparseCodingProblem(base.M, base.w_star, base.levels, 0.2, 0.1, spike_prob)
    assert [b.shape for b in p.atoms] == [(130, 64), (130, 64), (130, 2)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert (purify.data._submitter() is purify.data._now) == (threads == 1)
        g_new, g_ref = gen(14), gen(14)
        for n in (1, 5, 200):
            a, b = p.sample(n, generator=g_new), _reference_sample(p, n, g_ref)
            for got, want in ((a.x, b.x), (a.y, b.y), (a.z, b.z)):
                assert torch.equal(got, want)
        assert torch.equal(g_new.get_state(), g_ref.get_state())
    finally:
        torch.set_num_threads(before)


def test_atom_blocks_are_aligned_column_blocks_within_the_byte_budget():
    """Blocks are contiguous, a multiple of 64 columns wide (the last the rest), at most the
    budget each unless 64 columns already exceed it, and concatenate back to ``Mᵀ``."""
    atoms = torch.randn(1000, 1000, generator=gen(3))
    blocks = purify.data.atom_blocks(atoms)  # 1 MiB: 262 columns of float32 → 256
    assert [b.shape[1] for b in blocks] == [256, 256, 256, 232]
    assert all(b.is_contiguous() for b in blocks) and torch.equal(torch.cat(blocks, dim=1), atoms)
    assert [b.shape[1] for b in purify.data.atom_blocks(atoms.double())] == [128] * 7 + [104]
    assert [b.shape[1] for b in purify.data.atom_blocks(atoms, block_bytes=10)] == [64] * 15 + [40]
    small = atoms[:, :200].contiguous()
    assert purify.data.atom_blocks(small)[0] is small  # narrower than one block: itself


def test_a_helper_failure_reaches_the_caller():
    """An exception in a submitted scan is raised by ``result()``, inline or on the helper."""
    def boom():
        raise ValueError("scan failed")

    before = torch.get_num_threads()
    for threads in (1, 2):  # inline, then on the helper thread
        torch.set_num_threads(threads)
        try:
            with pytest.raises(ValueError, match="scan failed"):
                purify.data._submitter()(boom).result()
        finally:
            torch.set_num_threads(before)


def test_codes_at_the_level_edges_fall_on_the_right_side():
    """A uniform exactly on an edge belongs to the interval it opens (``[lower, upper)``)."""
    levels = ((1.0, 0.25), (0.5, 0.25))  # edges 0.125, 0.25, 0.375, 0.5
    u = [0.0, 0.125, 0.25, 0.375, 0.5, 0.125 - 2**-53, 0.5 - 2**-53, 0.75]
    flat, values = _nonzeros(np.array([[round(v * 2**53) for v in u]], dtype=np.int64), levels, F64)
    assert flat.tolist() == [0, 1, 2, 3, 5, 6]
    assert values.tolist() == [-1.0, 1.0, -0.5, 0.5, -1.0, 0.5]


@pytest.mark.parametrize("prob", [0.062, 0.002, 1 / 3, 0.1 + 0.2])
def test_integer_edges_decide_as_the_float_uniforms_do(prob):
    """``m < ⌈b·2⁵³⌉`` is ``m·2⁻⁵³ < b`` for edges that are not multiples of 2⁻⁵³ too: the draws
    on either side of every edge (one level of ``prob``: edges ``prob/2`` and ``prob``) get the
    codes that comparing the floats gives, and a wrong rounding (floor) fails it."""
    levels = ((0.5, prob),)
    edges = [prob / 2, prob]
    m = np.array([[c + k for c in (math.floor(e * 2**53) for e in edges) for k in (-1, 0, 1, 2)]], dtype=np.int64)
    u = m.astype(np.float64) * 2.0**-53
    want_flat = np.flatnonzero(u[0] < edges[-1])
    want = np.where(u[0][want_flat] < edges[0], -0.5, 0.5)
    flat, values = _nonzeros(m, levels, F64)
    assert flat.tolist() == want_flat.tolist() and values.tolist() == want.tolist()


@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 5, 313), (0, 4)])
def test_uniform_bits_are_torch_rand_and_leave_the_generator_where_it_would(shape):
    assert purify.data._random_bits_match()  # this torch build takes the fast path
    g_bits, g_rand = gen(3), gen(3)
    m = uniform_bits(shape, generator=g_bits)
    u = torch.rand(shape, generator=g_rand, dtype=F64)
    assert m.dtype == np.int64 and m.shape == shape
    assert np.array_equal(m.astype(np.float64) * 2.0**-53, u.numpy())
    assert torch.equal(g_bits.get_state(), g_rand.get_state())
    # and the next draw of another kind is the same too
    assert torch.equal(torch.randn(5, generator=g_bits), torch.randn(5, generator=g_rand))


def test_uniform_bits_fall_back_to_torch_rand_where_the_build_disagrees(monkeypatch):
    monkeypatch.setattr(purify.data, "_random_bits_match", lambda: False)
    g_bits, g_rand = gen(4), gen(4)
    m = uniform_bits((6, 50), generator=g_bits)
    assert np.array_equal(m.astype(np.float64) * 2.0**-53, torch.rand(6, 50, generator=g_rand, dtype=F64).numpy())
    assert torch.equal(g_bits.get_state(), g_rand.get_state())


def test_sample_reproducible_for_same_seed():
    p = problem(d=20, k=4, sigma_x=0.3, spike_level=0.1, spike_prob=0.2, seed=7)
    a, b = p.sample(50, generator=gen(9)), p.sample(50, generator=gen(9))
    c = p.sample(50, generator=gen(10))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.z, b.z)
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("kind", ["orthogonal", "overcomplete"])
def test_dense_direction_is_unit_and_parallel_to_M_wstar(kind):
    d, D = 20, (20 if kind == "orthogonal" else 35)
    M = make_dictionary(kind, d, D, generator=gen(1), dtype=F64)
    w = make_teacher(D, generator=gen(2), dtype=F64)
    p = SparseCodingProblem(M, w, ((1.0, 0.1),), 0.0, 0.0, 0.0)
    v = p.dense_direction()
    assert v.shape == (d,)
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-12)
    mw = M @ w
    torch.testing.assert_close(v * mw.norm(), mw, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------- data stream


def indexed_set(n: int) -> Batch:
    """A fixed set whose x[:, 0] is the example's index."""
    idx = torch.arange(n, dtype=F64)
    x = torch.stack([idx, -idx], dim=1)
    return Batch(x, torch.where(idx % 2 == 0, 1.0, -1.0).to(F64), idx[:, None])


def test_online_stream_draws_fresh_batches_from_the_generator():
    p = problem(d=10, k=2, sigma_x=0.1, seed=2)
    s = DataStream(p, batch_size=16, generator=gen(3))
    b1, b2 = s.next(), s.next()
    assert b1.x.shape == (16, 10)
    assert not torch.equal(b1.x, b2.x)
    # the stream is exactly the sequence of samples from its generator
    g = gen(3)
    assert torch.equal(b1.x, p.sample(16, generator=g).x)
    assert torch.equal(b2.x, p.sample(16, generator=g).x)


def test_fixed_stream_visits_every_example_once_per_epoch():
    n, bs = 60, 12
    s = DataStream(problem(d=4, k=1), batch_size=bs, generator=gen(4), train_set=indexed_set(n))
    orders = []
    for _ in range(3):
        seen = torch.cat([s.next().x[:, 0] for _ in range(n // bs)])
        assert sorted(seen.long().tolist()) == list(range(n))
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])  # reshuffled each epoch
    # rows stay aligned: x, y, z of a batch come from the same examples
    b = s.next()
    assert torch.equal(b.z[:, 0], b.x[:, 0]) and torch.equal(b.x[:, 1], -b.x[:, 0])
    assert torch.equal(b.y, torch.where(b.x[:, 0] % 2 == 0, 1.0, -1.0).to(F64))


def test_fixed_stream_never_repeats_within_epoch_when_batch_does_not_divide():
    # The tail n mod bs of each permutation is dropped (a fresh permutation starts instead).
    n, bs = 50, 12
    s = DataStream(problem(d=4, k=1), batch_size=bs, generator=gen(5), train_set=indexed_set(n))
    for _ in range(3):
        seen = torch.cat([s.next().x[:, 0] for _ in range(n // bs)]).long().tolist()
        assert len(set(seen)) == len(seen) == bs * (n // bs)


@pytest.mark.parametrize("bs", [40, 41, 1000])
def test_full_batch_when_batch_size_at_least_n(bs):
    ts = indexed_set(40)
    s = DataStream(problem(d=4, k=1), batch_size=bs, generator=gen(6), train_set=ts)
    for _ in range(3):
        b = s.next()
        assert torch.equal(b.x, ts.x) and torch.equal(b.y, ts.y)


@pytest.mark.parametrize("fixed", [False, True])
def test_stream_state_round_trip_reproduces_next_batches(fixed):
    p = problem(d=8, k=2, sigma_x=0.2, seed=3)
    ts = p.sample(30, generator=gen(1)) if fixed else None
    s = DataStream(p, batch_size=7, generator=gen(7), train_set=ts)
    for _ in range(3):  # mid-epoch for the fixed set (30 = 4·7 + 2)
        s.next()
    state = s.state_dict()
    ahead = [s.next().x for _ in range(6)]  # crosses an epoch boundary
    s.load_state_dict(state)
    assert all(torch.equal(a, s.next().x) for a in ahead)
    # a new stream with an unrelated generator resumes identically
    t = DataStream(p, batch_size=7, generator=gen(999), train_set=ts)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.next().x) for a in ahead)


# ---------------------------------------------------------------------------- config defaults


def test_data_config_defaults_resolve_to_paper_levels():
    c = DataConfig(d=50, k=5, sigma_x=0.2).resolve()
    assert c.n_features == 50
    assert c.p_one == pytest.approx(2 / 50) and c.p_small == pytest.approx(5 / 50)
    assert c.levels == ((1.0, c.p_one), (1 / math.sqrt(5), c.p_small))
    assert c.spike_level == pytest.approx(5**-0.501)
    # default spike probability makes E ξ''_i² = σ_x² / D
    assert c.spike_level**2 * c.spike_prob == pytest.approx(0.2**2 / 50)
    o = DataConfig(d=50, k=5, dictionary="overcomplete").resolve()
    assert o.n_features == 100 and o.p_one == pytest.approx(2 / 100) and o.p_small == pytest.approx(5 / 100)


def test_config_levels_give_theta_k_sparsity():
    # E‖z‖₀ = D (p_one + p_small) = 2 + k with the defaults
    c = DataConfig(d=60, k=6).resolve()
    n = 2000
    z = sample_hidden(n, c.n_features, levels=c.levels, generator=gen(8), dtype=F64)
    q = c.p_one + c.p_small
    assert abs(float((z != 0).sum(dim=1).double().mean()) - (2 + c.k)) < Z * math.sqrt(
        c.n_features * q * (1 - q) / n
    )

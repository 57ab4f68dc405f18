"""Tests of purify.config: validation messages, derived defaults, JSON round trip, theory notes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from purify.attacks import ATTACKS, NORMS
from purify.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    NetConfig,
    RunConfig,
    TrainConfig,
)
from purify.data import DICTIONARIES

NAN, INF = float("nan"), float("inf")


def _raises(make, name: str, value) -> str:
    """``make()`` raises a one-line ConfigError naming ``name`` and ``value``; return its text."""
    with pytest.raises(ConfigError) as info:
        make()
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{name}=" in msg, msg
    assert repr(value) in msg, msg
    return msg


# --------------------------------------------------------------------------------------
# Validation: every rule names the field and the bad value
# --------------------------------------------------------------------------------------

# (config class, keyword arguments, field name in the message, bad value)
BAD = [
    # DataConfig
    (DataConfig, {"d": 1000, "k": 2000}, "k", 2000),
    (DataConfig, {"d": 10, "k": 11}, "k", 11),
    (DataConfig, {"k": 0}, "k", 0),
    (DataConfig, {"d": 1, "k": 1}, "d", 1),
    (DataConfig, {"d": 0}, "d", 0),
    (DataConfig, {"d": -5}, "d", -5),
    (DataConfig, {"d": 32.0}, "d", 32.0),
    (DataConfig, {"d": "32"}, "d", "32"),
    (DataConfig, {"d": True}, "d", True),
    (DataConfig, {"d": 32, "k": 2.0}, "k", 2.0),
    (DataConfig, {"d": 32, "k": True}, "k", True),
    (DataConfig, {"dictionary": "foo"}, "dictionary", "foo"),
    (DataConfig, {"dictionary": "Identity"}, "dictionary", "Identity"),
    (DataConfig, {"d": 32, "k": 3, "n_features": 40}, "n_features", 40),
    (DataConfig, {"d": 32, "k": 3, "n_features": 32.0}, "n_features", 32.0),
    (DataConfig, {"d": 32, "k": 3, "dictionary": "overcomplete", "n_features": 32}, "n_features", 32),
    (DataConfig, {"d": 32, "k": 3, "dictionary": "overcomplete", "n_features": 64.0}, "n_features", 64.0),
    (DataConfig, {"p_one": 1.5}, "p_one", 1.5),
    (DataConfig, {"p_one": -0.1}, "p_one", -0.1),
    (DataConfig, {"p_one": NAN}, "p_one", NAN),
    (DataConfig, {"p_small": 2.0}, "p_small", 2.0),
    (DataConfig, {"p_small": INF}, "p_small", INF),
    (DataConfig, {"extra_levels": ((0.5,),)}, "extra_levels[0]", (0.5,)),
    (DataConfig, {"extra_levels": (0.5,)}, "extra_levels[0]", 0.5),
    (DataConfig, {"extra_levels": 0.5}, "extra_levels", 0.5),
    (DataConfig, {"extra_levels": ((1.5, 0.1),)}, "extra_levels[0]", (1.5, 0.1)),
    (DataConfig, {"extra_levels": ((0.0, 0.1),)}, "extra_levels[0]", (0.0, 0.1)),
    (DataConfig, {"extra_levels": ((0.5, 0.1), (NAN, 0.1))}, "extra_levels[1]", (NAN, 0.1)),
    (DataConfig, {"extra_levels": ((0.5, 1.1),)}, "extra_levels[0] probability", 1.1),
    (DataConfig, {"sigma_x": -0.1}, "sigma_x", -0.1),
    (DataConfig, {"sigma_x": NAN}, "sigma_x", NAN),
    (DataConfig, {"sigma_x": INF}, "sigma_x", INF),
    (DataConfig, {"spike_level": -1.0}, "spike_level", -1.0),
    (DataConfig, {"spike_level": NAN}, "spike_level", NAN),
    (DataConfig, {"spike_prob": 1.01}, "spike_prob", 1.01),
    (DataConfig, {"n_train": 1}, "n_train", 1),
    (DataConfig, {"n_train": 100.0}, "n_train", 100.0),
    (DataConfig, {"n_test": 9}, "n_test", 9),
    (DataConfig, {"n_test": "200"}, "n_test", "200"),
    # NetConfig
    (NetConfig, {"width": 0}, "m", 0),
    (NetConfig, {"width": -3}, "m", -3),
    (NetConfig, {"width": 64.0}, "m", 64.0),
    (NetConfig, {"width": True}, "m", True),
    (NetConfig, {"sigma0": 0.0}, "sigma0", 0.0),
    (NetConfig, {"sigma0": NAN}, "sigma0", NAN),
    (NetConfig, {"activation": "relu"}, "activation", "relu"),
    (NetConfig, {"bias_schedule": "cosine"}, "bias_schedule", "cosine"),
    (NetConfig, {"r_start": 0.0}, "r_start", 0.0),
    (NetConfig, {"r_end": -1.0}, "r_end", -1.0),
    (NetConfig, {"r_decay_fraction": 0.0}, "r_decay_fraction", 0.0),
    (NetConfig, {"r_decay_fraction": 1.5}, "r_decay_fraction", 1.5),
    (NetConfig, {"c_b": INF}, "c_b", INF),
    (NetConfig, {"sigma_rho_ratio": -0.1}, "sigma_rho_ratio", -0.1),
    (NetConfig, {"lam": NAN}, "lam", NAN),
    (NetConfig, {"lam": -1e-3}, "lam", -1e-3),
    # TrainConfig
    (TrainConfig, {"clean_steps": -1}, "clean_steps", -1),
    (TrainConfig, {"clean_steps": 1.5}, "clean_steps", 1.5),
    (TrainConfig, {"adv_steps": -2}, "adv_steps", -2),
    (TrainConfig, {"adv_steps": True}, "adv_steps", True),
    (TrainConfig, {"lr": 0.0}, "lr", 0.0),
    (TrainConfig, {"lr": -1.0}, "lr", -1.0),
    (TrainConfig, {"lr": NAN}, "lr", NAN),
    (TrainConfig, {"lr": INF}, "lr", INF),
    (TrainConfig, {"lr": "1"}, "lr", "1"),
    (TrainConfig, {"adv_lr": 0.0}, "adv_lr", 0.0),
    (TrainConfig, {"batch_size": 0}, "batch_size", 0),
    (TrainConfig, {"batch_size": 32.0}, "batch_size", 32.0),
    (TrainConfig, {"adv_attack": "dense"}, "adv_attack", "dense"),
    (TrainConfig, {"adv_attack": "foo"}, "adv_attack", "foo"),
    (TrainConfig, {"adv_norm": "l1"}, "adv_norm", "l1"),
    (TrainConfig, {"adv_tau": 0.0}, "adv_tau", 0.0),
    (TrainConfig, {"adv_tau": -INF}, "adv_tau", -INF),
    (TrainConfig, {"adv_pgd_steps": 0}, "adv_pgd_steps", 0),
    (TrainConfig, {"adv_init": "zero"}, "adv_init", "zero"),
    (TrainConfig, {"adv_bias": "learned"}, "adv_bias", "learned"),
    (TrainConfig, {"clean_snapshots": 0}, "clean_snapshots", 0),
    (TrainConfig, {"adv_snapshots": 10_001}, "adv_snapshots", 10_001),
    (TrainConfig, {"log_points": 2.5}, "log_points", 2.5),
    # EvalConfig
    (EvalConfig, {"tau": 0.0}, "tau", 0.0),
    (EvalConfig, {"tau": -1.0}, "tau", -1.0),
    (EvalConfig, {"tau": NAN}, "tau", NAN),
    (EvalConfig, {"tau": INF}, "tau", INF),
    (EvalConfig, {"tau_linf": 0.0}, "tau_linf", 0.0),
    (EvalConfig, {"radii": ()}, "radii", ()),
    (EvalConfig, {"radii": (1.0, 0.0)}, "radii", (1.0, 0.0)),
    (EvalConfig, {"radii": (1.0, NAN)}, "radii", (1.0, NAN)),
    (EvalConfig, {"radii": 1.0}, "radii", 1.0),
    (EvalConfig, {"norms": ("l2", "l3")}, "norms", ("l2", "l3")),
    (EvalConfig, {"norms": ()}, "norms", ()),
    (EvalConfig, {"norms": ("l2", "linf", "l2")}, "norms", ("l2", "linf", "l2")),
    (EvalConfig, {"radii": (0.5, 1.0, 0.5)}, "radii", (0.5, 1.0, 0.5)),
    (EvalConfig, {"norms": "l2"}, "norms", "l2"),
    (EvalConfig, {"attacks": ("fgm", "foo")}, "attacks", ("fgm", "foo")),
    (EvalConfig, {"attacks": ("fgm", "fgm")}, "attacks", ("fgm", "fgm")),
    (EvalConfig, {"attacks": ()}, "attacks", ()),
    (EvalConfig, {"pgd_steps": 0}, "pgd_steps", 0),
    (EvalConfig, {"pgd_restarts": 0}, "pgd_restarts", 0),
    (EvalConfig, {"pgd_rel_step": 0.0}, "pgd_rel_step", 0.0),
    (EvalConfig, {"n_eval": 9}, "n_eval", 9),
    # RunConfig
    (RunConfig, {"seed": -1}, "seed", -1),
    (RunConfig, {"seed": 2**63}, "seed", 2**63),
    (RunConfig, {"seed": 1.0}, "seed", 1.0),
    (RunConfig, {"seed": True}, "seed", True),
    (RunConfig, {"device": "tpu"}, "device", "tpu"),
    (RunConfig, {"device": 1}, "device", 1),
    (RunConfig, {"device": None}, "device", None),
]


@pytest.mark.parametrize(("klass", "kwargs", "name", "value"), BAD,
                         ids=[f"{c.__name__}-{n}={v!r}" for c, _, n, v in BAD])
def test_every_rule_raises_config_error_naming_field_and_value(klass, kwargs, name, value):
    msg = _raises(lambda: klass(**kwargs), name, value)
    assert msg.startswith(f"invalid {name}=")


def test_level_probabilities_must_sum_to_at_most_one():
    with pytest.raises(ConfigError, match=r"level probabilities=1\.2\d*: must sum to at most 1"):
        DataConfig(p_one=0.6, p_small=0.6)
    with pytest.raises(ConfigError, match="level probabilities"):
        DataConfig(p_one=0.5, p_small=0.3, extra_levels=((0.7, 0.3),))
    DataConfig(p_one=0.5, p_small=0.3, extra_levels=((0.7, 0.2),))  # exactly 1 is fine


def test_derived_probabilities_are_checked_on_resolve():
    """k = d makes the default p_small = 1, and even the capped p_one = 1/D on top exceeds 1."""
    cfg = DataConfig(d=8, k=8)  # each field valid on its own
    with pytest.raises(ConfigError, match="level probabilities"):
        cfg.resolve()
    with pytest.raises(ConfigError, match="level probabilities"):
        RunConfig(data=cfg).resolve()


def test_default_p_one_is_capped_near_k_equal_d():
    """2/D unit coordinates per input, lowered to what p_small leaves as k approaches D."""
    assert DataConfig(d=100, k=10).resolve().p_one == pytest.approx(2 / 100)
    assert DataConfig(d=8, k=7).resolve().p_one == pytest.approx(1 / 8)
    assert DataConfig(d=8, k=6).resolve().p_one == pytest.approx(2 / 8)


_BAD_INTS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=3),
    st.none(), st.tuples(st.integers()),
)
_BAD_FLOATS = st.one_of(
    st.just(NAN), st.just(INF), st.just(-INF), st.booleans(), st.text(max_size=3),
    st.tuples(st.floats()),
)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from([
    (DataConfig, "d"), (DataConfig, "k"), (DataConfig, "n_test"), (NetConfig, "width"),
    (TrainConfig, "batch_size"), (TrainConfig, "adv_pgd_steps"), (TrainConfig, "log_points"),
    (EvalConfig, "pgd_steps"), (EvalConfig, "pgd_restarts"), (EvalConfig, "n_eval"),
]), value=_BAD_INTS)
def test_non_integers_are_rejected_where_integers_are_needed(field, value):
    klass, name = field
    assume(not (value is None and name == "width"))  # width=None means "derive it"
    with pytest.raises(ConfigError) as info:
        klass(**{name: value})
    assert "\n" not in str(info.value)
    assert f"={value!r}" in str(info.value)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from([
    (DataConfig, "sigma_x"), (DataConfig, "p_one"), (DataConfig, "p_small"), (DataConfig, "spike_prob"),
    (DataConfig, "spike_level"), (NetConfig, "sigma0"), (NetConfig, "r_start"), (NetConfig, "c_b"),
    (NetConfig, "lam"), (NetConfig, "sigma_rho_ratio"), (TrainConfig, "lr"), (TrainConfig, "adv_lr"),
    (TrainConfig, "adv_tau"), (EvalConfig, "tau"), (EvalConfig, "tau_linf"), (EvalConfig, "pgd_rel_step"),
]), value=_BAD_FLOATS)
def test_non_finite_or_non_numeric_floats_are_rejected(field, value):
    klass, name = field
    with pytest.raises(ConfigError) as info:
        klass(**{name: value})
    assert f"invalid {'m' if name == 'width' else name}={value!r}" in str(info.value)


def test_valid_defaults_construct():
    RunConfig()
    DataConfig(d=2, k=1)
    DataConfig(d=32, k=3, dictionary="overcomplete", n_features=48)
    EvalConfig(radii=[0.5, 1.0])  # lists are accepted from Python callers


# --------------------------------------------------------------------------------------
# resolve(): no None left, derived defaults follow their formulas
# --------------------------------------------------------------------------------------


def _nones(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nones(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _nones(v, f"{path}[{i}]")
    elif obj is None:
        yield path


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(2, 5000),
    k_frac=st.floats(0.0, 0.5),
    dictionary=st.sampled_from(DICTIONARIES),
    schedule=st.sampled_from(["norm", "paper"]),
    adv_norm=st.sampled_from(NORMS),
    lr=st.none() | st.floats(1e-4, 10.0),
    sigma_x=st.floats(0.0, 3.0),
    seed=st.none() | st.integers(0, 2**63 - 1),
)
def test_resolve_fills_every_derived_field(d, k_frac, dictionary, schedule, adv_norm, lr, sigma_x, seed):
    k = max(1, int(k_frac * d))
    cfg = RunConfig(
        data=DataConfig(d=d, k=k, dictionary=dictionary, sigma_x=sigma_x),
        net=NetConfig(bias_schedule=schedule),
        train=TrainConfig(lr=lr, adv_norm=adv_norm),
        seed=seed,
    )
    r = cfg.resolve()
    # n_train=None is not a default waiting to be derived but the online-sampling mode.
    assert list(_nones(dataclasses.asdict(r))) == ["data.n_train"]
    assert list(_nones(dataclasses.asdict(RunConfig(data=DataConfig(n_train=64)).resolve()))) == []
    assert r.resolve() == r  # idempotent

    D = 2 * d if dictionary == "overcomplete" else d
    assert r.data.n_features == D
    assert r.data.p_one == pytest.approx(min(2 / D, max(1 / D, 1 - k / D)))
    assert r.data.p_small == pytest.approx(k / D)
    assert r.data.spike_level == pytest.approx(k**-0.501)
    assert 0 <= r.data.spike_prob <= 1
    assert r.net.width == 2 * d
    assert r.net.sigma0 == pytest.approx(1 / d)
    if schedule == "paper":
        assert r.net.sigma_rho_ratio == pytest.approx(1 / math.sqrt(math.log(d)))
        assert r.net.lam == pytest.approx(max(math.log(math.log(math.log(max(d, 16)))), 0) / d)
    else:
        assert r.net.sigma_rho_ratio == pytest.approx(0.05)
        assert r.net.lam == 0
    assert r.preset == "purification"  # the default: τ = 0.5/√k, kept b_i/‖w_i‖, clean/2 steps
    assert r.eval.tau == pytest.approx(0.5 / math.sqrt(k))
    assert r.eval.tau_linf == pytest.approx(r.eval.tau / math.sqrt(d))
    assert r.eval.n_eval == min(cfg.eval.n_eval, cfg.data.n_test)
    assert r.eval.pgd_rel_step == pytest.approx(2.5 / r.eval.pgd_steps)
    assert r.train.clean_steps == 4 * d
    assert r.train.adv_steps == max(1, r.train.clean_steps // 2) == r.train.clean_steps // 2
    assert r.train.adv_bias == "norm"
    if lr is not None:
        assert r.train.lr == lr
    assert r.train.adv_lr == pytest.approx(r.train.lr / 2)
    assert r.train.adv_tau == pytest.approx(r.eval.tau if adv_norm == "l2" else r.eval.tau_linf)
    if seed is not None:
        assert r.seed == seed
    assert isinstance(r.seed, int) and 0 <= r.seed < 2**63


def test_resolve_keeps_explicit_values():
    cfg = RunConfig(
        data=DataConfig(d=64, k=4, p_one=0.02, p_small=0.1, spike_level=0.3, spike_prob=0.01, n_test=50),
        net=NetConfig(width=7, sigma0=0.5, sigma_rho_ratio=0.2, lam=0.01),
        train=TrainConfig(clean_steps=3, adv_steps=0, lr=0.3, adv_lr=0.2, adv_tau=0.9),
        eval=EvalConfig(tau=0.7, tau_linf=0.05, n_eval=20, pgd_rel_step=0.4),
        seed=5,
    )
    r = cfg.resolve()
    assert (r.data.p_one, r.data.p_small, r.data.spike_level, r.data.spike_prob) == (0.02, 0.1, 0.3, 0.01)
    assert (r.net.width, r.net.sigma0, r.net.sigma_rho_ratio, r.net.lam) == (7, 0.5, 0.2, 0.01)
    assert (r.train.clean_steps, r.train.adv_steps, r.train.lr, r.train.adv_lr, r.train.adv_tau) == (
        3, 0, 0.3, 0.2, 0.9)
    assert (r.eval.tau, r.eval.tau_linf, r.eval.n_eval, r.eval.pgd_rel_step, r.seed) == (0.7, 0.05, 20, 0.4, 5)
    # n_eval is capped by the test set; adv_steps defaults to at least one step
    assert RunConfig(data=DataConfig(n_test=30)).resolve().eval.n_eval == 30
    assert RunConfig(train=TrainConfig(clean_steps=3)).resolve().train.adv_steps == 1


def test_resolve_seed_argument_and_drawn_seed():
    assert RunConfig(seed=3).resolve(seed=9).seed == 9
    drawn = {RunConfig().resolve().seed for _ in range(5)}
    assert all(isinstance(s, int) and s >= 0 for s in drawn)
    assert len(drawn) > 1


# --------------------------------------------------------------------------------------
# JSON round trip and from_dict
# --------------------------------------------------------------------------------------


@st.composite
def _configs(draw) -> RunConfig:
    d = draw(st.integers(4, 400))
    k = draw(st.integers(1, max(1, d // 3)))
    extra = draw(st.lists(st.tuples(st.floats(0.05, 1.0), st.floats(0.0, 0.05)), max_size=2))
    attacks = draw(st.permutations(ATTACKS))[: draw(st.integers(1, len(ATTACKS)))]
    norms = draw(st.permutations(NORMS))[: draw(st.integers(1, len(NORMS)))]
    return RunConfig(
        data=DataConfig(
            d=d, k=k, dictionary=draw(st.sampled_from(DICTIONARIES)), extra_levels=tuple(extra),
            sigma_x=draw(st.floats(0, 2)), n_train=draw(st.none() | st.integers(2, 10**6)),
            n_test=draw(st.integers(10, 5000)),
        ),
        net=NetConfig(
            bias_schedule=draw(st.sampled_from(["norm", "paper"])),
            activation=draw(st.sampled_from(["smooth", "noisy"])),
            r_start=draw(st.floats(0.01, 10)),
        ),
        train=TrainConfig(
            lr=draw(st.none() | st.floats(1e-6, 1e3)),
            adv_attack=draw(st.sampled_from(["fgm", "pgd"])),
            adv_init=draw(st.sampled_from(["clean", "random"])),
            adv_bias=draw(st.sampled_from(["radius", "clean"])),
            clean_steps=draw(st.none() | st.integers(0, 10**6)),
        ),
        eval=EvalConfig(
            radii=tuple(draw(st.lists(st.floats(1e-3, 10), min_size=1, max_size=5, unique=True))),
            attacks=tuple(attacks), norms=tuple(norms),
            tau=draw(st.none() | st.floats(1e-6, 1e3, exclude_min=False)),
        ),
        seed=draw(st.none() | st.integers(0, 2**63 - 1)),
        device=draw(st.sampled_from(["cpu", "cuda", "cuda:1"])),
    )


@settings(max_examples=100, deadline=None)
@given(cfg=_configs())
def test_json_round_trip(cfg):
    assert RunConfig.from_json(cfg.to_json()) == cfg  # unresolved: None survives
    try:
        resolved = cfg.resolve()
    except ConfigError:  # e.g. the extra levels pushed the default probabilities over 1
        assume(False)
    text = resolved.to_json()
    back = RunConfig.from_json(text)
    assert back == resolved
    assert back.to_json() == text
    assert isinstance(back.eval.radii, tuple) and isinstance(back.data.extra_levels, tuple)
    assert all(isinstance(level, tuple) for level in back.data.extra_levels)


def test_from_dict_partial_tables_use_defaults():
    cfg = RunConfig.from_dict({"data": {"d": 32, "k": 3}, "eval": {"radii": [1, 2]}, "seed": 4})
    assert cfg == RunConfig(data=DataConfig(d=32, k=3), eval=EvalConfig(radii=(1, 2)), seed=4)
    assert RunConfig.from_dict({}) == RunConfig()


@pytest.mark.parametrize(("raw", "needle"), [
    ({"bogus": 1}, "unknown option bogus"),
    ({"data": {"d": 32, "dd": 3}}, "unknown option data.dd"),
    ({"net": {"m": 64}}, "unknown option net.m"),  # the config field is `width`
    ({"train": {"steps": 5}}, "unknown option train.steps"),
    ({"eval": {"tau": 0.5, "radius": 1}}, "unknown option eval.radius"),
    ({"data": 5}, "invalid data=5"),
    ({"eval": [1, 2]}, "invalid eval=[1, 2]"),
    ([1, 2], "invalid config [1, 2]"),
    ({"data": {"d": "abc"}}, "invalid d='abc'"),
    ({"data": {"d": 32, "k": 3}, "train": {"lr": None, "adv_lr": -1}}, "invalid adv_lr=-1"),
])
def test_from_dict_rejects_unknown_keys_and_bad_tables(raw, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(raw)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_message_lists_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown option data\.foo; allowed: .*\bd\b.*\bk\b"):
        RunConfig.from_dict({"data": {"foo": 1}})


def test_from_json_rejects_malformed_values():
    good = json.loads(RunConfig(seed=1).resolve().to_json())
    good["data"]["k"] = good["data"]["d"] + 1
    with pytest.raises(ConfigError, match="invalid k="):
        RunConfig.from_json(json.dumps(good))


# --------------------------------------------------------------------------------------
# Theory warnings
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("d", "k", "fires"), [
    (100, 3, False), (100, 9, False), (100, 10, True), (1000, 60, True), (1000, 31, False),
    (1000, 32, True), (10, 10, True), (2, 1, False),
])
def test_theory_warnings(d, k, fires):
    cfg = RunConfig(data=DataConfig(d=d, k=k))
    notes = cfg.theory_warnings()
    assert (k > d**0.499) == fires
    assert bool(notes) == fires
    if fires:
        assert len(notes) == 1 and f"k={k}" in notes[0] and "\n" not in notes[0]


def test_stored_config_without_adv_bias_reads_as_clean_biases():
    # Stores written before adv_bias existed kept the clean biases; a config file that omits it
    # gets today's default.
    raw = json.loads(RunConfig().resolve(seed=0).to_json())
    del raw["train"]["adv_bias"]
    assert RunConfig.from_json(json.dumps(raw)).train.adv_bias == "clean"
    # a config file without it takes the (purification) preset's
    assert RunConfig.from_dict({"train": {"lr": 0.5}}).resolve(seed=0).train.adv_bias == "norm"


# --------------------------------------------------------------------------------------
# Extreme values: refused up front, derived values named by the options behind them
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("klass", "kwargs", "name"), [
    (DataConfig, {"d": 2**53 + 1, "k": 3}, "d"),
    (NetConfig, {"width": 10**25}, "m"),
    (TrainConfig, {"batch_size": 2**60}, "batch_size"),
    (EvalConfig, {"pgd_steps": 2**53 + 1}, "pgd_steps"),
], ids=["d", "m", "batch_size", "pgd_steps"])
def test_counts_beyond_2_to_53_are_refused(klass, kwargs, name):
    with pytest.raises(ConfigError, match=rf"invalid {name}=\d+: must be an integer in \[\d+, 2\^53\]"):
        klass(**kwargs)
    klass(**{k: 2**53 if v > 2**53 else v for k, v in kwargs.items()})  # the bound itself is fine


@pytest.mark.parametrize(("section", "klass", "name"), [
    ("data", DataConfig, "sigma_x"), ("data", DataConfig, "spike_level"), ("net", NetConfig, "sigma0"),
    ("net", NetConfig, "lam"), ("eval", EvalConfig, "tau"),
])
def test_reals_whose_square_overflows_float32_are_refused(section, klass, name):
    klass(**{name: 1.8e19})  # the largest allowed
    with pytest.raises(ConfigError, match=rf"invalid {name}=1e\+200: must be at most 1.8e\+19"):
        klass(**{name: 1e200})


def test_a_subnormal_spike_level_gives_spike_probability_one_not_a_division_by_zero():
    # spike_level² underflows to 0 in float64; the ratio σ_x²/(D spike²) is astronomically > 1.
    assert DataConfig(spike_level=1e-200).resolve().spike_prob == 1.0
    assert DataConfig(spike_level=5e-324, sigma_x=0.0).resolve().spike_prob == 0.0
    assert DataConfig(spike_level=0.0).resolve().spike_prob == 0.0


def test_derived_values_out_of_range_name_the_options_they_come_from():
    # clean_steps = 4d passes 2^53 although d itself is allowed.
    with pytest.raises(ConfigError) as e:
        RunConfig(data=DataConfig(d=2**52, k=3)).resolve(seed=0)
    assert str(e.value).startswith("invalid d=4503599627370496: the derived clean_steps = 4d = ")
    assert "set clean_steps explicitly or change d" in str(e.value)
    # adv_lr = lr/2 underflows to 0 from the smallest subnormal lr.
    with pytest.raises(ConfigError, match=r"invalid lr=5e-324: the derived adv_lr = lr/2 = 0.0 must be > 0"):
        RunConfig(train=TrainConfig(lr=5e-324)).resolve(seed=0)
    RunConfig(train=TrainConfig(lr=5e-324, adv_lr=1.0)).resolve(seed=0)  # set explicitly: fine
    # An attack radius radii × tau beyond the float32 bound.
    with pytest.raises(ConfigError, match=r"invalid radii=\(2.0,\) with tau=1e\+19: the attack radius"):
        RunConfig(eval=EvalConfig(tau=1e19, radii=(2.0,))).resolve(seed=0)


def test_every_derived_field_is_listed_with_real_sources():
    """The table that names sources must cover every field resolve() fills."""
    from purify.config import DERIVED

    listed = {(s, n) for s, n, _, _ in DERIVED}
    blank = RunConfig()
    resolved = blank.resolve(seed=0)
    for section in ("data", "net", "train", "eval"):
        for f in dataclasses.fields(getattr(blank, section)):
            derived = getattr(getattr(resolved, section), f.name) is not None
            if getattr(getattr(blank, section), f.name) is None and derived:
                assert (section, f.name) in listed, (section, f.name)
    for _, _, _, sources in DERIVED:
        for name in sources:
            assert name == "preset" or any(hasattr(getattr(blank, s), name)
                                           for s in ("data", "net", "train", "eval")), name


def test_learning_rates_are_bounded_by_the_largest_float32():
    # A step size only scales a gradient: a huge one is a divergence to detect, not bad input.
    TrainConfig(lr=1e30, adv_lr=3.4e38)
    with pytest.raises(ConfigError, match=r"invalid lr=1e\+39: must be at most 3.4e\+38"):
        TrainConfig(lr=1e39)

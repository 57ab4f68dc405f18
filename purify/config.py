"""Typed run configuration: one frozen dataclass per stage, composed into :class:`RunConfig`.

Every field that may be left ``None`` is *derived* from ``d`` and ``k`` by
:meth:`RunConfig.resolve`; the resolved config (no ``None`` left) is what a run uses and what
its store records, so a run can be repeated from its store alone.  Validation happens in
``__post_init__`` and raises :class:`ConfigError` with a one-line message naming the field,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from purify.attacks import ATTACKS, NORMS
from purify.data import DICTIONARIES

BIAS_SCHEDULES = ("norm", "paper")
ACTIVATIONS = ("smooth", "noisy")
ADV_INITS = ("clean", "random")
ADV_BIASES = ("radius", "clean", "norm")


@dataclass(frozen=True)
class Preset:
    """Where a run sits relative to Theorem 5.3: the defaults of the fields a user leaves unset.

    ``tau_multiple`` sets the ℓ₂ evaluation (and training) radius ``τ = tau_multiple/√k``,
    ``adv_bias`` the biases of adversarial training and ``adv_steps_per_clean`` its length.
    """

    tau_multiple: float
    adv_bias: str
    adv_steps_per_clean: float


#: ``boundary``: the radius at ``1/√k``, the boundary of Thm 5.3's range, where robustness
#: means ignoring the small coordinates; biases raised to the radius floor (the default of
#: stores written before presets existed).
#: ``purification`` (the default): ``τ = 0.5/√k`` inside the range, each neuron's effective threshold
#: ``b_i√k/‖w_i‖`` kept where clean training left it, and adversarial training long enough for
#: the dense mixture's alignment with ``M w*`` to plateau (README, "Purification or thresholding?").
PRESETS: dict[str, Preset] = {
    "boundary": Preset(tau_multiple=1.0, adv_bias="radius", adv_steps_per_clean=0.2),
    "purification": Preset(tau_multiple=0.5, adv_bias="norm", adv_steps_per_clean=0.5),
}
EVAL_STRENGTHS = ("fast", "standard", "strong")


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line fit to show a user.

    ``name``, ``value`` and ``allowed`` are the parts of the message when one field is at fault.
    """

    def __init__(self, message: str, name: str | None = None, value: Any = None,
                 allowed: str | None = None) -> None:
        super().__init__(message)
        self.name, self.value, self.allowed = name, value, allowed


class TheoryWarning(UserWarning):
    """A parameter outside the regime the theorems cover, that still makes sense to run."""


#: Largest magnitude of a real option: runs compute in float32 and square these values (norms,
#: losses, Gaussian noise), so anything above √(float32 max) ≈ 1.8e19 overflows to inf.
LARGEST_REAL = 1.8e19

#: Largest size or step count: the timeline places steps with float64 arithmetic, exact up to
#: 2^53 (memory bounds sizes long before that: see `purify.resources`).
LARGEST_COUNT = 2**53


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: {allowed}", name, value, allowed)


#: Largest float32: the bound of reals that only scale other values (step sizes).
FLOAT32_MAX = 3.4028234663852886e38


def _positive(name: str, value: float | int | None, largest: float = LARGEST_REAL) -> None:
    if value is not None:
        _check(_finite(value) and value > 0, name, value, "must be > 0")
        _check(value <= largest, name, value, _TOO_LARGE if largest == LARGEST_REAL else
               f"must be at most {largest:.3g} (the largest float32)")


def _nonnegative(name: str, value: float | int | None) -> None:
    if value is not None:
        _check(_finite(value) and value >= 0, name, value, "must be >= 0")
        _check(value <= LARGEST_REAL, name, value, _TOO_LARGE)


_TOO_LARGE = f"must be at most {LARGEST_REAL:.2g} (runs compute in float32, where its square overflows)"


def _count(name: str, value: Any, low: int) -> None:
    """An integer option in ``[low, 2^53]``."""
    _check(_is_int(value) and low <= value <= LARGEST_COUNT, name, value,
           f"must be an integer in [{low}, 2^53]")


def _finite(value: float | int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    """An integer, but not a bool (``True`` is an ``int`` to Python, not to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _prob(name: str, value: float | None) -> None:
    if value is not None:
        _check(_finite(value) and 0 <= value <= 1, name, value, "must be a probability in [0, 1]")


@dataclass(frozen=True)
class DataConfig:
    """Sparse-coding data (Allen-Zhu & Li §2, Assumption 2.1; docs/theory.md §1)."""

    d: int = 1000  # input dimension
    k: int = 60  # sparsity scale: ‖z‖₀ = Θ(k); small coordinates have |z_i| = 1/√k
    dictionary: str = "orthogonal"  # identity | orthogonal (Haar) | overcomplete
    n_features: int | None = None  # D, atoms of M; None → d (2d if overcomplete)
    p_one: float | None = None  # Pr[|z_i| = 1]; None → 2/D (see resolve)
    p_small: float | None = None  # Pr[|z_i| = 1/√k]; None → k/D
    extra_levels: tuple[tuple[float, float], ...] = ()  # more (|z_i|, probability) pairs
    sigma_x: float = 0.1  # Gaussian noise ξ' ~ N(0, σ_x²/d I), so ‖ξ'‖ ≈ σ_x
    spike_level: float | None = None  # |ξ''_i|; None → 1/k^0.501 (the theory's maximum)
    spike_prob: float | None = None  # Pr[ξ''_i ≠ 0]; None → E ξ''_i² = σ_x²/D
    n_train: int | None = None  # fixed training set size N; None → fresh samples every step
    n_test: int = 2000  # held-out examples (clean accuracy)

    def __post_init__(self) -> None:
        _count("d", self.d, 2)
        _check(
            _is_int(self.k) and 1 <= self.k <= self.d, "k", self.k,
            f"must be an integer in [1, d={self.d}]",
        )
        _check(self.dictionary in DICTIONARIES, "dictionary", self.dictionary,
               f"allowed: {', '.join(DICTIONARIES)}")
        if self.n_features is not None:
            if self.dictionary == "overcomplete":
                _check(_is_int(self.n_features) and self.d < self.n_features <= LARGEST_COUNT,
                       "n_features", self.n_features,
                       f"an over-complete dictionary needs d={self.d} < D <= 2^53")
            else:
                _check(_is_int(self.n_features) and self.n_features == self.d, "n_features", self.n_features,
                       f"must equal d={self.d} for a {self.dictionary} dictionary")
        _prob("p_one", self.p_one)
        _prob("p_small", self.p_small)
        _check(isinstance(self.extra_levels, (tuple, list)), "extra_levels", self.extra_levels,
               "must be a list of (magnitude, probability) pairs")
        for i, level in enumerate(self.extra_levels):
            _check(isinstance(level, (tuple, list)) and len(level) == 2 and _finite(level[0]) and 0 < level[0] <= 1,
                   f"extra_levels[{i}]", level, "must be (magnitude in (0, 1], probability)")
            _prob(f"extra_levels[{i}] probability", level[1])
        total = sum(p for p in (self.p_one, self.p_small) if p is not None)
        total += sum(p for _, p in self.extra_levels)
        _check(total <= 1, "level probabilities", total, "must sum to at most 1")
        _nonnegative("sigma_x", self.sigma_x)
        _nonnegative("spike_level", self.spike_level)
        _prob("spike_prob", self.spike_prob)
        if self.n_train is not None:
            _check(_is_int(self.n_train) and 2 <= self.n_train <= LARGEST_COUNT, "n_train",
                   self.n_train, "must be an integer in [2, 2^53] (or omitted for online sampling)")
        _count("n_test", self.n_test, 10)

    def resolve(self) -> DataConfig:
        D = self.n_features or (2 * self.d if self.dictionary == "overcomplete" else self.d)
        spike = self.k**-0.501 if self.spike_level is None else self.spike_level
        spike_prob = self.spike_prob
        if spike_prob is None:
            try:
                spike_prob = min(1.0, self.sigma_x**2 / (D * spike**2)) if spike > 0 else 0.0
            except ZeroDivisionError:  # a tiny spike level whose square underflows: ratio ≫ 1
                spike_prob = 1.0 if self.sigma_x > 0 else 0.0
        p_small = self.k / D if self.p_small is None else self.p_small
        p_one = self.p_one
        if p_one is None:
            # Two expected unit coordinates per input: robust accuracy at τ = 1/√k can only come
            # from inputs whose label a unit coordinate carries, and with one (1/D) e⁻¹ = 37 %
            # have none (README, "z levels"). Capped so the levels stay a distribution when
            # k approaches D.
            p_one = min(2.0 / D, max(1.0 / D, 1.0 - p_small))
        resolved = replace(
            self,
            n_features=D,
            p_one=p_one,
            p_small=p_small,
            spike_level=spike,
            spike_prob=spike_prob,
        )
        resolved.__post_init__()  # derived probabilities must still sum to ≤ 1
        return resolved

    @property
    def levels(self) -> tuple[tuple[float, float], ...]:
        """``(|z_i|, probability)`` pairs of the resolved config."""
        assert self.p_one is not None and self.p_small is not None, "resolve() first"
        return ((1.0, self.p_one), (1.0 / math.sqrt(self.k), self.p_small), *self.extra_levels)


@dataclass(frozen=True)
class NetConfig:
    """The symmetric bias-ReLU learner and its schedules (Allen-Zhu & Li §4, §4.1; docs/theory.md §2)."""

    width: int | None = None  # m; None → 2d
    sigma0: float | None = None  # init w_i ~ N(0, σ₀² I); None → 1/d
    activation: str = "smooth"  # smooth: E_ρ ReLU; noisy: one draw of ρ per example and neuron
    bias_schedule: str = "norm"  # norm (working default) | paper (§4.1 taken literally)
    r_start: float = 1.5  # norm schedule: b_i = r_t ‖w_i‖/√k, r_t from r_start ...
    r_end: float = 0.6  # ... to r_end ...
    r_decay_fraction: float = 0.7  # ... over this fraction of the clean steps
    c_b: float = 1.0  # paper schedule: b grows by η c_b / d per step up to 1/k^0.5001
    sigma_rho_ratio: float | None = None  # σ_ρ / b; None → 0.05 (norm) or 1/√log d (paper)
    lam: float | None = None  # regularizer weight λ; None → 0 (norm) or logloglog d / d (paper)

    def __post_init__(self) -> None:
        if self.width is not None:
            _count("m", self.width, 1)
        _positive("sigma0", self.sigma0)
        _check(self.activation in ACTIVATIONS, "activation", self.activation,
               f"allowed: {', '.join(ACTIVATIONS)}")
        _check(self.bias_schedule in BIAS_SCHEDULES, "bias_schedule", self.bias_schedule,
               f"allowed: {', '.join(BIAS_SCHEDULES)}")
        _positive("r_start", self.r_start)
        _positive("r_end", self.r_end)
        _check(_finite(self.r_decay_fraction) and 0 < self.r_decay_fraction <= 1,
               "r_decay_fraction", self.r_decay_fraction, "must be in (0, 1]")
        _positive("c_b", self.c_b)
        _nonnegative("sigma_rho_ratio", self.sigma_rho_ratio)
        _nonnegative("lam", self.lam)

    def resolve(self, data: DataConfig) -> NetConfig:
        d = data.d
        paper = self.bias_schedule == "paper"
        log_d = math.log(d)
        # logloglog d is negative below d ≈ 3.8e6... of e^e^e; clip so λ stays a weight decay.
        default_lam = max(math.log(math.log(math.log(max(d, 16)))), 0.0) / d if paper else 0.0
        default_ratio = 1.0 / math.sqrt(log_d) if paper else 0.05
        return replace(
            self,
            width=2 * d if self.width is None else self.width,
            sigma0=1.0 / d if self.sigma0 is None else self.sigma0,
            sigma_rho_ratio=default_ratio if self.sigma_rho_ratio is None else self.sigma_rho_ratio,
            lam=default_lam if self.lam is None else self.lam,
        )


@dataclass(frozen=True)
class TrainConfig:
    """Clean training (Algorithm 1) then adversarial training (Algorithm 2)."""

    clean_steps: int | None = None  # None → 4d
    adv_steps: int | None = None  # None → clean_steps × the preset's adv_steps_per_clean
    lr: float | None = None  # η of clean training; None → 1.0 (see README: scale-free in d)
    adv_lr: float | None = None  # η of adversarial training; None → lr / 2
    batch_size: int = 512  # examples per step (≥ n_train means full-batch GD)
    adv_attack: str = "fgm"  # attacker used inside adversarial training
    adv_norm: str = "l2"
    adv_tau: float | None = None  # training radius; None → the evaluation radius τ of the norm
    adv_pgd_steps: int = 3  # PGD steps when adv_attack = pgd
    adv_init: str = "clean"  # start adversarial training from the clean weights or from init
    adv_bias: str | None = None  # radius: b_i ≥ adv_tau ‖w_i‖_q; clean: keep b_i; norm: keep b_i/‖w_i‖; None → the preset's
    clean_snapshots: int = 8  # evaluation + weight snapshots in clean training (init and end included)
    adv_snapshots: int = 4  # evenly spaced snapshots in adversarial training
    log_points: int = 100  # loss/accuracy/bias log points per phase

    def __post_init__(self) -> None:
        for name in ("clean_steps", "adv_steps"):
            v = getattr(self, name)
            if v is not None:
                _count(name, v, 0)
        _positive("lr", self.lr, FLOAT32_MAX)
        _positive("adv_lr", self.adv_lr, FLOAT32_MAX)
        _count("batch_size", self.batch_size, 1)
        _check(self.adv_attack in ("fgm", "pgd"), "adv_attack", self.adv_attack,
               "allowed: fgm, pgd")
        _check(self.adv_norm in NORMS, "adv_norm", self.adv_norm, f"allowed: {', '.join(NORMS)}")
        _positive("adv_tau", self.adv_tau)
        _count("adv_pgd_steps", self.adv_pgd_steps, 1)
        _check(self.adv_init in ADV_INITS, "adv_init", self.adv_init,
               f"allowed: {', '.join(ADV_INITS)}")
        if self.adv_bias is not None:
            _check(self.adv_bias in ADV_BIASES, "adv_bias", self.adv_bias,
                   f"allowed: {', '.join(ADV_BIASES)}")
        for name in ("clean_snapshots", "adv_snapshots", "log_points"):
            v = getattr(self, name)
            _check(_is_int(v) and 1 <= v <= 10_000, name, v,
                   "must be an integer in [1, 10000]")

    def resolve(self, data: DataConfig, evaluation: EvalConfig, preset: Preset) -> TrainConfig:
        clean = 4 * data.d if self.clean_steps is None else self.clean_steps
        adv_steps = max(1, int(clean * preset.adv_steps_per_clean)) if self.adv_steps is None else self.adv_steps
        lr = 1.0 if self.lr is None else self.lr
        return replace(
            self,
            clean_steps=clean,
            adv_steps=adv_steps,
            adv_bias=preset.adv_bias if self.adv_bias is None else self.adv_bias,
            lr=lr,
            adv_lr=lr / 2 if self.adv_lr is None else self.adv_lr,
            adv_tau=evaluation.tau_for(self.adv_norm) if self.adv_tau is None else self.adv_tau,
        )


@dataclass(frozen=True)
class EvalConfig:
    """Clean and robust evaluation on the held-out set (Allen-Zhu & Li Def. 4.3; docs/theory.md §3.3)."""

    tau: float | None = None  # ℓ₂ radius; None → 1/√k (Thm 5.3's scale)
    tau_linf: float | None = None  # ℓ∞ radius; None → τ/√d (the ℓ∞ ball inside the ℓ₂ one)
    radii: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)  # grid, as multiples of the radius
    norms: tuple[str, ...] = ("l2", "linf")
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_rel_step: float | None = None  # PGD step / τ; None → 2.5 / steps
    n_eval: int = 500  # held-out examples used for the (costly) robust evaluation
    # end-of-phase evaluation: fast = the attacks above only; standard/strong add converged
    # attacks on the examples they leave unbroken (README "How robust accuracy is measured")
    strength: str = "standard"

    def __post_init__(self) -> None:
        _positive("tau", self.tau)
        _check(self.strength in EVAL_STRENGTHS, "eval-attack", self.strength,
               f"allowed: {', '.join(EVAL_STRENGTHS)}")
        _positive("tau_linf", self.tau_linf)
        _check(isinstance(self.radii, (tuple, list)) and len(self.radii) >= 1 and all(_finite(r) and 0 < r <= LARGEST_REAL for r in self.radii), "radii",
               self.radii, "must be one or more multiples > 0")
        _check(isinstance(self.norms, (tuple, list)) and len(self.norms) >= 1 and all(n in NORMS for n in self.norms), "norms", self.norms,
               f"allowed: {', '.join(NORMS)}")
        _check(isinstance(self.attacks, (tuple, list)) and len(self.attacks) >= 1 and all(a in ATTACKS for a in self.attacks), "attacks",
               self.attacks, f"allowed: {', '.join(ATTACKS)}")
        _check(len(set(self.attacks)) == len(self.attacks), "attacks", self.attacks,
               "must not repeat")
        _check(len(set(self.norms)) == len(self.norms), "norms", self.norms, "must not repeat")
        _check(len(set(self.radii)) == len(self.radii), "radii", self.radii, "must not repeat")
        _count("pgd_steps", self.pgd_steps, 1)
        _count("pgd_restarts", self.pgd_restarts, 1)
        _positive("pgd_rel_step", self.pgd_rel_step)
        _count("n_eval", self.n_eval, 10)

    def resolve(self, data: DataConfig, preset: Preset) -> EvalConfig:
        tau = preset.tau_multiple / math.sqrt(data.k) if self.tau is None else self.tau
        return replace(
            self,
            tau=tau,
            tau_linf=tau / math.sqrt(data.d) if self.tau_linf is None else self.tau_linf,
            n_eval=min(self.n_eval, data.n_test),
            pgd_rel_step=2.5 / self.pgd_steps if self.pgd_rel_step is None else self.pgd_rel_step,
        )

    def tau_for(self, norm: str) -> float:
        value = self.tau if norm == "l2" else self.tau_linf
        assert value is not None, "resolve() first"
        return value

    def taus(self, norm: str) -> list[float]:
        """The radius grid of ``norm``: ``radii × τ_norm``."""
        return [r * self.tau_for(norm) for r in self.radii]


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; ``seed=None`` is replaced by a drawn seed on resolve."""

    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int | None = None
    problem_seed: int | None = None  # dictionary, teacher, held-out set; None → seed
    device: str = "cpu"
    preset: str = "purification"  # defaults of unset radius and adversarial-training fields (PRESETS)

    def __post_init__(self) -> None:
        _check(self.preset in PRESETS, "preset", self.preset, f"allowed: {', '.join(PRESETS)}")
        if self.problem_seed is not None:
            _check(_is_int(self.problem_seed) and 0 <= self.problem_seed < 2**63, "problem_seed",
                   self.problem_seed, "must be an integer in [0, 2^63)")
        if self.seed is not None:
            _check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed,
                   "must be an integer in [0, 2^63)")
        _check(isinstance(self.device, str)
               and (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")), "device",
               self.device, "allowed: cpu, cuda, cuda:N")

    def resolve(self, seed: int | None = None) -> RunConfig:
        """Fill every derived field (and the seed) so the result fully determines the run.

        Derived values are validated like given ones: a derived value out of range raises a
        :class:`ConfigError` naming the given options it was computed from.
        """
        from purify.rng import resolve_seed

        try:
            data = self.data.resolve()
            preset = PRESETS[self.preset]
            evaluation = self.eval.resolve(data, preset)
            net, train = self.net.resolve(data), self.train.resolve(data, evaluation, preset)
        except ConfigError as e:  # `replace` validated a derived value: name its sources
            raise self._derived_error(e) from None
        resolved = replace(
            self,
            data=data,
            net=net,
            train=train,
            eval=evaluation,
            seed=(seed_ := resolve_seed(self.seed if seed is None else seed)),
            problem_seed=seed_ if self.problem_seed is None else self.problem_seed,
        )
        resolved._check_radii()
        return resolved

    def _check_radii(self) -> None:
        """Every attack radius ``radii × tau`` and PGD step must be a usable float32 value."""
        ev = self.eval
        for norm in ev.norms:
            which = "tau" if norm == "l2" else "tau_linf"
            for r in ev.radii:
                radius = r * ev.tau_for(norm)
                step = radius * (ev.pgd_rel_step or 1.0)
                if not (0 < radius <= LARGEST_REAL and 0 < step <= LARGEST_REAL):
                    raise ConfigError(
                        f"invalid radii={tuple(ev.radii)!r} with {which}={ev.tau_for(norm)!r}: the "
                        f"attack radius {r!r}×{which} = {radius!r} and its PGD step {step!r} must be "
                        f"in (0, {LARGEST_REAL:.2g}]")

    def _derived_error(self, error: ConfigError) -> ConfigError:
        """`error`, raised while deriving a field of this (unresolved) config, reworded to name
        the given options the derived value comes from."""
        name = {"m": "width", "level probabilities": "p_one"}.get(error.name or "", error.name)
        entry = next(((sec, n, f, s) for sec, n, f, s in DERIVED
                      if n == name and getattr(getattr(self, sec), n) is None), None)
        if entry is None:
            return error
        _, name, formula, sources = entry
        shown = [f"{n}={find_option(self, n)!r}" for n in sources if find_option(self, n) not in (None, ())]
        change = f" or change {', '.join(sources)}" if sources else ""
        return ConfigError(
            f"invalid {' '.join(shown) or 'defaults'}: the derived {error.name} = {formula} "
            f"= {error.value!r} {error.allowed or error}; set {name} explicitly{change}",
            name, error.value, error.allowed)

    @property
    def data_seed(self) -> int:
        """Seed of the problem streams (dictionary, teacher, held-out set): ``problem_seed``,
        or ``seed`` where it is unset (stores written before ``problem_seed`` existed)."""
        seed = self.seed if self.problem_seed is None else self.problem_seed
        assert seed is not None, "resolve() first"
        return seed

    def theory_warnings(self) -> list[str]:
        """One-line notes for parameters outside the theorems' regime (the run still proceeds)."""
        notes = []
        d, k = self.data.d, self.data.k
        if k > d**0.499:
            notes.append(f"k={k} > d^0.499={d**0.499:.1f}: outside Assumption 2.1's regime "
                         "(the simulation still runs)")
        return notes

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Inverse of ``asdict``; unknown keys raise :class:`ConfigError` naming the key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"invalid config {raw!r}: must be a table of options")
        parts = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            sub = {"data": DataConfig, "net": NetConfig, "train": TrainConfig, "eval": EvalConfig}
            if f.name in sub:
                klass = sub[f.name]
                if not isinstance(value, dict):
                    raise ConfigError(f"invalid {f.name}={value!r}: must be a table of options")
                known = {g.name for g in fields(klass)}
                for key in value:
                    if key not in known:
                        raise ConfigError(f"unknown option {f.name}.{key}; allowed: "
                                          f"{', '.join(sorted(known))}")
                value = {key: _tuplify(v) for key, v in value.items()}
                try:
                    value = klass(**value)
                except TypeError as e:
                    raise ConfigError(f"invalid {f.name} options: {e}") from None
            parts[f.name] = value
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]}; allowed: "
                              f"{', '.join(f.name for f in fields(cls))}")
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """A stored (resolved) config.  Stores written before ``adv_bias`` existed kept the
        clean biases in adversarial training, so a missing ``adv_bias`` reads as ``clean``;
        stores written before ``eval.strength`` existed ran the cheap attacks only, so a missing
        ``strength`` reads as ``fast``; stores written before presets existed ran the ``boundary``
        defaults."""
        raw = json.loads(text)
        if isinstance(raw, dict) and "preset" not in raw:
            raw["preset"] = "boundary"
        train = raw.get("train") if isinstance(raw, dict) else None
        if isinstance(train, dict) and "adv_bias" not in train:
            train["adv_bias"] = "clean"
        evaluation = raw.get("eval") if isinstance(raw, dict) else None
        if isinstance(evaluation, dict) and "strength" not in evaluation:
            evaluation["strength"] = "fast"
        return cls.from_dict(raw)


#: Every field a config may derive: (section, field, how, the options it is computed from).
DERIVED: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("data", "n_features", "d (2d if overcomplete)", ("d", "dictionary")),
    ("data", "p_small", "k/D", ("k", "d", "n_features")),
    ("data", "p_one", "min(2/D, max(1/D, 1 - p_small))", ("p_small", "extra_levels", "d", "n_features")),
    ("data", "spike_level", "1/k^0.501", ("k",)),
    ("data", "spike_prob", "min(1, sigma_x²/(D spike_level²))", ("sigma_x", "spike_level", "d", "n_features")),
    ("net", "width", "2d", ("d",)),
    ("net", "sigma0", "1/d", ("d",)),
    ("net", "sigma_rho_ratio", "0.05 (norm) or 1/sqrt(log d) (paper)", ("bias_schedule", "d")),
    ("net", "lam", "0 (norm) or logloglog(d)/d (paper)", ("bias_schedule", "d")),
    ("train", "clean_steps", "4d", ("d",)),
    ("train", "adv_steps", "clean_steps × the preset's fraction (1/5 boundary, 1/2 purification)", ("clean_steps", "d", "preset")),
    ("train", "adv_bias", "the preset's (radius boundary, norm purification)", ("preset",)),
    ("train", "lr", "1", ()),
    ("train", "adv_lr", "lr/2", ("lr",)),
    ("train", "adv_tau", "the evaluation radius of adv_norm", ("adv_norm", "tau", "tau_linf", "k", "d")),
    ("eval", "tau", "1/sqrt(k) (boundary) or 0.5/sqrt(k) (purification)", ("k", "preset")),
    ("eval", "tau_linf", "tau/sqrt(d)", ("tau", "d")),
    ("eval", "pgd_rel_step", "2.5/pgd_steps", ("pgd_steps",)),
)


def find_option(config: RunConfig, name: str) -> Any:
    """The value of option `name` in whichever section of `config` holds it."""
    for part in (config.data, config.net, config.train, config.eval):
        if hasattr(part, name):
            return getattr(part, name)
    return getattr(config, name, None) if name in ("preset", "seed", "device") else None


#: Limits of a config or sweep file: a config is four levels deep at most (table, section,
#: list, pair) and a few kilobytes; these leave room and stop hostile files early.
MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 16


def read_table_file(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file (or JSON by its ``.json`` suffix) holding a table of options.

    The file must be a regular file of at most `MAX_FILE_BYTES`, UTF-8, nested at most
    `MAX_DEPTH` levels and hold only strings, numbers, booleans, lists and tables (no TOML
    dates).  `what` names the file in messages (``"--config"``, ``"sweep file"``).

    Raises
    ------
    ConfigError
        One line naming the file and what is wrong with it.
    """
    try:
        # A FIFO or a device (/dev/zero) would block or never end: regular files only.
        regular, exists = path.is_file(), path.exists()
        data = b""
        if regular:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or type(e).__name__}") from None
    except ValueError as e:  # e.g. a NUL byte in the path
        raise ConfigError(f"cannot read {what} {str(path)!r}: {e}") from None
    if not regular:
        raise ConfigError(f"cannot read {what} {path}: {'not a regular file' if exists else 'no such file'}")
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"cannot use {what} {path}: larger than {MAX_FILE_BYTES:,} bytes; "
                          "a config is a few lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot parse {what} {path}: not a UTF-8 text file") from None
    depth = _bracket_depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(f"cannot use {what} {path}: nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except RecursionError:  # a nesting the bracket count missed (e.g. dotted TOML keys)
        raise ConfigError(f"cannot use {what} {path}: nested too deeply") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot parse {what} {path}: {' '.join(str(e).split())[:300]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"cannot use {what} {path}: it must hold a table of options, "
                          f"not a {type(raw).__name__}")
    bad = _first_foreign_value(raw, "", MAX_DEPTH)
    if bad is not None:
        raise ConfigError(f"cannot use {what} {path}: {bad}")
    return raw


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in `text`: at least the parsed depth of bracketed values,
    counted before a recursive parser sees them (brackets inside strings count too; no real
    config holds a string of 16 brackets)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _first_foreign_value(value: Any, where: str, depth: int) -> str | None:
    """Describe the first value that is not a string, number, boolean, list or table."""
    if depth < 0:
        return f"nested more than {MAX_DEPTH} levels deep (at {where or 'the top'})"
    if isinstance(value, dict):
        for key, v in value.items():
            found = _first_foreign_value(v, f"{where}.{key}" if where else str(key), depth - 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _first_foreign_value(v, f"{where}[{i}]", depth - 1)
            if found is not None:
                return found
        return None
    if isinstance(value, (str, int, float, bool)):
        return None
    return f"{where} holds a {type(value).__name__}; allowed: strings, numbers, booleans, lists and tables"


def _tuplify(value: Any) -> Any:
    """JSON turns tuples into lists; the frozen configs hold tuples."""
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value

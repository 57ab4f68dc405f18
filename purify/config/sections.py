"""The four sections of a run configuration: data, network, training and evaluation.

Each is a frozen dataclass validated in ``__post_init__``; ``resolve`` fills the fields left
``None`` from ``d`` and ``k`` (and the preset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from purify.attacks import NORMS
from purify.config.checks import (
    FLOAT32_MAX,
    LARGEST_COUNT,
    LARGEST_REAL,
    check,
    count,
    finite,
    is_int,
    nonnegative,
    positive,
    prob,
)
from purify.config.presets import Preset
from purify.data import DICTIONARIES
from purify.registry import ATTACKERS

BIAS_SCHEDULES = ("norm", "paper")
ACTIVATIONS = ("smooth", "noisy")
ADV_INITS = ("clean", "random")
ADV_BIASES = ("radius", "clean", "norm")
EVAL_STRENGTHS = ("fast", "standard", "strong")


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
        count("d", self.d, 2)
        check(
            is_int(self.k) and 1 <= self.k <= self.d, "k", self.k,
            f"must be an integer in [1, d={self.d}]",
        )
        check(self.dictionary in DICTIONARIES, "dictionary", self.dictionary,
              f"allowed: {', '.join(DICTIONARIES)}")
        if self.n_features is not None:
            if self.dictionary == "overcomplete":
                check(is_int(self.n_features) and self.d < self.n_features <= LARGEST_COUNT,
                      "n_features", self.n_features,
                      f"an over-complete dictionary needs d={self.d} < D <= 2^53")
            else:
                check(is_int(self.n_features) and self.n_features == self.d, "n_features", self.n_features,
                      f"must equal d={self.d} for a {self.dictionary} dictionary")
        prob("p_one", self.p_one)
        prob("p_small", self.p_small)
        check(isinstance(self.extra_levels, (tuple, list)), "extra_levels", self.extra_levels,
              "must be a list of (magnitude, probability) pairs")
        for i, level in enumerate(self.extra_levels):
            check(isinstance(level, (tuple, list)) and len(level) == 2 and finite(level[0]) and 0 < level[0] <= 1,
                  f"extra_levels[{i}]", level, "must be (magnitude in (0, 1], probability)")
            prob(f"extra_levels[{i}] probability", level[1])
        total = sum(p for p in (self.p_one, self.p_small) if p is not None)
        total += sum(p for _, p in self.extra_levels)
        check(total <= 1, "level probabilities", total, "must sum to at most 1")
        nonnegative("sigma_x", self.sigma_x)
        nonnegative("spike_level", self.spike_level)
        prob("spike_prob", self.spike_prob)
        if self.n_train is not None:
            check(is_int(self.n_train) and 2 <= self.n_train <= LARGEST_COUNT, "n_train",
                  self.n_train, "must be an integer in [2, 2^53] (or omitted for online sampling)")
        count("n_test", self.n_test, 10)

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
            count("m", self.width, 1)
        positive("sigma0", self.sigma0)
        check(self.activation in ACTIVATIONS, "activation", self.activation,
              f"allowed: {', '.join(ACTIVATIONS)}")
        check(self.bias_schedule in BIAS_SCHEDULES, "bias_schedule", self.bias_schedule,
              f"allowed: {', '.join(BIAS_SCHEDULES)}")
        positive("r_start", self.r_start)
        positive("r_end", self.r_end)
        check(finite(self.r_decay_fraction) and 0 < self.r_decay_fraction <= 1,
              "r_decay_fraction", self.r_decay_fraction, "must be in (0, 1]")
        positive("c_b", self.c_b)
        nonnegative("sigma_rho_ratio", self.sigma_rho_ratio)
        nonnegative("lam", self.lam)

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
                count(name, v, 0)
        positive("lr", self.lr, FLOAT32_MAX)
        positive("adv_lr", self.adv_lr, FLOAT32_MAX)
        count("batch_size", self.batch_size, 1)
        trains = ATTACKERS.where(trains=True)
        check(self.adv_attack in trains, "adv_attack", self.adv_attack, f"allowed: {', '.join(trains)}")
        check(self.adv_norm in NORMS, "adv_norm", self.adv_norm, f"allowed: {', '.join(NORMS)}")
        positive("adv_tau", self.adv_tau)
        count("adv_pgd_steps", self.adv_pgd_steps, 1)
        check(self.adv_init in ADV_INITS, "adv_init", self.adv_init,
              f"allowed: {', '.join(ADV_INITS)}")
        if self.adv_bias is not None:
            check(self.adv_bias in ADV_BIASES, "adv_bias", self.adv_bias,
                  f"allowed: {', '.join(ADV_BIASES)}")
        for name in ("clean_snapshots", "adv_snapshots", "log_points"):
            v = getattr(self, name)
            check(is_int(v) and 1 <= v <= 10_000, name, v,
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

    tau: float | None = None  # ℓ₂ radius; None → the preset's multiple of 1/√k (0.5 purification, 1 boundary)
    tau_linf: float | None = None  # ℓ∞ radius; None → τ/√d (the ℓ∞ ball inside the ℓ₂ one)
    radii: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)  # grid, as multiples of the radius
    norms: tuple[str, ...] = ("l2", "linf")
    attacks: tuple[str, ...] = tuple(ATTACKERS.where(tier="cheap"))  # every cheap attacker
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_rel_step: float | None = None  # PGD step / τ; None → 2.5 / steps
    n_eval: int = 500  # held-out examples used for the (costly) robust evaluation
    # end-of-phase evaluation: fast = the attacks above only; standard/strong add converged
    # attacks on the examples they leave unbroken (README "How robust accuracy is measured")
    strength: str = "standard"

    def __post_init__(self) -> None:
        positive("tau", self.tau)
        check(self.strength in EVAL_STRENGTHS, "eval-attack", self.strength,
              f"allowed: {', '.join(EVAL_STRENGTHS)}")
        positive("tau_linf", self.tau_linf)
        check(isinstance(self.radii, (tuple, list)) and len(self.radii) >= 1 and all(finite(r) and 0 < r <= LARGEST_REAL for r in self.radii), "radii",
              self.radii, "must be one or more multiples > 0")
        check(isinstance(self.norms, (tuple, list)) and len(self.norms) >= 1 and all(n in NORMS for n in self.norms), "norms", self.norms,
              f"allowed: {', '.join(NORMS)}")
        cheap = ATTACKERS.where(tier="cheap")
        check(isinstance(self.attacks, (tuple, list)) and len(self.attacks) >= 1 and all(a in cheap for a in self.attacks),
              "attacks", self.attacks, f"allowed: {', '.join(cheap)}")
        check(len(set(self.attacks)) == len(self.attacks), "attacks", self.attacks,
              "must not repeat")
        check(len(set(self.norms)) == len(self.norms), "norms", self.norms, "must not repeat")
        check(len(set(self.radii)) == len(self.radii), "radii", self.radii, "must not repeat")
        count("pgd_steps", self.pgd_steps, 1)
        count("pgd_restarts", self.pgd_restarts, 1)
        positive("pgd_rel_step", self.pgd_rel_step)
        count("n_eval", self.n_eval, 10)

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


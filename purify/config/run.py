"""The whole run configuration :class:`RunConfig`, what it derives (:data:`DERIVED`), and how
a derived value out of range is reported."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from purify.config.checks import LARGEST_REAL, ConfigError, check, is_int
from purify.config.files import config_from_table
from purify.config.presets import PRESETS
from purify.config.sections import DataConfig, EvalConfig, NetConfig, TrainConfig

#: The sections of a :class:`RunConfig`, by field name.
SECTIONS = {"data": DataConfig, "net": NetConfig, "train": TrainConfig, "eval": EvalConfig}


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
        check(self.preset in PRESETS, "preset", self.preset, f"allowed: {', '.join(PRESETS)}")
        if self.problem_seed is not None:
            check(is_int(self.problem_seed) and 0 <= self.problem_seed < 2**63, "problem_seed",
                   self.problem_seed, "must be an integer in [0, 2^63)")
        if self.seed is not None:
            check(is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed,
                   "must be an integer in [0, 2^63)")
        check(isinstance(self.device, str)
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
            raise derived_error(self, e) from None
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
        return config_from_table(cls, raw, SECTIONS)

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


def derived_error(config: RunConfig, error: ConfigError) -> ConfigError:
    """`error`, raised while deriving a field of `config` (unresolved), reworded to name the
    given options the derived value comes from."""
    name = {"m": "width", "level probabilities": "p_one"}.get(error.name or "", error.name)
    entry = next(((sec, n, f, s) for sec, n, f, s in DERIVED
                  if n == name and getattr(getattr(config, sec), n) is None), None)
    if entry is None:
        return error
    _, name, formula, sources = entry
    shown = [f"{n}={find_option(config, n)!r}" for n in sources if find_option(config, n) not in (None, ())]
    change = f" or change {', '.join(sources)}" if sources else ""
    return ConfigError(
        f"invalid {' '.join(shown) or 'defaults'}: the derived {error.name} = {formula} "
        f"= {error.value!r} {error.allowed or error}; set {name} explicitly{change}",
        name, error.value, error.allowed)

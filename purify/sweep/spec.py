"""What a sweep is: a base config, axes over any config field, and what to collect.

A sweep file (TOML, or JSON with the same shape)::

    [base]                     # a ``purify simulate --config`` file, one level down
    data = {k = 3}
    train = {clean_steps = 200}

    [axes]                     # one dimension of the result per axis, in this order
    "data.d" = [16, 24]        # section.field, or a field name alone when it is unique
    sigma_x = {linspace = [0.0, 0.2, 3]}
    seed = {range = [0, 5]}    # 0, 1, 2, 3, 4

    [collect]
    analyses = ["lottery", "mixture"]   # run per cell (default none)
    summaries = ["robust_accuracy_after", "relative_weight_change"]  # default: all

Every cell (one point of the axes' product) is a full :class:`~purify.config.RunConfig`,
built and resolved — so validated, derived defaults included — before anything runs.  The
seed is always an axis: without one in the file, the base's seed (or 0) is a one-value axis,
so every cell's run is reproducible from the sweep alone.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from purify import schema as V
from purify.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    NetConfig,
    RunConfig,
    TrainConfig,
    read_table_file,
)
from purify.registry import ANALYSES

SECTIONS = {"data": DataConfig, "net": NetConfig, "train": TrainConfig, "eval": EvalConfig}
TOP_LEVEL = ("seed", "problem_seed", "device", "preset")

#: Scalar summaries of a run (read from its ``summary_json``), as ``name: (path, long name)``.
#: "before" is the network at the end of clean training, "after" at the end of adversarial
#: training; robust accuracies are per-example worst attacker at the l2 radius tau (radius 1).
def _model_summaries(when: str, model: str, phase: str, claim: str, dense: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """The clean, l2, linf and dense-direction accuracies of one end-of-phase model."""
    return {
        f"clean_accuracy_{when}": ((model, V.CLEAN_ACCURACY), f"held-out clean accuracy after {phase}"),
        f"robust_accuracy_{when}": ((model, V.ROBUST_ACCURACY),
                                    f"strongest-attack l2 accuracy at tau after {phase} ({claim})"),
        f"robust_accuracy_linf_{when}": ((model, V.ROBUST_ACCURACY_LINF), f"strongest-attack linf accuracy after {phase}"),
        f"dense_accuracy_{when}": ((model, V.ROBUST_ACCURACY_BY_ATTACK, "dense"),
                                   f"accuracy under the dense direction {dense}after {phase}"),
    }


SUMMARIES: dict[str, tuple[tuple[str, ...], str]] = {
    **_model_summaries("before", V.CLEAN_MODEL, "clean training", "Thm 5.1c", "-tau y Mw*/|Mw*| "),
    **_model_summaries("after", V.ROBUST_MODEL, "adversarial training", "Thm 5.3", ""),
    "robust_accuracy_bias_only": ((V.BIAS_ONLY_MODEL, V.ROBUST_ACCURACY),
                                  "strongest-attack l2 accuracy at tau of the clean weights under the "
                                  "adversarial-training biases (NaN with adv_bias = clean)"),
    "ideal_clean_accuracy": ((V.IDEAL_MODEL, V.CLEAN_ACCURACY), "clean accuracy of the ideal model (Allen-Zhu & Li §3)"),
    "ideal_robust_accuracy": ((V.IDEAL_MODEL, V.ROBUST_ACCURACY),
                              "strongest-attack l2 accuracy at tau of the ideal model"),
    "relative_weight_change": ((V.RELATIVE_WEIGHT_CHANGE,),
                               "sum ||w_i - w'_i||^2 / sum ||w_i||^2 over adversarial training (Thm 5.3c)"),
    "median_theta_clean_robust": ((V.MEDIAN_THETA,),
                                  "median |cos(w_i, w'_i)| between clean and robust neurons (Thm 5.3c)"),
    "tau": ((V.TAU,), "l2 evaluation radius tau"),
    "threshold_clean_accuracy": ((V.THRESHOLD_MODEL, V.CLEAN_ACCURACY),
                                 "clean accuracy of the threshold baseline (clean weights, b_i = r|w_i|_q/sqrt(k))"),
    "threshold_robust_accuracy": ((V.THRESHOLD_MODEL, V.ROBUST_ACCURACY),
                                  "strongest-attack l2 accuracy at tau of the threshold baseline"),
    "threshold_r": ((V.THRESHOLD_MODEL, "r"), "the threshold baseline's r"),
    "robust_minus_threshold": ((V.PAIRED, "robust_minus_threshold", "value"),
                               "paired robust accuracy, robust model minus threshold baseline"),
    "robust_minus_threshold_se": ((V.PAIRED, "robust_minus_threshold", "se"), "its standard error"),
    "robust_minus_clean": ((V.PAIRED, "robust_minus_clean", "value"),
                           "paired robust accuracy, robust model minus clean model"),
    "robust_minus_clean_se": ((V.PAIRED, "robust_minus_clean", "se"), "its standard error"),
    "dense_alignment_clean": ((V.PURIFICATION, "dense_alignment_clean"),
                              "median dense alignment of the clean neurons (Thm 5.2)"),
    "dense_alignment_robust": ((V.PURIFICATION, "dense_alignment_robust"),
                               "median dense alignment after adversarial training (Thm 5.3)"),
    "effective_r_clean": ((V.PURIFICATION, "effective_r_clean"), "median b_i sqrt(k)/|w_i|_q, clean"),
    "effective_r_robust": ((V.PURIFICATION, "effective_r_robust"), "median b_i sqrt(k)/|w_i|_q, robust"),
    "norm_share_of_change": ((V.PURIFICATION, "norm_share_of_change"),
                             "share of sum |w - w'|^2 that is change of norm"),
}

#: Most cells a sweep may have (each is a run folder and a task): a typo such as
#: ``range = [0, 10**9]`` is refused before anything is built.
MAX_CELLS = 100_000

#: Analyses a sweep may run per cell (their scalar results are collected): the entries of
#: :data:`purify.registry.ANALYSES` marked ``sweep``.
SWEEP_ANALYSES = ANALYSES.where(sweep=True)


@dataclass(frozen=True)
class Axis:
    """One sweep dimension: a config field and the values it takes.

    ``path`` is ``("data", "d")`` for a field of a section, ``("seed",)`` for a top-level one;
    the dimension is named by the field (``d``, ``width``, ``seed``).
    """

    path: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def key(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: its index along every axis, its values and its resolved config."""

    index: tuple[int, ...]
    values: tuple[tuple[str, Any], ...]  # (axis name, value) in axis order
    name: str  # folder name under SWEEP/cells/
    config: RunConfig


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: ``base`` (a raw config table), ``axes``, analyses and summaries."""

    base: Mapping[str, Any] = field(default_factory=dict, hash=False)
    axes: tuple[Axis, ...] = ()
    analyses: tuple[str, ...] = ()
    summaries: tuple[str, ...] = tuple(SUMMARIES)

    def __post_init__(self) -> None:
        names = [a.name for a in self.axes]
        for a in self.axes:
            if names.count(a.name) > 1:
                raise ConfigError(f"invalid axes: {a.name!r} appears twice")
        if "seed" not in names:
            seed = self.base.get("seed", 0)
            base = {k: v for k, v in self.base.items() if k != "seed"}
            object.__setattr__(self, "base", base)
            object.__setattr__(self, "axes", (*self.axes, Axis(("seed",), (seed,))))
        cells = math.prod(len(a.values) for a in self.axes)
        if cells > MAX_CELLS:
            raise ConfigError(f"invalid axes: {' x '.join(str(len(a.values)) for a in self.axes)} = "
                              f"{cells} cells; a sweep has at most {MAX_CELLS}")
        for a in self.axes:
            if self._base_value(a.path) is not None:
                raise ConfigError(f"invalid spec: {a.key} is both in [base] and an axis")
        for name in self.analyses:
            if name not in SWEEP_ANALYSES:
                raise ConfigError(f"invalid analyses={name!r}: allowed: {', '.join(SWEEP_ANALYSES)}")
        for name in self.summaries:
            if name not in SUMMARIES:
                raise ConfigError(f"invalid summaries={name!r}: allowed: {', '.join(SUMMARIES)}")

    def _base_value(self, path: tuple[str, ...]) -> Any:
        node: Any = self.base
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    def cells(self) -> list[Cell]:
        """Every cell, in C order of the axes, with its config built and resolved.

        Raises
        ------
        ConfigError
            A cell's config is invalid; the message names the cell's axis values.
        """
        out, seen = [], {}
        for index in itertools.product(*(range(len(a.values)) for a in self.axes)):
            values = tuple((a.name, a.values[i]) for a, i in zip(self.axes, index, strict=True))
            raw = copy.deepcopy(dict(self.base))
            for a, i in zip(self.axes, index, strict=True):
                _set(raw, a.path, a.values[i])
            where = " ".join(f"{n}={_show(v)}" for n, v in values)
            try:
                config = RunConfig.from_dict(raw).resolve()
            except ConfigError as e:
                raise ConfigError(f"cell {where}: {e}") from None
            name = cell_name(values)
            if name in seen:
                raise ConfigError(f"cells {seen[name]} and {where} get the same folder name {name!r}; "
                                  "make the axis values distinct")
            seen[name] = where
            out.append(Cell(index, values, name, config))
        return out

    def to_json(self) -> str:
        return json.dumps({
            "base": self.base,
            "axes": [{"path": list(a.path), "values": list(a.values)} for a in self.axes],
            "analyses": list(self.analyses),
            "summaries": list(self.summaries),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SweepSpec:
        raw = json.loads(text)
        axes = tuple(Axis(tuple(a["path"]), tuple(_tuplify(v) for v in a["values"])) for a in raw["axes"])
        return cls(base=raw["base"], axes=axes, analyses=tuple(raw["analyses"]),
                   summaries=tuple(raw["summaries"]))


# --------------------------------------------------------------------------------------
# Parsing a sweep file
# --------------------------------------------------------------------------------------


def axis_path(key: str, aliases: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The config path an axis key names.

    ``key`` is ``section.field`` (the config-file spelling), a field name alone when only one
    section has it, ``seed`` / ``problem_seed`` / ``device``, or an entry of ``aliases`` (the
    CLI passes its flag names, e.g. ``m`` → ``net.width``); ``-`` and ``_`` are the same.
    """
    norm = key.strip().lstrip("-").replace("-", "_")
    if aliases:
        table = {k.lstrip("-").replace("-", "_"): v for k, v in aliases.items()}
        norm = table.get(norm, norm)
    if norm in TOP_LEVEL:
        return (norm,)
    if "." in norm:
        section, _, name = norm.partition(".")
        klass = SECTIONS.get(section)
        if klass is None:
            raise ConfigError(f"invalid axis {key!r}: unknown section {section!r}; allowed: "
                              f"{', '.join(SECTIONS)}")
        if name not in {f.name for f in fields(klass)}:
            raise ConfigError(f"invalid axis {key!r}: {section} has no option {name!r}; allowed: "
                              f"{', '.join(f.name for f in fields(klass))}")
        return (section, name)
    owners = [s for s, klass in SECTIONS.items() if norm in {f.name for f in fields(klass)}]
    if len(owners) == 1:
        return (owners[0], norm)
    if owners:
        raise ConfigError(f"invalid axis {key!r}: ambiguous, write one of "
                          f"{', '.join(f'{s}.{norm}' for s in owners)}")
    raise ConfigError(f"invalid axis {key!r}: not a config option (write section.field, e.g. data.d)")


def axis_values(key: str, spec: Any) -> tuple[Any, ...]:
    """The values of one axis from its file entry: a list, or a table with one of
    ``range = [start, stop(, step)]`` (integers, stop excluded), ``linspace = [a, b, n]`` or
    ``geomspace = [a, b, n]`` (floats, both ends included)."""
    form = "a list of values or a table {range = [start, stop, step]}, {linspace = [a, b, n]} " \
           "or {geomspace = [a, b, n]}"
    if isinstance(spec, (list, tuple)):
        values = tuple(_tuplify(v) for v in spec)
    elif isinstance(spec, Mapping) and len(spec) == 1:
        (kind, args), = spec.items()
        values = _generated(key, kind, args, form)
    else:
        raise ConfigError(f"invalid axis {key}={spec!r}: must be {form}")
    if not values:
        raise ConfigError(f"invalid axis {key}: it has no values")
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(f"invalid axis {key}: value {v!r} appears twice")
    return values


def _generated(key: str, kind: str, args: Any, form: str) -> tuple[Any, ...]:
    if not isinstance(args, (list, tuple)) or not all(_is_number(a) for a in args):
        raise ConfigError(f"invalid axis {key}: {kind} needs a list of numbers")
    if kind == "range":
        if not 2 <= len(args) <= 3 or not all(isinstance(a, int) for a in args) or (len(args) == 3 and args[2] == 0):
            raise ConfigError(f"invalid axis {key}: range = [start, stop] or [start, stop, step] "
                              "with integers, step != 0")
        values = range(*args)
        try:
            count = len(values)
        except OverflowError:  # more values than a C ssize_t holds
            count = MAX_CELLS + 1
        if count > MAX_CELLS:
            raise ConfigError(f"invalid axis {key}: range = {list(args)} has more than {MAX_CELLS} values")
        return tuple(values)
    if kind in ("linspace", "geomspace"):
        if len(args) != 3 or not isinstance(args[2], int) or not 1 <= args[2] <= MAX_CELLS:
            raise ConfigError(f"invalid axis {key}: {kind} = [start, stop, n] with an integer n in "
                              f"[1, {MAX_CELLS}]")
        try:
            a, b, n = float(args[0]), float(args[1]), args[2]
            if not (math.isfinite(a) and math.isfinite(b)):
                raise ConfigError(f"invalid axis {key}: {kind} needs finite numbers")
            if kind == "geomspace":
                if a <= 0 or b <= 0:
                    raise ConfigError(f"invalid axis {key}: geomspace needs start and stop > 0")
                points = [math.exp(math.log(a) + (math.log(b) - math.log(a)) * i / max(n - 1, 1))
                          for i in range(n)]
            else:
                points = [a + (b - a) * i / max(n - 1, 1) for i in range(n)]
        except OverflowError:
            raise ConfigError(f"invalid axis {key}: {kind} = {list(args)} overflows a float") from None
        # 12 significant digits: 0.1 + 0.1 + 0.1 is a value a user would write as 0.3.
        return tuple(float(f"{p:.12g}") for p in points)
    raise ConfigError(f"invalid axis {key}: unknown generator {kind!r}; must be {form}")


def spec_from_dict(raw: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from a parsed sweep file (see the module docstring)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("invalid sweep file: it must hold tables [base], [axes], [collect]")
    unknown = set(raw) - {"base", "axes", "collect"}
    if unknown:
        raise ConfigError(f"invalid sweep file: unknown table {sorted(unknown)[0]!r}; allowed: base, axes, collect")
    base = raw.get("base", {})
    axes_raw = raw.get("axes", {})
    collect = raw.get("collect", {})
    for name, table in (("base", base), ("axes", axes_raw), ("collect", collect)):
        if not isinstance(table, Mapping):
            raise ConfigError(f"invalid [{name}]: must be a table")
    axes = tuple(Axis(axis_path(k, aliases), axis_values(k, v)) for k, v in axes_raw.items())
    unknown = set(collect) - {"analyses", "summaries"}
    if unknown:
        raise ConfigError(f"invalid [collect]: unknown key {sorted(unknown)[0]!r}; allowed: analyses, summaries")
    analyses = _names(collect.get("analyses", []), "analyses")
    summaries = _names(collect.get("summaries", list(SUMMARIES)), "summaries")
    return SweepSpec(base=dict(base), axes=axes, analyses=analyses, summaries=summaries)


def with_overrides(spec: SweepSpec, overrides: Iterable[tuple[tuple[str, ...], tuple[Any, ...]]],
                   analyses: tuple[str, ...] | None = None) -> SweepSpec:
    """``spec`` with some fields replaced: one value fixes the field in the base (dropping its
    axis), several make it an axis (replacing the file's axis of that field, if any)."""
    base = copy.deepcopy(dict(spec.base))
    axes = list(spec.axes)
    for path, values in overrides:
        axes = [a for a in axes if a.path != path]
        _unset(base, path)
        if len(values) == 1:
            _set(base, path, values[0])
        else:
            axes.append(Axis(path, values))
    # The seed stays the last dimension when the command line adds axes to a file's.
    axes = [a for a in axes if a.path != ("seed",)] + [a for a in axes if a.path == ("seed",)]
    return SweepSpec(base=base, axes=tuple(axes), summaries=spec.summaries,
                     analyses=spec.analyses if analyses is None else analyses)


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"invalid {what}={value!r}: must be a list of names")
    return tuple(value)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _set(raw: dict, path: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid {part} in [base]: must be a table")
    node[path[-1]] = value


def _unset(raw: dict, path: tuple[str, ...]) -> None:
    node = raw
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A value as it appears in cell names: repr for floats keeps distinct values distinct."""
    if isinstance(value, tuple):
        return "_".join(_show(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def cell_name(values: Iterable[tuple[str, Any]]) -> str:
    """Folder name of a cell, in the style of ``purify simulate``'s ``d1000-k60-seed0``."""
    return "-".join(f"{name}{re.sub(r'[^A-Za-z0-9._+]', '_', _show(v))}" for name, v in values)


# --------------------------------------------------------------------------------------
# From the command line
# --------------------------------------------------------------------------------------


def load_sweep_file(path: Path) -> dict[str, Any]:
    """Parse a sweep file (TOML, or JSON by its ``.json`` suffix); errors are one line
    (size, nesting depth and value types are checked: `purify.config.read_table_file`)."""
    return read_table_file(path, "sweep file")


def build_spec(
    file: Path | None,
    overrides: Iterable[tuple[str, tuple[Any, ...]]] = (),
    *,
    analyses: tuple[str, ...] | None = None,
    aliases: Mapping[str, str] | None = None,
    stored: SweepSpec | None = None,
) -> SweepSpec:
    """The sweep the command line describes: a sweep file (or, without one, the spec stored
    in the sweep folder, or an empty one) with ``overrides`` — ``(key, values)`` pairs where
    one value fixes a field and several make it an axis — and ``analyses`` replacing its own."""
    overrides = [(axis_path(key, aliases), values) for key, values in overrides]
    if file is not None:
        spec = spec_from_dict(load_sweep_file(file), aliases)
    elif stored is not None:
        spec = stored
    else:
        spec = SweepSpec()
    for path, values in overrides:
        axis_values(".".join(path), list(values))  # duplicates and empty lists, named
    return with_overrides(spec, overrides, analyses)


def default_out(file: Path | None, spec: SweepSpec) -> Path:
    """``sweeps/<file stem>``, or ``sweeps/<axis names>`` for a sweep given by options."""
    if file is not None:
        return Path("sweeps") / file.stem
    return Path("sweeps") / "-".join(a.name for a in spec.axes)

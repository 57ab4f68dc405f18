"""Typed run configuration: one frozen dataclass per stage, composed into :class:`RunConfig`.

Every field that may be left ``None`` is *derived* from ``d`` and ``k`` by
:meth:`RunConfig.resolve`; the resolved config (no ``None`` left) is what a run uses and what
its store records, so a run can be repeated from its store alone.  Validation happens in
``__post_init__`` and raises :class:`ConfigError` with a one-line message naming the field,
the value and what is allowed.

* :mod:`purify.config.checks` — :class:`ConfigError` and the range checks;
* :mod:`purify.config.presets` — :data:`PRESETS`, the defaults a preset gives unset fields;
* :mod:`purify.config.sections` — :class:`DataConfig`, :class:`NetConfig`,
  :class:`TrainConfig`, :class:`EvalConfig`;
* :mod:`purify.config.run` — :class:`RunConfig` and what it derives (:data:`DERIVED`);
* :mod:`purify.config.files` — :func:`read_table_file`, the guarded TOML/JSON reader.
"""

from purify.config.checks import FLOAT32_MAX, LARGEST_COUNT, LARGEST_REAL, ConfigError
from purify.config.files import MAX_DEPTH, MAX_FILE_BYTES, read_table_file
from purify.config.presets import PRESETS, Preset
from purify.config.run import DERIVED, SECTIONS, RunConfig, find_option
from purify.config.sections import (
    ACTIVATIONS,
    ADV_BIASES,
    ADV_INITS,
    BIAS_SCHEDULES,
    EVAL_STRENGTHS,
    DataConfig,
    EvalConfig,
    NetConfig,
    TrainConfig,
)

__all__ = [
    "ACTIVATIONS", "ADV_BIASES", "ADV_INITS", "BIAS_SCHEDULES", "DERIVED", "EVAL_STRENGTHS", "FLOAT32_MAX",
    "LARGEST_COUNT", "LARGEST_REAL", "MAX_DEPTH", "MAX_FILE_BYTES", "PRESETS", "SECTIONS", "ConfigError",
    "DataConfig", "EvalConfig", "NetConfig", "Preset", "RunConfig", "TrainConfig",
    "find_option", "read_table_file",
]

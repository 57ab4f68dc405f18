"""Reading a config or sweep file (TOML or JSON) and turning a table of options into a config."""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from purify.config.checks import ConfigError

T = TypeVar("T")


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


def config_from_table(cls: type[T], raw: Any, sections: dict[str, type]) -> T:
    """``cls(**raw)``, the tables named in `sections` built as those section classes (lists as
    tuples); anything not a table of known options raises :class:`ConfigError` naming it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {raw!r}: must be a table of options")
    parts = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name in sections:
            klass = sections[f.name]
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

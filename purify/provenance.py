"""One provenance record for every store purify writes: runs, experiments and sweeps.

In the manner of msprime's provenance table, each command that writes a store appends one
record — the package versions, the config, the seed, the command line, the host, the device,
the threads and the time — to the store's ``provenance_json`` attribute (a JSON list, oldest
first: a resumed run has one record per session).  :func:`read` gives the records of any
store, including those written before this attribute existed, rebuilt from the older
per-kind attributes (a run's ``*_version``/``seed``/``device``/``torch_threads``, an
experiment's ``versions_json``, a sweep's ``purify_version``/``spec_json``), with the
command line unknown.
"""

from __future__ import annotations

import datetime
import json
import platform
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The root attribute holding the records, a JSON list of :class:`Provenance` dicts.
ATTR = "provenance_json"

#: ``versions()`` key of each package whose version a store records, and its distribution.
_PACKAGES = {"torch": "torch", "numpy": "numpy", "xarray": "xarray", "zarr": "zarr", "sklearn": "scikit-learn"}


def versions() -> dict[str, str]:
    """``{"purify_version": ..., "python_version": ..., "torch_version": ..., ...}``: the
    versions of purify, Python and the packages whose numbers a run depends on."""
    import importlib
    import importlib.metadata

    from purify import __version__

    out = {"purify_version": __version__, "python_version": platform.python_version()}
    for name, dist in _PACKAGES.items():
        # Read from the installed metadata, not by importing: a store is created under its lock,
        # and an import there (scikit-learn pulls in SciPy's compiled modules) is where a SIGTERM
        # turns into "ImportError: initialization failed" or a SIGINT exit status.
        try:
            out[f"{name}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # on sys.path without being installed
            out[f"{name}_version"] = importlib.import_module(name).__version__
    return out


@dataclass(frozen=True)
class Provenance:
    """What wrote a store, one record per command.

    ``command`` is the command line as a list (``None``: not recorded, a store written before
    purify recorded it); ``config`` the resolved config, experiment parameters or sweep spec
    as JSON (``""`` if none); ``time`` the UTC start of the command in ISO 8601.
    """

    versions: dict[str, str]
    command: list[str] | None
    config: str = ""
    seed: int | None = None
    device: str = ""
    threads: int | None = None
    host: str = ""
    time: str = ""
    kind: str = ""  # "run", "experiment", "sweep"
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the command, where and when (for ``purify info``)."""
        command = " ".join(self.command) if self.command is not None else "(not recorded)"
        where = ", ".join(p for p in (f"host {self.host}" if self.host else "",
                                      f"device {self.device}" if self.device else "",
                                      f"{self.threads} thread{'s' * (self.threads != 1)}" if self.threads else "",
                                      self.time) if p)
        return f"{command}" + (f"  [{where}]" if where else "")


def current(
    *,
    kind: str,
    config: str = "",
    seed: int | None = None,
    device: str = "",
    threads: int | None = None,
    command: Sequence[str] | None = None,
    **extra: Any,
) -> Provenance:
    """The record of the running command (``command`` defaults to ``sys.argv``, with the
    console script's path shortened to its name)."""
    import torch

    argv = list(command) if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return Provenance(
        versions=versions(), command=argv, config=config, seed=seed, device=device,
        threads=threads if threads is not None else torch.get_num_threads(), host=socket.gethostname(),
        time=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), kind=kind,
        extra=dict(extra))


def attrs(records: Sequence[Provenance]) -> dict[str, str]:
    """The root attribute that stores ``records``."""
    return {ATTR: json.dumps([asdict(r) for r in records])}


def read(attrs: Mapping[str, Any]) -> list[Provenance]:
    """The records of a store from its root attributes (oldest first; [] if none can be told).

    A damaged ``provenance_json`` is read as no records: provenance is for people, and a
    store's numbers stay usable without it.
    """
    text = attrs.get(ATTR)
    if isinstance(text, str):
        try:
            return [Provenance(**r) for r in json.loads(text)]
        except (TypeError, ValueError, RecursionError):
            return []
    return _legacy(attrs)


def _legacy(a: Mapping[str, Any]) -> list[Provenance]:
    """The one record a store written before ``provenance_json`` implies."""
    if a.get("kind") == "experiment":
        try:
            found = json.loads(a.get("versions_json", "{}"))
        except (TypeError, ValueError):
            found = {}
        vers = {f"{k}_version": str(v) for k, v in found.items()} if isinstance(found, dict) else {}
        return [Provenance(vers, None, config=str(a.get("params_json", "")), seed=a.get("seed"),
                           device=str(a.get("device", "")), kind="experiment")]
    vers = {k: str(v) for k, v in a.items() if k.endswith("_version") and k != "format_version"}
    if "spec_json" in a:
        return [Provenance(vers, None, config=str(a["spec_json"]), kind="sweep")]
    if "config_json" not in a:
        return []
    return [Provenance(vers, None, config=str(a["config_json"]), seed=a.get("seed"),
                       device=str(a.get("device", "")), threads=a.get("torch_threads"), kind="run")]

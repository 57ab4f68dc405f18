"""``purify info``: a stored run's config, provenance and summary, or an experiment's claims."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from purify.cli.checks import checked_run
from purify.cli.parser import UsageError


def cmd_info(args: argparse.Namespace) -> int:
    from purify import store as S
    from purify.summary import summarize

    try:
        attrs = checked_run(args.run)
        if attrs.get("kind") == "experiment":
            return _experiment_info(args, attrs)
        S.open_run(args.run)
        summary = summarize(args.run, allow_running=True)
    except S.StoreError as e:
        fresh, stored = S.creation_interrupted(args.run) if args.run.is_dir() else (False, None)
        if fresh:
            options = "" if stored is not None else " and the run's options"
            raise UsageError(f"{args.run} holds no run yet: nothing was computed (an empty folder, or a run "
                             f"interrupted while it was being created); start it with: purify simulate "
                             f"--out {args.run} --resume{options}") from None
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
        return 0
    config = json.loads(attrs["config_json"])
    status, folder = attrs.get("status"), S.run_dir(args.run)
    line = f"run: {folder}  status: {status} {attrs.get('status_reason', '')}".rstrip()
    if status == "stopped" or (status == "running" and S.writer_pid(args.run) is None):
        note = "" if status == "stopped" else "no process is writing it; "
        line += f" ({note}resume with: purify simulate --out {folder} --resume)"
    print(line)
    train = config.get("train", {})
    print(f"completed step: {attrs.get('completed_step')} of "
          f"{train.get('clean_steps', 0) + train.get('adv_steps', 0)} (the last checkpoint)")
    print(f"seed: {attrs.get('seed')}  purify {attrs.get('purify_version')}  torch {attrs.get('torch_version')}")
    print(_provenance_lines(attrs))
    for section in ("data", "net", "train", "eval"):
        items = " ".join(f"{k}={v}" for k, v in config[section].items())
        print(f"[{section}] {items}")
    print(format_stored_summary(summary, args.run))
    return 0


def _provenance_lines(attrs: dict[str, Any]) -> str:
    """The commands that wrote a store, one line each (older stores did not record them)."""
    from purify import provenance

    records = provenance.read(attrs)
    if not records:
        return "command: not recorded"
    return "\n".join(f"{'command' if i == 0 else 'resumed'}: {r.describe()}" for i, r in enumerate(records))


def format_stored_summary(summary: dict, run: Path) -> str:
    """`format_summary`, or one line naming the damaged ``summary_json`` it was read from."""
    from purify.summary import format_summary

    try:
        return format_summary(summary)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise UsageError(f"{run}: its summary_json attribute is damaged ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:100]}); purify simulate --out {run} --overwrite "
                         "re-runs it") from None


def _json_safe(value: Any) -> Any:
    """NaN/inf (values an unfinished run has not written yet) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _experiment_info(args: argparse.Namespace, attrs: dict) -> int:
    """``purify info`` on an experiment folder: its claims table (JSON) or its summary.md."""
    from purify import provenance
    from purify import store as S

    if attrs.get("status") != "complete":
        raise UsageError(f"experiment at {S.run_dir(args.run)} is not complete (status: {attrs.get('status')})")
    if args.json:
        keep = ("experiment", "quick", "seed", "device", "elapsed_seconds")
        out = {k: attrs.get(k) for k in keep} | {
            "params": json.loads(attrs["params_json"]), "claims": json.loads(attrs["claims_json"]),
            "provenance": [dataclasses.asdict(r) for r in provenance.read(attrs)]}
        print(json.dumps(_json_safe(out), indent=2, allow_nan=False))
        return 0
    from purify.experiments.framework import SUMMARY_NAME

    summary = S.run_dir(args.run) / SUMMARY_NAME
    try:
        print(summary.read_text(), end="")
    except OSError as e:
        raise UsageError(f"cannot read {summary}: {e.strerror or e}") from None
    return 0

"""The ``purify`` argument parser: the simulate options (one row each), value types, and the
(unresolved) config the options describe."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from purify.registry import ANALYSES, ATTACKERS

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input; printed as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and never a traceback."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    return parse


INT = _number(int, "an integer")
FLOAT = _number(float, "a number")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _levels(text: str) -> tuple[tuple[float, float], ...]:
    """``MAG:PROB,MAG:PROB`` → ((MAG, PROB), ...)."""
    try:
        return tuple(tuple(float(v) for v in item.split(":")) for item in text.split(",") if item)  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of MAGNITUDE:PROBABILITY") from None


# (flag, config section, field, parser, help) — one row per simulate option.


OPTIONS: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--d", "data", "d", INT, "input dimension d (default 1000)"),
    ("--k", "data", "k", INT, "sparsity k: |z_i| in {0, 1/sqrt(k), 1} (default 60)"),
    ("--dictionary", "data", "dictionary", str, "identity | orthogonal | overcomplete (default orthogonal)"),
    ("--n-features", "data", "n_features", INT, "dictionary atoms D (default d; 2d if overcomplete)"),
    ("--p-one", "data", "p_one", FLOAT, "Pr[|z_i| = 1] (default 2/D)"),
    ("--p-small", "data", "p_small", FLOAT, "Pr[|z_i| = 1/sqrt(k)] (default k/D)"),
    ("--extra-levels", "data", "extra_levels", _levels, "more |z_i| levels as MAG:PROB,MAG:PROB"),
    ("--sigma-x", "data", "sigma_x", FLOAT, "Gaussian noise level sigma_x (default 0.1)"),
    ("--spike-level", "data", "spike_level", FLOAT, "spike noise magnitude (default 1/k^0.501)"),
    ("--spike-prob", "data", "spike_prob", FLOAT, "spike noise probability (default sigma_x^2/(D level^2))"),
    ("--n-train", "data", "n_train", INT, "fixed training set size N (default: fresh samples every step)"),
    ("--n-test", "data", "n_test", INT, "held-out examples (default 2000)"),
    ("--m", "net", "width", INT, "width m (default 2d)"),
    ("--sigma0", "net", "sigma0", FLOAT, "init scale sigma_0 (default 1/d)"),
    ("--activation", "net", "activation", str, "smooth | noisy (default smooth)"),
    ("--bias-schedule", "net", "bias_schedule", str, "norm | paper (default norm; see README)"),
    ("--r-start", "net", "r_start", FLOAT, "norm schedule: initial r (default 1.5)"),
    ("--r-end", "net", "r_end", FLOAT, "norm schedule: final r (default 0.6)"),
    ("--r-decay-fraction", "net", "r_decay_fraction", FLOAT, "norm schedule: decay over this fraction of clean steps (0.7)"),
    ("--c-b", "net", "c_b", FLOAT, "paper schedule: bias growth c_b (default 1)"),
    ("--sigma-rho-ratio", "net", "sigma_rho_ratio", FLOAT, "sigma_rho / b (default 0.05 norm, 1/sqrt(log d) paper)"),
    ("--lam", "net", "lam", FLOAT, "regularizer weight (default 0 norm, logloglog(d)/d paper)"),
    ("--clean-steps", "train", "clean_steps", INT, "clean training steps (default 4d)"),
    ("--adv-steps", "train", "adv_steps", INT, "adversarial training steps (default clean/2; clean/5 with --preset boundary)"),
    ("--lr", "train", "lr", FLOAT, "clean learning rate (default 1.0)"),
    ("--adv-lr", "train", "adv_lr", FLOAT, "adversarial learning rate (default lr/2)"),
    ("--batch-size", "train", "batch_size", INT, "batch size (default 512)"),
    ("--adv-attack", "train", "adv_attack", str, f"attacker of adversarial training: {' | '.join(ATTACKERS.where(trains=True))} (default fgm)"),
    ("--adv-norm", "train", "adv_norm", str, "l2 | linf (default l2)"),
    ("--adv-tau", "train", "adv_tau", FLOAT, "training radius (default: the evaluation radius)"),
    ("--adv-pgd-steps", "train", "adv_pgd_steps", INT, "PGD steps in training (default 3)"),
    ("--adv-init", "train", "adv_init", str, "clean | random: start of adversarial training (default clean)"),
    ("--adv-bias", "train", "adv_bias", str, "radius | clean | norm: biases of adversarial training: raised to b_i >= tau ||w_i||_q, the clean ones, or b_i/||w_i|| kept (default: the preset's)"),
    ("--clean-snapshots", "train", "clean_snapshots", INT, "evaluations + weight snapshots in clean training, init and end included (default 8)"),
    ("--adv-snapshots", "train", "adv_snapshots", INT, "evaluations + weight snapshots in adversarial training (default 4)"),
    ("--log-points", "train", "log_points", INT, "loss log points per phase (default 100)"),
    ("--tau", "eval", "tau", FLOAT, "l2 evaluation radius (default 0.5/sqrt(k); 1/sqrt(k) with --preset boundary)"),
    ("--tau-linf", "eval", "tau_linf", FLOAT, "linf evaluation radius (default tau/sqrt(d))"),
    ("--radii", "eval", "radii", _float_list, "radius grid as multiples of tau (default 0.25,0.5,1,1.5,2)"),
    ("--norms", "eval", "norms", _str_list, "norms to evaluate (default l2,linf)"),
    ("--attacks", "eval", "attacks", _str_list, f"attackers to evaluate, any of {','.join(ATTACKERS.where(tier='cheap'))} (default all)"),
    ("--pgd-steps", "eval", "pgd_steps", INT, "PGD steps in evaluation (default 10)"),
    ("--pgd-restarts", "eval", "pgd_restarts", INT, "PGD restarts in evaluation (default 1)"),
    ("--pgd-rel-step", "eval", "pgd_rel_step", FLOAT, "PGD step size / tau (default 2.5/steps)"),
    ("--n-eval", "eval", "n_eval", INT, "held-out examples attacked per evaluation (default 500)"),
    ("--eval-attack", "eval", "strength", str, "end-of-phase evaluation: fast | standard | strong (default standard)"),
]


LIST_KINDS = (_float_list, _str_list, _levels)


def dest(flag: str) -> str:
    return "opt_" + flag.lstrip("-").replace("-", "_")


DESCRIPTION = "Command line: ``purify simulate``, ``analyze``, ``plot``, ``info``, ``experiment``, ``sweep``, ``sweep-plot``."


def build_parser() -> _Parser:
    parser = _Parser(prog="purify", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="clean then adversarial training, evaluated and stored")
    for flag, _, _, kind, help_text in OPTIONS:
        sim.add_argument(flag, dest=dest(flag), type=kind, default=None, help=help_text)
    sim.add_argument("--config", type=Path, help="TOML or JSON file with [data] [net] [train] [eval] tables; "
                     "command-line options override it")
    sim.add_argument("--seed", type=INT, default=None, help="root seed (default: drawn and recorded)")
    sim.add_argument("--problem-seed", type=INT, default=None,
                     help="seed of the dictionary, teacher and held-out set (default: --seed); runs sharing it "
                          "differ only in init and training noise, e.g. for purify analyze --transfer-from")
    sim.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default cpu)")
    sim.add_argument("--preset", default=None,
                     help="boundary | purification: defaults of the radius and of adversarial training "
                          "(default purification; see README 'Purification or thresholding?')")
    sim.add_argument("--out", type=Path, default=None, help="run folder (default runs/d{d}-k{k}-seed{seed})")
    sim.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    sim.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    sim.add_argument("--dry-run", action="store_true",
                     help="print the derived config and the estimated memory and store size, then exit")
    sim.add_argument("--no-analysis", action="store_true",
                     help="skip the per-neuron analyses and figures (purify analyze / plot do them later)")

    ana = sub.add_parser("analyze", help="compute the per-neuron analyses a run is missing")
    ana.add_argument("run", type=Path, help="run folder")
    ana.add_argument("--force", action="store_true", help="recompute analyses already stored")
    ana.add_argument("--only", type=_str_list, default=None, help=f"comma-separated analyses, any of {','.join(ANALYSES)} (default all)")
    ana.add_argument("--transfer-from", type=Path, action="append", default=[],
                     help="another run of the same problem, for the transfer analysis (repeatable)")

    plot = sub.add_parser("plot", help="draw a run's figures into RUN/figures")
    plot.add_argument("run", type=Path, help="run folder")
    plot.add_argument("--pdf", action="store_true", help="also write PDF files")

    exp = sub.add_parser("experiment", help="reproduce a companion paper's experiment (--list names them)")
    exp.add_argument("name", nargs="?", default=None, help="experiment name (see --list)")
    exp.add_argument("--list", action="store_true", help="list the experiments and exit")
    exp.add_argument("--quick", action="store_true", help="small grids, at most ~90 s on 2 cores")
    exp.add_argument("--seed", type=INT, default=0, help="root seed (default 0)")
    exp.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    exp.add_argument("--out", type=Path, default=None,
                     help="output folder (default runs/experiments/NAME, NAME-quick with --quick)")
    exp.add_argument("--overwrite", action="store_true", help="replace the experiment in --out")
    exp.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="print a stored run's config and summary")
    info.add_argument("run", type=Path, help="run folder")
    info.add_argument("--json", action="store_true", help="print the summary as JSON only")
    add_sweep_parsers(sub)
    return parser


def add_sweep_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="run a grid of simulations on Dask and combine their summaries",
                        description="Run one simulation per cell of a grid on Dask and combine their summaries "
                                    "into SWEEP/sweep.zarr. Every simulate option takes V1,V2,... to make it an "
                                    "axis (options whose value is a list separate axis values with ';').")
    sw.add_argument("spec", nargs="?", type=Path, default=None,
                    help="sweep file (TOML or JSON): [base] config, [axes], [collect]; see README 'Sweeps'")
    for flag, _, _, _, help_text in OPTIONS:
        sw.add_argument(flag, dest=dest(flag), default=None, metavar="V[,V...]", help=help_text)
    sw.add_argument("--seed", default=None, help="seed, or seeds S1,S2,... as an axis (default 0)")
    sw.add_argument("--seeds", type=INT, default=None, help="seeds 0..N-1 as an axis")
    sw.add_argument("--problem-seed", default=None, help="problem seed(s) (default: each cell's seed)")
    sw.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default cpu)")
    sw.add_argument("--preset", default=None, help="boundary | purification, or P1,P2 as an axis (default purification)")
    sw.add_argument("--analyses", type=_str_list, default=None,
                    help="analyses run per cell whose scalar results are collected, e.g. lottery,mixture "
                         "(default: the file's [collect], else none)")
    sw.add_argument("--out", type=Path, default=None,
                    help="sweep folder (default sweeps/<file name> or sweeps/<axis names>)")
    sw.add_argument("--workers", type=INT, default=None, help="local worker processes (default cores/threads)")
    sw.add_argument("--threads-per-cell", type=INT, default=1,
                    help="torch/BLAS threads of each cell (default 1; results depend on it, not on --workers)")
    sw.add_argument("--scheduler", default=None,
                    help="address of a running Dask scheduler (tcp://HOST:PORT) to use instead of a local cluster")
    sw.add_argument("--retries", type=INT, default=2, help="extra attempts of a failed cell (default 2)")
    sw.add_argument("--overwrite", action="store_true", help="delete the sweep's cells and results and start again")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = sub.add_parser("sweep-plot", help="draw a sweep's phase diagrams into SWEEP/figures")
    sp.add_argument("sweep", type=Path, help="sweep folder")
    sp.add_argument("--vars", type=_str_list, default=None,
                    help="variables to draw (default robust/clean accuracy before and after, weight change)")
    sp.add_argument("--x", default=None, help="axis along x (default: the first axis with several values)")
    sp.add_argument("--y", default=None, help="axis along y of the heatmaps (default: the next one)")
    sp.add_argument("--pdf", action="store_true", help="also write PDF files")


def config_from_args(args: argparse.Namespace):
    """The (unresolved) :class:`RunConfig` described by the config file and options."""
    from purify.config import RunConfig, read_table_file

    raw: dict[str, Any] = read_table_file(args.config, "--config") if args.config else {}
    for flag, section, name, _, _ in OPTIONS:
        value = getattr(args, dest(flag))
        if value is not None:
            table = raw.setdefault(section, {})
            if not isinstance(table, dict):
                raise UsageError(f"invalid {section} in --config: must be a table")
            table[name] = value
    if args.seed is not None:
        raw["seed"] = args.seed
    if args.problem_seed is not None:
        raw["problem_seed"] = args.problem_seed
    if args.device is not None:
        raw["device"] = args.device
    if args.preset is not None:
        raw["preset"] = args.preset
    return RunConfig.from_dict(raw)

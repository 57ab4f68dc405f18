"""Shared test setup."""

from __future__ import annotations

import pytest
import torch

from purify.threads import available_cores


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the default, pyproject.toml): one worker per core this process may run on.
    xdist's own count asks psutil for the machine's physical cores, which in a container or
    under ``taskset`` can be many more than the 2 cores the tests are given."""
    return available_cores()


def pytest_configure(config):
    """Import ART once in the controller, before the workers start.  Its first import on a
    machine writes ``~/.art/config.json``, and two workers collecting at once can race there:
    one sees no file, the other writes it, and the first then skips both reading and writing
    it and fails with ``NameError: name '_config' is not defined`` (seen on a fresh machine)."""
    if hasattr(config, "workerinput"):
        return
    import importlib.util

    if importlib.util.find_spec("art") is not None:
        try:
            import art  # noqa: F401
        except Exception:  # noqa: BLE001 - the cross-check's importorskip reports a broken ART itself
            pass


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Runs are compared bit for bit (results depend on the thread count), subprocesses of the
    tests use one thread, and CI machines are shared: every test uses one torch thread, and the
    parallelism is one xdist worker per core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The smallest complete run (~0.3 s in-process): for tests that damage, read or resume a store.
TINY_RUN_ARGS = [
    "--d", "8", "--k", "1", "--m", "8", "--clean-steps", "4", "--adv-steps", "2", "--n-test", "20",
    "--n-eval", "10", "--batch-size", "16", "--pgd-steps", "1", "--clean-snapshots", "2",
    "--adv-snapshots", "1", "--log-points", "2", "--radii", "1", "--norms", "l2", "--attacks", "fgm",
    "--seed", "0", "--quiet", "--no-analysis",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete tiny run (no analyses), created once per session; copy it before damaging it."""
    import contextlib
    import io

    from purify.cli import main

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["simulate", *TINY_RUN_ARGS, "--out", str(run)])
    assert code == 0, err.getvalue()
    return run

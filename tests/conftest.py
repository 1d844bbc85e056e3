"""Shared fixtures: small checkpoints that the tests build themselves."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from golden.checkpoint import save_checkpoint
from golden.config import ModelConfig
from golden.synthetic import random_tensors

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A shape with nothing a power of two, as the released models are not.
ODD_SHAPE = ModelConfig(vocab_size=1000, hidden_size=96, intermediate_size=256, num_layers=3)


@pytest.fixture(scope="session")
def odd_checkpoint(tmp_path_factory):
    """A random-weight checkpoint of ODD_SHAPE written to disk in bf16."""
    path = tmp_path_factory.mktemp("odd-model")
    save_checkpoint(path, ODD_SHAPE, random_tensors(ODD_SHAPE, seed=7), dtype="BF16")
    return path


# Board builds that run in a child process while the rest of the suite runs.
# A test marks its ``python -m boards.build`` arguments with
# ``background_build``. The build starts once the test is selected, the test
# moves to the end of the run, and its ``background_build`` fixture returns
# the build to wait for.
BACKGROUND_BUILDS = pytest.StashKey()


class BackgroundBuild:
    """One ``python -m boards.build`` process whose output goes to ``log_path``."""

    def __init__(self, arguments, output_dir):
        self.arguments = list(arguments)
        self.output_dir = output_dir
        self.log_path = output_dir.with_name(output_dir.name + ".log")
        self.process = None
        self.show = print

    def start(self):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "boards.build", *self.arguments, "--output", str(self.output_dir)]
        with open(self.log_path, "w") as log:
            # A lower priority keeps the tests that run beside the build close to their usual speed.
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=lambda: os.nice(5))

    def wait(self, timeout_s, progress_interval_s=60):
        """Wait for the build and return its exit status; raise TimeoutExpired after ``timeout_s``.

        While it waits, it shows the build log's last line every ``progress_interval_s`` through ``show``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.process.wait(timeout=max(0.0, min(progress_interval_s, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
                lines = self.log_path.read_text(errors="replace").splitlines()
                self.show(f"{self.log_path.name}: {lines[-1] if lines else 'started'}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait()


def pytest_configure(config):
    config.addinivalue_line("markers", "background_build(*arguments): a board build, started when the test is "
                                       "selected and run beside the other tests; the test runs last")
    config.stash[BACKGROUND_BUILDS] = {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # trylast: after the -m and -k options have deselected their tests.
    marked = [item for item in items if item.get_closest_marker("background_build")]
    if not marked or config.getoption("collectonly"):
        return
    items[:] = [item for item in items if item not in marked] + marked
    builds = config.stash[BACKGROUND_BUILDS]
    for item in marked:
        arguments = tuple(item.get_closest_marker("background_build").args)
        if arguments not in builds:
            name = "-".join(argument.lstrip("-") for argument in arguments)
            builds[arguments] = BackgroundBuild(arguments, ROOT / "build" / "tests" / name)
            builds[arguments].start()


def pytest_unconfigure(config):
    for build in config.stash.get(BACKGROUND_BUILDS, {}).values():
        build.stop()


@pytest.fixture
def background_build(request):
    """The test's BackgroundBuild, still running or finished."""
    marker = request.node.get_closest_marker("background_build")
    if marker is None:
        raise pytest.UsageError(f"{request.node.name} uses background_build without the background_build marker")
    build = request.config.stash[BACKGROUND_BUILDS][tuple(marker.args)]
    # Progress lines go to the terminal, past pytest's output capture.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")

    def show(line):
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    build.show = show
    return build

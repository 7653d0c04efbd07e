import os

import pytest

os.environ.setdefault("BENCH_PROGRESS", "0")


@pytest.fixture
def registry():
    from plugins_for_tests import EXTRA

    from bench.registry import Registry

    return Registry(extra=EXTRA)


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from bench.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run

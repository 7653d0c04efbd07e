"""The committed tables under leaderboards/ are exactly what the committed records give."""
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2] / "leaderboards"


@pytest.mark.skipif(not (ROOT / "records").is_dir(), reason="no committed records")
def test_committed_leaderboards_match_committed_records(capsys):
    assert main(["--results", str(ROOT), "leaderboard", "--check"]) == 0, capsys.readouterr().out

"""Every `bench` command the README shows parses as written, and names suites and plugins that exist."""
import re
import shlex
from pathlib import Path

import pytest

from bench.cli import _parser
from bench.registry import Registry
from bench.suites import suites

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line.split("#", 1)[0]):
                part = part.strip()
                if part.startswith("bench "):
                    commands.append(part)
    return commands


def test_the_readme_shows_bench_commands():
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    registry = Registry()
    known = suites(registry)
    argv = shlex.split(re.sub(r"\$\w+", "VALUE", command))[1:]  # shell variables of a batch script
    args = _parser(sorted(known)).parse_args(argv)
    if getattr(args, "suite", None):
        assert args.suite in known
    for kind, names in (("defense", getattr(args, "defense", [])), ("attack", getattr(args, "attack", [])),
                        ("dataset", getattr(args, "dataset", []))):
        for name in names:
            registry.entry(kind, name)

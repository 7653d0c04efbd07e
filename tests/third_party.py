"""Installing a third-party package from tests/ into a temporary folder and driving bench with it, in a fresh
interpreter: what a user of `pip install bench-something` gets."""
import os
import shutil
import subprocess
import sys
from pathlib import Path


def install(package: Path, tmp_path_factory) -> Path:
    """``package`` installed (no deps, no network) into a fresh folder; built from a copy, so the build leaves
    nothing (egg-info, build/) in the repository."""
    source = tmp_path_factory.mktemp("src") / package.name
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True,
                   timeout=300)
    return target


def bench(site: Path, *argv, cwd) -> subprocess.CompletedProcess:
    """``bench ARGV`` with the installed package on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "BENCH_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)

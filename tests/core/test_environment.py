"""Provenance of records: hardware() says enough to explain a difference between two machines, is cached,
JSON-serialisable, never raises, and bench.environment stays importable without torch."""
import json
import pathlib
import subprocess
import sys

import pytest
import torch

from bench import environment

EXISTING = {"platform", "python", "cpu", "threads", "device"}
NEW = {"cpu_model", "cpu_flags", "cpu_count", "torch_build", "interop_threads"}


@pytest.fixture(autouse=True)
def fresh_cache():
    environment._hardware.cache_clear()
    yield
    environment._hardware.cache_clear()


def test_hardware_has_the_existing_and_new_keys_on_cpu():
    h = environment.hardware(torch.device("cpu"))
    assert EXISTING | NEW <= set(h)
    assert "gpu" not in h
    assert h["device"] == "cpu" and h["threads"] == torch.get_num_threads()
    assert h["interop_threads"] == torch.get_num_interop_threads()
    assert isinstance(h["cpu_model"], str) and h["cpu_model"]
    assert h["cpu_count"] == __import__("os").cpu_count()
    assert h["cpu_flags"] == sorted(h["cpu_flags"]) and set(h["cpu_flags"]) <= set(environment.SIMD_FLAGS)
    build = h["torch_build"]
    assert build["torch"] == torch.__version__
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in build.items())
    assert build["mkldnn_available"] in ("True", "False")
    if "BLAS_INFO=" in torch.__config__.show():
        assert "blas" in build
    assert json.loads(json.dumps(h, allow_nan=False)) == h


def test_cpu_flags_match_proc_cpuinfo():
    text = pathlib.Path("/proc/cpuinfo")
    if not sys.platform.startswith("linux") or not text.exists():
        pytest.skip("needs /proc/cpuinfo")
    flags = next((set(line.split(":", 1)[1].split()) for line in text.read_text().splitlines()
                  if line.startswith("flags")), set())
    h = environment.hardware("cpu")
    assert h["cpu_flags"] == sorted(f for f in environment.SIMD_FLAGS if f in flags)


def test_hardware_is_cached_per_device_and_returns_copies():
    first = environment.hardware("cpu")
    info = environment._hardware.cache_info()
    second = environment.hardware(torch.device("cpu"))
    assert environment._hardware.cache_info().hits == info.hits + 1
    assert second == first
    second["torch_build"]["torch"] = "changed"  # a caller mutating its copy does not change the cache
    assert environment.hardware("cpu")["torch_build"]["torch"] == torch.__version__


def test_threads_are_read_live(monkeypatch):
    environment.hardware("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 123)
    assert environment.hardware("cpu")["threads"] == 123


def test_thread_env_is_recorded_only_when_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert "thread_env" not in environment.hardware("cpu")
    environment._hardware.cache_clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert environment.hardware("cpu")["thread_env"] == {"OMP_NUM_THREADS": "3"}


def test_unreadable_cpuinfo_does_not_raise(monkeypatch):
    real = pathlib.Path.read_text

    def refuse(self, *a, **kw):
        if str(self).startswith("/proc"):
            raise PermissionError(str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "read_text", refuse)
    h = environment.hardware("cpu")
    assert EXISTING <= set(h) and "cpu_flags" not in h  # unknown flags are left out, not reported as none
    json.dumps(h, allow_nan=False)


def test_failing_probes_leave_keys_out(monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(torch.__config__, "show", boom)
    monkeypatch.setattr(torch, "get_num_interop_threads", boom)
    monkeypatch.setattr(environment.platform, "processor", boom)
    h = environment.hardware("cpu")
    assert "interop_threads" not in h and "threads" in h
    assert h["cpu"] == environment.platform.machine() and h["python"]  # one failing probe loses only its key
    assert h["torch_build"]["torch"] == torch.__version__ and "blas" not in h["torch_build"]
    assert h["device"] == "cpu"


def test_parse_config():
    text = """PyTorch built with:
  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64 architecture
  - Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71049cd69a3df32adcccb623b12cd7baa22)
  - OpenMP 201511 (a.k.a. OpenMP 4.5)
  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release, CXX_FLAGS= -O2 -fPIC, LAPACK_INFO=open, USE_MKLDNN=ON, 
"""
    assert environment._parse_config(text) == {"mkl": "2024.2", "onednn": "v3.12.0", "openmp": "201511",
                                                "blas": "open", "lapack": "open", "use_mkldnn": "ON"}
    assert environment._parse_config("  - oneDNN v3.5.3 (Git Hash x)\n") == {"onednn": "v3.5.3"}
    assert environment._parse_config("") == {}


def test_importing_environment_does_not_import_torch():
    code = "import bench.environment, sys; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hardware_on_cuda():
    h = environment.hardware(torch.device("cuda"))
    assert h["gpu"] == torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    assert h["gpu_capability"] == f"{major}.{minor}"
    assert h["gpu_memory_gib"] > 0
    assert h["cuda_runtime"] == torch.version.cuda
    json.dumps(h, allow_nan=False)


def test_a_checkout_is_dirty_for_code_changes_not_for_its_results_folder(tmp_path, monkeypatch):
    """Records and tables that runs write into a results folder inside the checkout are outputs, not code:
    a second suite run into it is still a clean one; a change anywhere else makes the commit '+dirty'."""
    import subprocess

    from bench import environment

    git_commit = environment.git_commit.__wrapped__  # the process caches the answer; here each call asks git
    monkeypatch.delenv("BENCH_GIT_COMMIT", raising=False)
    repo = tmp_path / "repo"
    (repo / "leaderboards" / "records").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "leaderboards" / "records" / "r.json").write_text("{}\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run(git + args, cwd=repo, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    (repo / "leaderboards" / "records" / "r.json").write_text('{"rerun": 1}\n')
    assert git_commit(repo / "leaderboards", root=repo) == sha
    assert git_commit(None, root=repo) == sha + "+dirty"  # without the results folder named, any change counts
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo / "leaderboards", root=repo) == sha + "+dirty"

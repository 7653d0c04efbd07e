"""Provenance for records: hardware, package versions, git commit."""
from __future__ import annotations

import copy
import functools
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("bench", "torch", "torchvision", "numpy", "foolbox", "torchattacks", "safetensors")


@functools.cache
def packages() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@functools.cache
def git_commit(outputs: Path | None = None, root: Path | None = None) -> str | None:
    """The commit of the checkout bench runs from, with '+dirty' when it has uncommitted changes outside
    ``outputs`` (the results folder: records and tables that runs write are not code, so a second suite run
    into a results folder inside the checkout is still a clean one). $BENCH_GIT_COMMIT names the commit where
    the code runs from a copy without .git, e.g. on a GPU host."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    root = Path(root or Path(__file__).resolve().parent.parent).resolve()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        exclude = []
        if outputs is not None:
            try:
                exclude = [f":(exclude){Path(outputs).resolve().relative_to(root).as_posix()}"]
            except ValueError:  # the results folder is outside the checkout
                pass
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---- hardware -------------------------------------------------------------------------------------------
# The SIMD extensions that change which kernels torch/MKL/oneDNN dispatch to, and so float results and speed.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma", "f16c")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def hardware(device) -> dict:
    """What a record needs to explain a difference between two machines: the platform, the CPU (model,
    SIMD flags, cores), how torch was built (BLAS/LAPACK, oneDNN, CUDA, cuDNN), its thread settings and,
    on CUDA, the GPU (name, compute capability, memory, driver).

    Never raises: a probe that fails leaves its key out. JSON-serialisable. Probed once per device string
    (cached); only the thread counts, which ``torch.set_num_threads`` may change later, are read each call."""
    info = copy.deepcopy(_hardware(str(device)))
    live = _probe(_threads)
    # Keep the historical key order: platform, python, cpu, threads, device, gpu, then the rest.
    ordered = {k: info.pop(k) for k in ("platform", "python", "cpu") if k in info}
    ordered.update(live)
    ordered.update(info)
    return ordered


@functools.cache
def _hardware(device: str) -> dict:
    info: dict = {}
    for probe in (_basics, lambda: {"device": device}, lambda: _gpu(device), _cpu, _torch_build, _thread_env):
        info.update(_probe(probe))
    return info


def _probe(fn) -> dict:
    try:
        return {k: v for k, v in fn().items() if v is not None}
    except Exception:  # provenance must never break a run
        return {}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except Exception:
        return None


def _basics() -> dict:
    return {"platform": _safe(platform.platform), "python": _safe(platform.python_version),
            "cpu": _safe(platform.processor) or _safe(platform.machine)}


def _threads() -> dict:
    import torch

    return {"threads": _safe(torch.get_num_threads), "interop_threads": _safe(torch.get_num_interop_threads)}


def _thread_env() -> dict:
    found = {name: os.environ[name] for name in THREAD_ENV if os.environ.get(name)}
    return {"thread_env": found} if found else {}


def _cpu() -> dict:
    info: dict = {"cpu_count": os.cpu_count()}
    model, flags = None, set()
    text = _read("/proc/cpuinfo") if sys.platform.startswith("linux") else None
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key == "flags" and not flags:
            flags = set(value.split())
        if model is not None and flags:
            break
    info["cpu_model"] = model or _safe(platform.processor) or None
    if text is not None:  # only where the flags could be read: an empty list means "none of them"
        info["cpu_flags"] = sorted(f for f in SIMD_FLAGS if f in flags)
    return info


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


def _torch_build() -> dict:
    import torch

    build: dict[str, str] = {"torch": str(torch.__version__)}
    if torch.version.cuda:
        build["cuda"] = str(torch.version.cuda)
    cudnn = _safe(lambda: torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if cudnn:
        build["cudnn"] = str(cudnn)
    mkldnn = _safe(torch.backends.mkldnn.is_available)
    if mkldnn is not None:
        build["mkldnn_available"] = str(bool(mkldnn))
    capability = _safe(torch.backends.cpu.get_cpu_capability)  # the kernels ATen dispatches to here
    if capability:
        build["cpu_capability"] = str(capability)
    config = _safe(torch.__config__.show)
    if isinstance(config, str):
        build.update(_parse_config(config))
    return {"torch_build": build}


_CONFIG_SETTINGS = {"BLAS_INFO": "blas", "LAPACK_INFO": "lapack", "USE_MKL": "use_mkl", "USE_MKLDNN": "use_mkldnn",
                    "USE_OPENMP": "use_openmp", "USE_CUDNN": "use_cudnn"}


def _parse_config(text: str) -> dict[str, str]:
    """The few lines of ``torch.__config__.show()`` that decide numerics: BLAS/LAPACK, oneDNN, MKL, OpenMP."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip().lstrip("- ").strip()
        if line.startswith("Build settings:"):
            for item in line.partition(":")[2].split(","):
                key, sep, value = item.strip().partition("=")
                if sep and key in _CONFIG_SETTINGS and value.strip():
                    found[_CONFIG_SETTINGS[key]] = value.strip()
        elif m := re.match(r"(?:Intel\(R\) )?(?:MKL-DNN|oneDNN)\s+(v?[\w.]+)", line):
            found["onednn"] = m.group(1)
        elif m := re.search(r"Math Kernel Library Version ([\d.]+)", line):
            found["mkl"] = m.group(1)
        elif m := re.match(r"OpenMP (\d+)", line):
            found["openmp"] = m.group(1)
    return found


def _gpu(device: str) -> dict:
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return {}
    info: dict = {"gpu": _safe(lambda: torch.cuda.get_device_name(dev))}
    props = _safe(lambda: torch.cuda.get_device_properties(dev))
    if props is not None:
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    info["cuda_runtime"] = torch.version.cuda
    info["cuda_driver"] = _safe(_cuda_driver)
    info["nvidia_driver"] = _safe(_nvidia_driver)
    return info


def _cuda_driver() -> str | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion), e.g. '12.4'."""
    import ctypes

    lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    out = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(out)) != 0 or out.value <= 0:
        return None
    return f"{out.value // 1000}.{out.value % 1000 // 10}"


def _nvidia_driver() -> str | None:
    """The kernel driver's version, e.g. '550.54.15' (Linux)."""
    m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", _read("/proc/driver/nvidia/version") or "")
    return m.group(1) if m else None

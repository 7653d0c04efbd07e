"""The GPU-host kit (scripts/text_gpu_kit.py) stores weights in byte planes: what it unpacks is byte for byte
what it packed, for float16 safetensors and float32 .npy alike."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]


def _kit():
    spec = importlib.util.spec_from_file_location("text_gpu_kit", ROOT / "scripts" / "text_gpu_kit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_byte_planes_round_trip_safetensors_and_npy(tmp_path):
    from safetensors.torch import save_file

    kit = _kit()
    weights = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(33, 7).half(), "b": torch.randn(5).half()}, str(weights))
    vectors = tmp_path / "glove.npy"
    np.save(vectors, np.random.default_rng(0).standard_normal((21, 50)).astype(np.float32))
    packed = tmp_path / "kit"
    packed.mkdir()
    entries = {"w": kit._split_file(weights, 2, packed, "w", raw_planes=1),
               "g": kit._split_file(vectors, 4, packed, "g", raw_planes=2)}
    assert sorted(p.name for p in packed.iterdir()) == ["g.head", "g.p0", "g.p1", "g.p2.xz", "g.p3.xz",
                                                        "w.head", "w.p0", "w.p1.xz"]
    for name, source in (("w", weights), ("g", vectors)):
        kit._join_file(packed, entries[name], tmp_path / f"out-{name}")
        assert (tmp_path / f"out-{name}").read_bytes() == source.read_bytes()


def test_unpack_of_a_folder_that_is_not_a_kit_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    site = tmp_path / "site"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "text_gpu_kit.py"), "unpack", str(tmp_path),
                           "--site", str(site)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "not a kit" in done.stderr
    assert not site.exists()

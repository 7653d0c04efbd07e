"""Training the base text-to-image model on captioned Fashion-MNIST -- once per profile, shared by every erased
concept -- and finding it again.

    python -m bench.tracks.concept_erasure.train --profile quick|full [--out FILE.safetensors] [--seed 0] [--device cuda]

Recipe: epsilon-prediction MSE on images resized to the preset's side in [-1, 1]; each image gets a random
training caption of its class (``captions.training_captions``), replaced by the empty prompt with probability
``caption_dropout`` (for classifier-free guidance); the MiniLM encoder is frozen, so the token states of the
240 captions are computed once; AdamW with a linear warm-up and cosine decay; the EMA of the weights is what is
kept. Only the UNet is stored (the text encoder is the unchanged MiniLM): a few MB.

``base_unet`` looks for the weights, in order: a file shipped in the package (``weights/<profile>.safetensors``,
used when its recorded recipe equals the current one), ``$BENCH_DATA/diffusion/base-<profile>-<hash>``,
and otherwise trains them and stores them there.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.tracks.concept_erasure.captions import training_captions
from bench.tracks.concept_erasure.datasets import EraseParams
from bench.tracks.concept_erasure.model import PRESETS, TextToImage, build_unet

WEIGHTS_DIR = Path(__file__).with_name("weights")
RECIPE_VERSION = 1  # bump when the training code changes what it produces


@dataclasses.dataclass(frozen=True)
class Recipe:
    preset: str
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    ema: float = 0.995
    caption_dropout: float = 0.1
    n_train: int | None = None  # Fashion-MNIST training images (None: all 60,000)


RECIPES = {
    "smoke": Recipe("smoke", steps=60, batch_size=32, warmup=10, ema=0.9, n_train=2000),
    "quick": Recipe("quick", steps=600),  # ~7 min on one 2-core-machine thread
    # GPU. The judge's class-balanced training subset (20,000 images), so one small data bundle serves both on a
    # size-limited host; at 5,000 steps of 256 that is 64 passes over them.
    "full": Recipe("full", steps=5000, batch_size=256, lr=1e-3, warmup=300, ema=0.999, n_train=EraseParams.n_train),
}


def recipe_id(recipe: Recipe, seed: int) -> dict:
    return {"recipe": dataclasses.asdict(recipe), "preset": dataclasses.asdict(PRESETS[recipe.preset]),
            "captions": training_captions(), "seed": seed, "version": RECIPE_VERSION}


def fashion_images(n_train: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from bench.tracks.image_robustness.fashion_mnist import FashionMNIST

    data = FashionMNIST(FashionMNIST.Params(n_train=n_train, n_test=0)).load()
    return data.train_x, data.train_y


def train_base(model: TextToImage, recipe: Recipe, seed: int, progress=None, log=None) -> dict:
    """Train ``model.unet`` in place (EMA weights at the end); returns a summary."""
    from bench.progress import progress as default_progress

    progress = progress or default_progress
    device = model.device
    with torch.random.fork_rng():  # the same initial weights whoever calls
        torch.manual_seed(seed)
        model.unet.load_state_dict(build_unet(PRESETS[recipe.preset]).state_dict())
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = fashion_images(recipe.n_train)
    caps = training_captions()
    with torch.no_grad():
        conds = model.encode([c for c, _ in caps] + [""])  # the last one: the empty prompt
    by_class = [torch.tensor([i for i, (_, c) in enumerate(caps) if c == k]) for k in range(10)]
    empty = len(caps)
    unet = model.unet.train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=0.01)
    warm = max(1, recipe.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / recipe.steps))))
    losses, start = [], time.perf_counter()
    for step in progress(range(recipe.steps), desc=f"base diffusion model ({recipe.preset})"):
        idx = torch.randint(len(x_all), (recipe.batch_size,), generator=gen)
        y = y_all[idx]
        pick = torch.stack([by_class[int(k)][torch.randint(len(by_class[int(k)]), (1,), generator=gen)][0]
                            for k in y])
        pick[torch.rand(len(pick), generator=gen) < recipe.caption_dropout] = empty
        cond = conds[pick.to(device)]
        x0 = model.to_latents(x_all[idx])
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(model.scheduler.config.num_train_timesteps, (len(x0),), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model.noise_pred(model.add_noise(x0, noise, t), t, cond)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():  # one fused kernel per dtype, not one per tensor (small UNets are launch-bound)
            torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - recipe.ema)
        losses.append(loss.item())
        if log and (step + 1) % max(1, recipe.steps // 10) == 0:
            log(step=step + 1, loss=sum(losses[-50:]) / len(losses[-50:]), s=round(time.perf_counter() - start, 1))
    unet.load_state_dict(ema.state_dict())
    unet.eval()
    return {"train_s": time.perf_counter() - start, "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:]))}


def _key(ident: dict) -> str:
    from bench.hashing import digest

    return digest(ident)


def save_unet(model: TextToImage, path: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.unet.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"bench": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_unet(model: TextToImage, path: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("bench", "{}"))
    model.unet.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return meta


def base_unet(model: TextToImage, profile: str, seed: int, progress=None, log=None) -> dict:
    """Load (or train, then store) the base UNet for ``profile`` into ``model``; returns its metadata."""
    from bench.data import default_data_root

    recipe = RECIPES[profile]
    key = _key(recipe_id(recipe, seed))
    shipped = WEIGHTS_DIR / f"{profile}.safetensors"
    cached = default_data_root() / "diffusion" / f"base-{profile}-{key[:16]}.safetensors"
    for path in (shipped, cached):
        if path.is_file():
            meta = load_unet(model, path) if _meta(path).get("key") == key else None
            if meta is not None:
                return {**meta, "source": str(path), "cached": True}
    summary = train_base(model, recipe, seed, progress, log)
    meta = {"key": key, "seed": seed, "recipe": dataclasses.asdict(recipe), **summary,
            "device": str(model.device), "command": f"python -m bench.tracks.concept_erasure.train --profile {profile} "
                                                   f"--seed {seed}"}
    save_unet(model, cached, meta)
    return {**meta, "source": str(cached), "cached": False}


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {}).get("bench", "{}"))
    except Exception:  # unreadable: treated as absent, then rebuilt
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=tuple(RECIPES), default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the weights here (e.g. "
                                                 "bench/tracks/concept_erasure/weights/full.safetensors to ship them)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action="store_true", help="store the --out weights in float16")
    args = parser.parse_args(argv)
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    model = TextToImage.from_preset(RECIPES[args.profile].preset).to(device)
    meta = base_unet(model, args.profile, args.seed, log=lambda **kv: print(json.dumps(kv), flush=True))
    print(json.dumps({k: v for k, v in meta.items() if k != "recipe"}))
    if args.out:
        if args.half:
            model.unet.half()
        save_unet(model, args.out, {k: v for k, v in meta.items() if k not in ("source", "cached")})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

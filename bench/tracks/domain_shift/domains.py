"""Target domains for single-source domain generalisation, built deterministically from a seed.

Everything here turns images into images with numpy (PIL for font rendering) so that the domains of
``digits-dg`` and ``fashion-dg`` are identical on every machine and for every run seed: the numbers come from a
``numpy.random.Generator`` seeded by the dataset's ``domain_seed``, never from the run seed. Built domains are
cached as uint8 ``.npz`` (read with ``allow_pickle=False``) under ``$BENCH_DATA/domains``.

Images are float32 in [0, 1]; grey inputs are (N, H, W), colour outputs (N, 3, H, W).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bench.data import default_data_root

# Bump when a builder changes its output: cached domains of the old version are then rebuilt.
DOMAINS_VERSION = 1
SEVERITIES = 5  # corruption domains cycle through severities 1..5, one per image (image i: 1 + i % 5)


# ---- geometry and colour --------------------------------------------------------------------------------

def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, H, W) or (N, C, H, W) to size x size (antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    grey = x.ndim == 3
    x = x[:, None] if grey else x
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    x = x.clamp(0, 1)
    return (x[:, 0] if grey else x).numpy()


def to_rgb(grey: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 3, H, W) by replicating the channel, as the classic digits protocol does."""
    return np.repeat(grey[:, None], 3, axis=1).astype(np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def contrasting_colours(rng: np.random.Generator, n: int, min_gap: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) RGB colours (n, 3) whose luminances differ by at least ``min_gap``: the digit
    or garment stays visible, but light-on-dark and dark-on-light both occur."""
    fg, bg = rng.random((n, 3), dtype=np.float32), rng.random((n, 3), dtype=np.float32)
    bad = np.abs(luminance(fg) - luminance(bg)) < min_gap
    while bad.any():
        fg[bad], bg[bad] = rng.random((bad.sum(), 3), dtype=np.float32), rng.random((bad.sum(), 3), dtype=np.float32)
        bad = np.abs(luminance(fg) - luminance(bg)) < min_gap
    return fg, bg


def colourise(grey: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Stroke intensity x in [0, 1] -> bg * (1 - x) + fg * x, per image colours (N, 3)."""
    x = grey[:, None]
    return (bg[:, :, None, None] * (1 - x) + fg[:, :, None, None] * x).astype(np.float32)


# ---- MNIST-M-style blending ------------------------------------------------------------------------------

def photographs() -> list[np.ndarray]:
    """The two photographs scikit-learn ships (china.jpg, flower.jpg), float32 (H, W, 3) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, dtype=np.float32) / 255.0 for img in load_sample_images().images]


def photo_patches(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n random crops (N, 3, size, size) of the photographs: random photo, scale (crop side size..4*size),
    position and horizontal flip, resized to size."""
    photos = photographs()
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(size, 4 * size + 1))
        top, left = rng.integers(photo.shape[0] - side + 1), rng.integers(photo.shape[1] - side + 1)
        crop = photo[top:top + side, left:left + side].transpose(2, 0, 1)
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        out[i] = resize(crop[None], size)[0]
    return out


def m_blend(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST-M's blend (Ganin et al. 2016): |patch - x| per channel, patch a random photo crop."""
    patches = photo_patches(rng, len(grey), grey.shape[-1])
    return np.abs(patches - grey[:, None]).astype(np.float32)


# ---- SYN-style rendered digits -----------------------------------------------------------------------------

def font_files() -> list[Path]:
    """Text fonts shipped inside matplotlib (DejaVu Sans/Serif/Mono, STIX, Computer Modern): installed with
    bench's dependencies, so the SYN-style domain needs no system font package."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    wanted = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmb10")
    fonts = sorted(p for p in folder.glob("*.ttf") if p.stem.split("-")[0] in wanted and "Display" not in p.stem)
    if not fonts:  # pragma: no cover - a matplotlib without its fonts
        raise FileNotFoundError(f"no fonts found in {folder}")
    return fonts


def render_digits(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """SYN-style digits (Ganin & Lempitsky 2015): each label drawn in a random font, size, position and
    rotation, random foreground/background colours, sometimes with neighbouring digits cut by the frame, and a
    random blur. (N, 3, size, size)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    fonts = font_files()
    fg, bg = contrasting_colours(rng, len(labels))
    out = np.empty((len(labels), 3, size, size), dtype=np.float32)
    canvas = 2 * size
    for i, label in enumerate(labels):
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(size * 5 // 8, size * 7 // 8)))
        mask = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = canvas / 2 + rng.uniform(-2, 2), canvas / 2 + rng.uniform(-2, 2)
        draw.text((cx, cy), str(int(label)), fill=255, font=font, anchor="mm")
        if rng.random() < 0.5:  # SYN digits come from strings: neighbours show at the borders
            gap = font.getlength("0") * rng.uniform(1.0, 1.3)
            for dx in (-gap, gap):
                draw.text((cx + dx, cy), str(int(rng.integers(10))), fill=255, font=font, anchor="mm")
        mask = mask.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, center=(cx, cy))
        lo = canvas // 2 - size // 2
        mask = mask.crop((lo, lo, lo + size, lo + size))
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
        out[i] = colourise(np.asarray(mask, dtype=np.float32)[None] / 255.0, fg[i:i + 1], bg[i:i + 1])[0]
    return out


# ---- corruptions in the spirit of MNIST-C / ImageNet-C ---------------------------------------------------------

def severities(n: int) -> np.ndarray:
    """Severity 1..5 of image i: 1 + i % 5, so a corruption domain averages over all five levels."""
    return 1 + np.arange(n) % SEVERITIES


def gaussian_noise(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = np.array([0.08, 0.12, 0.18, 0.26, 0.38], dtype=np.float32)[severities(len(grey)) - 1]  # ImageNet-C
    return np.clip(grey + rng.standard_normal(grey.shape, dtype=np.float32) * sigma[:, None, None], 0, 1)


def gaussian_blur(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Separable Gaussian blur, sigma 0.5..1.5 px (ImageNet-C's 1..6 px scaled to 28-px images)."""
    sigmas = np.array([0.5, 0.75, 1.0, 1.25, 1.5])[severities(len(grey)) - 1]
    out = np.empty_like(grey)
    for i, (img, s) in enumerate(zip(grey, sigmas)):
        r = int(np.ceil(3 * s))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        k /= k.sum()
        padded = np.pad(img, r, mode="reflect")
        rows = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, padded)
        out[i] = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, rows)
    return np.clip(out, 0, 1).astype(np.float32)


def contrast(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = np.array([0.4, 0.3, 0.2, 0.1, 0.05], dtype=np.float32)[severities(len(grey)) - 1]  # ImageNet-C
    mean = grey.mean(axis=(1, 2), keepdims=True)
    return np.clip((grey - mean) * c[:, None, None] + mean, 0, 1).astype(np.float32)


def fog(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C's fog formula, (x + c * fog) * max(x) / (max(x) + c), with a smooth random field (noise at
    2x2, 4x4 and 8x8 upsampled and summed with weights 1, 1/2, 1/4) in place of the plasma fractal."""
    n, h, w = grey.shape
    field = np.zeros_like(grey)
    for cells, weight in ((2, 1.0), (4, 0.5), (8, 0.25)):
        field += weight * resize(rng.random((n, cells, cells), dtype=np.float32), h)
    field -= field.min(axis=(1, 2), keepdims=True)
    field /= field.max(axis=(1, 2), keepdims=True) + 1e-6
    c = np.array([0.2, 0.5, 0.75, 1.0, 1.5], dtype=np.float32)[severities(n) - 1][:, None, None]
    peak = grey.max(axis=(1, 2), keepdims=True)
    return np.clip((grey + c * field) * peak / (peak + c), 0, 1).astype(np.float32)


# ---- cache -------------------------------------------------------------------------------------------------

def cache_path(dataset: str, config: dict) -> Path:
    key = hashlib.sha256(json.dumps({**config, "version": DOMAINS_VERSION}, sort_keys=True).encode()).hexdigest()
    return default_data_root() / "domains" / f"{dataset}-{key[:16]}.npz"


def cached_domains(dataset: str, config: dict, build) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``build()`` -> {domain: (float images in [0, 1], labels)}, stored as uint8 and reloaded from
    ``cache_path`` next time. Without a writable data root the domains are simply rebuilt."""
    path = cache_path(dataset, config)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            names = [str(n) for n in f["names"]]
            return {n: (f[f"x_{n}"].astype(np.float32) / 255.0, f[f"y_{n}"].astype(np.int64)) for n in names}
    domains = {n: (np.round(x * 255).astype(np.uint8), y.astype(np.int64)) for n, (x, y) in build().items()}
    arrays = {"names": np.array(list(domains))}
    for n, (x, y) in domains.items():
        arrays[f"x_{n}"], arrays[f"y_{n}"] = x, y
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError:
        pass
    # The quantised images, so a fresh build and a cache hit give identical tensors.
    return {n: (x.astype(np.float32) / 255.0, y) for n, (x, y) in domains.items()}


def as_tensors(domains: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{domain: (float32 tensor (N, C, H, W), int64 tensor (N,))} for ``Splits.extras["domains"]``."""
    import torch

    return {n: (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(np.asarray(y, np.int64)))
            for n, (x, y) in domains.items()}

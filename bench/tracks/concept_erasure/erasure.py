"""What the concept-erasure defenses share: their base class and parameters, the ESD target, trajectories of
the original model, and soft prefixes prepended to a prompt's tokens (AdvUnlearn's inner attack, the
evaluation attacks)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from bench.plugins import Defense
from bench.tracks.concept_erasure import MODALITY, TRACK
from bench.tracks.concept_erasure.model import Cond, TextToImage


@dataclasses.dataclass(frozen=True)
class ModelParams:
    # A preset of bench.tracks.concept_erasure.model (smoke|quick|full: the base model of that profile) or a local folder
    # holding a Stable Diffusion pipeline saved by diffusers.
    model: str = "quick"


MODEL_PROFILES = {"smoke": {"model": "smoke"}, "full": {"model": "full"}}


class ErasureDefense(Defense):
    """A defense of the concept-erasure track: produces a ``TextToImage`` model."""

    track = TRACK
    modality = MODALITY
    produces = "text-to-image"
    Params: ClassVar[type] = ModelParams
    profiles = MODEL_PROFILES

    def check(self) -> None:
        TextToImage.check_source(self.params.model)

    def build(self, spec):
        return TextToImage.build(self.params.model)

    def original(self, model: TextToImage, ctx) -> TextToImage:
        """The unerased model (the ``none`` defense's, from the runner's cache), copied into ``model``."""
        orig = ctx.model_of("none", model=self.params.model)
        model.load_state_dict(orig.state_dict())
        model.to(ctx.device)
        return orig


# ---- the ESD target on trajectories of the original model ---------------------------------------------------

@dataclasses.dataclass
class Pool:
    """Points x_t on DDIM trajectories of the original model, with their timestep, prompt index and targets."""

    x: torch.Tensor
    t: torch.Tensor
    prompt: torch.Tensor
    target: torch.Tensor

    def batch(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(len(self.t), (size,), generator=gen).to(self.x.device)
        return self.x[idx], self.t[idx], self.prompt[idx], self.target[idx]


@torch.no_grad()
def trajectory_pool(orig: TextToImage, prompts: list[str], per_prompt: int, steps: int, guidance: float,
                    seed: int, eta: float | None = None) -> Pool:
    """Denoise ``per_prompt`` noises per prompt with the original model under the prompt (DDIM, guidance) and
    keep every intermediate x_t. Targets: with ``eta`` the ESD target
    eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, "")); without, eps*(x_t, c) (the retain target)."""
    cond = orig.encode(prompts)
    which = torch.arange(len(prompts), device=cond.states.device).repeat_interleave(per_prompt)
    seeds = [seed * 100003 + i for i in range(len(which))]
    path = orig.sample(cond[which], seeds, steps, guidance, keep=True)
    xs, ts, ps, targets = [], [], [], []
    empty = orig.encode([""])
    for t, x in path:
        tt = torch.full((len(x),), t, device=x.device)
        c = cond[which]
        eps_c = orig.noise_pred(x, tt, c)
        if eta is None:
            target = eps_c
        else:
            eps_0 = orig.noise_pred(x, tt, Cond(empty.states.expand(len(x), -1, -1),
                                                empty.mask.expand(len(x), -1), empty.pooled.expand(len(x), -1)))
            target = eps_0 - eta * (eps_c - eps_0)
        xs.append(x), ts.append(tt), ps.append(which), targets.append(target)
    return Pool(torch.cat(xs), torch.cat(ts), torch.cat(ps), torch.cat(targets))


# ---- soft prefixes ------------------------------------------------------------------------------------------

def prefixed(model: TextToImage, prompts: list[str], prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input word embeddings, attention mask) of the prompts with ``prefix`` (B, k, D) inserted right after
    the first token ([CLS] / <|startoftext|>)."""
    ids, mask = model.tokenize(prompts)
    emb = model.word_embeddings()(ids)
    ones = torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device)
    return (torch.cat([emb[:, :1], prefix.to(emb.dtype), emb[:, 1:]], 1),
            torch.cat([mask[:, :1], ones, mask[:, 1:]], 1))


def encode_prefixed(model: TextToImage, prompts: list[str], prefix: torch.Tensor) -> Cond:
    return model.encode_embeds(*prefixed(model, prompts, prefix))


def with_token(model: TextToImage, templates: list[str], vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input word embeddings, attention mask) of templates such as "a photo of a {}" with ``vector`` (D,) -- a
    learned token, as in textual inversion -- in place of the braces: [CLS]/<bos>, the tokens before, the vector,
    the tokens after, [SEP]/<eos>."""
    tok = model.tokenizer
    ends = tok("", add_special_tokens=True)["input_ids"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else ends[-1]
    rows, slots = [], []
    for template in templates:
        before, after = (part.strip() for part in template.split("{}", 1))
        b = tok(before, add_special_tokens=False)["input_ids"] if before else []
        a = tok(after, add_special_tokens=False)["input_ids"] if after else []
        ids = (ends[:1] + b + [pad] + a + ends[1:])[:model.max_length]
        rows.append(ids), slots.append(min(1 + len(b), len(ids) - 1))
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows], device=model.device)
    emb = model.word_embeddings()(ids)
    slot = torch.zeros(emb.shape[:2], dtype=torch.bool, device=emb.device)
    slot[torch.arange(len(rows)), torch.tensor(slots)] = True
    emb = torch.where(slot[..., None], vector.to(emb.dtype).expand_as(emb), emb)
    return emb, mask


def encode_with_token(model: TextToImage, templates: list[str], vector: torch.Tensor) -> Cond:
    return model.encode_embeds(*with_token(model, templates, vector))


def random_token_embeddings(model: TextToImage, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """(n, k, D) embeddings of random ordinary vocabulary tokens: an attack's starting prefix."""
    vocab = model.word_embeddings().num_embeddings
    ids = torch.randint(min(1000, vocab // 2), vocab, (n, k), generator=gen)  # BERT: past [unused*]
    return model.word_embeddings().weight[ids.to(model.device)].detach().clone()


def denoise_loss(model: TextToImage, x: torch.Tensor, t: torch.Tensor, cond: Cond, target: torch.Tensor,
                 per_example: bool = False) -> torch.Tensor:
    err = (model.noise_pred(x, t, cond) - target).pow(2).flatten(1).mean(1)
    return err if per_example else err.mean()

"""Concept inversion (Pham et al., ICLR'24, "Circumventing concept erasure methods for text-to-image generative
models"): the strongest probe of what an erasure left in the model."""
from __future__ import annotations

import dataclasses

import torch

from bench.tracks.concept_erasure.captions import PLAIN_TEMPLATES, TEMPLATES
from bench.tracks.concept_erasure.erasure import encode_with_token
from bench.tracks.concept_erasure.evaluation import (
    ATTACK_PROFILES,
    AttackParams,
    PromptAttack,
    noised,
)

PLACEHOLDER = "<v*>"


@dataclasses.dataclass(frozen=True)
class InversionParams(AttackParams):
    prefix_tokens: int = 1  # one learned token
    attack_steps: int = 200
    lr: float = 5e-3  # textual inversion's 5e-3
    batch_size: int = 16
    images: int = 64  # real training images of the concept it learns from
    init_word: str = "item"
    check_every: int = 50


INVERSION_PROFILES = {"smoke": {**ATTACK_PROFILES["smoke"], "attack_steps": 6, "check_every": 3, "images": 8,
                                "batch_size": 4},
                      "full": {**ATTACK_PROFILES["full"], "attack_steps": 500, "check_every": 100,
                               "images": 256, "batch_size": 32}}


class ConceptInversion(PromptAttack):
    """One new token embedding v*, learned against the *erased* model by textual inversion on real images of the
    concept: Adam on MSE(eps(x_t, t, E(template(v*))), noise), x_t a real training image of the concept noised at
    a random t, the template drawn from the training captions' templates ("a photo of a {}", "{}", ...), v*
    started at the embedding of ``init_word``. The erased model's own weights are fixed; only v* is learned.
    Evaluation: the plain prompts' templates with v* in place of the concept's name, each with seeds 0..n-1,
    judged with the protocol of ``PromptAttack`` (the plain prompt is the first candidate, v* is judged every
    ``check_every`` steps, a case stops at its first success).

    What it measures: whether the erased model can still draw the concept when given a word for it -- Pham et
    al. recover erased concepts from ESD, SLD, UCE, AC, SA, FMN and NP this way. No user can type v*: an
    upper-bound probe, like the soft prompt, but with one token learned from real images instead of k tokens
    per case fitted to one reference image.

    Defaults: 200 steps of batch 16 over 64 real training images, lr 5e-3, init "item", judged every 50 steps
    (quick); full: 500 steps of 32 over 256 images, judged every 100. Departures: Pham et al. train the token
    on SD v1.4 with textual inversion's settings (5,000 steps in its paper, batch 4 per GPU, 3-25 images);
    here the tiny model needs far fewer steps; the first 4 plain prompts' templates are evaluated.
    """

    Params = InversionParams
    profiles = INVERSION_PROFILES
    kind = "one token embedding learned by textual inversion on real images of the concept"
    probe = True

    def describe_budget(self) -> str:
        p = self.params
        return (f"one learned token (textual inversion on {p.images} real training images of the concept, Adam lr "
                f"{p.lr:g} x {p.attack_steps} steps of batch {p.batch_size}, init {p.init_word!r}), judged every "
                f"{p.check_every} steps")

    def attack(self, model, prompts, x_ref, gen, book, data):
        p = self.params
        c = data.extras["concept_class"]
        real = data.train_x[data.train_y == c][:p.images]
        x0 = model.to_latents(real)
        with torch.no_grad():
            ids, mask = model.tokenize([p.init_word])
            start = model.word_embeddings()(ids[0, 1:int(mask[0].sum()) - 1]).mean(0)
        vector = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([vector], lr=p.lr)
        case_templates = [PLAIN_TEMPLATES[k] for k in range(p.prompts) for _ in range(p.seeds)]
        for step in range(1, p.attack_steps + 1):
            idx = torch.randint(len(x0), (p.batch_size,), generator=gen).to(x0.device)
            templates = [TEMPLATES[int(i)] for i in torch.randint(len(TEMPLATES), (p.batch_size,), generator=gen)]
            x_t, t, noise = noised(model, x0[idx], gen)
            loss = (model.noise_pred(x_t, t, encode_with_token(model, templates, vector)) - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[vector])
            opt.step()
            book.trace.append(loss.item())
            if step % p.check_every == 0 or step == p.attack_steps:
                act = book.active()
                if not len(act):
                    break
                chosen = [case_templates[i] for i in act.tolist()]
                with torch.no_grad():
                    cond = encode_with_token(model, chosen, vector.detach())
                book.check(step, act, [t.format(PLACEHOLDER) for t in chosen], cond=cond)

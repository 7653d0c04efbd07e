"""Fine-tuning loop shared by the text defenses: AdamW with linear decay, early stopping on validation accuracy
(the best epoch's weights are kept), and optional one-step (or k-step) L2 PGD in word-embedding space with the
loss on the perturbed input only (MVP+Adv; the adversarial-training baseline for MLP-FT). The PGD ball is per
token, of radius eps times that token's embedding norm (FreeLB-style), so eps is relative to the backbone."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.context import TrainContext
from bench.plugins import Splits
from bench.tracks.text_robustness.backbone import DEFAULT_BACKBONE

# The adversarial baselines' relative radii (per token, times the token's embedding norm), each chosen on
# rotten-tomatoes validation data by one rule over 3 seeds (benchmarks/text_adv_radius.py: the largest eps whose
# mean accuracy is within 5 points of eps 0 and whose mean majority rate is < 70 %). MVP's margins in embedding
# space are smaller than MLP-FT's, so the rule gives it a smaller radius (figures in that docstring).
ADV_EPS_MLP_FT = 0.02
ADV_EPS_MVP = 0.0025

# One set of budgets for every text defense, so MVP and MLP-FT are always compared at equal cost.
PROFILES = {"smoke": {"epochs": 1, "batch_size": 16, "max_length": 48, "lr": 1e-4},
            "full": {"epochs": 5, "lr": 2e-5}}


@dataclass(frozen=True)
class TextTrainParams:
    backbone: str = DEFAULT_BACKBONE  # "minilm" (embedded) or a local Hugging Face masked-LM folder / hub id
    max_length: int = 128  # tokens, including template and special tokens
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    adv_eps: float = 0.0  # 0 disables adversarial training; the radius is relative (see adv_ball)
    adv_ball: str = "token"  # "token": per-token L2 ball of radius eps * ||e_token||; "sequence": one L2 ball of eps
    adv_steps: int = 1
    adv_step_ratio: float = 1.5  # step size = ratio * radius (MVP+Adv: 1.5 eps, one step)


def adv_radius(embeds: torch.Tensor, keep: torch.Tensor, p: TextTrainParams) -> torch.Tensor:
    """The radius of each token's ball (N, L, 1): eps times the token's own embedding norm ("token", FreeLB-
    style: a fixed eps would be a huge move for a short-norm embedding and nothing for a long one; MiniLM's
    norms are ~1.1, so eps 1.0 over a whole sequence could replace a sentiment word), zero on padding."""
    return p.adv_eps * embeds.detach().norm(dim=-1, keepdim=True) * keep


def embedding_pgd(model, batch, embeds: torch.Tensor, y: torch.Tensor, p: TextTrainParams) -> torch.Tensor:
    """A perturbation of the (non-padding) word embeddings that raises the loss: ``adv_steps`` normalised-
    gradient steps from zero, projected each step onto the ball of ``adv_ball`` (per token by default)."""
    if p.adv_ball not in ("token", "sequence"):
        raise ValueError(f"adv_ball must be 'token' or 'sequence', not {p.adv_ball!r}")
    keep = batch.mask.unsqueeze(-1).to(embeds.dtype)
    radius = adv_radius(embeds, keep, p)
    delta = torch.zeros_like(embeds, requires_grad=True)
    base = embeds.detach()
    for _ in range(p.adv_steps):
        loss = F.cross_entropy(model.logits_from(batch, base + delta), y)
        grad, = torch.autograd.grad(loss, delta)
        grad = grad * keep
        if p.adv_ball == "token":
            step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta = delta.detach() + p.adv_step_ratio * radius * step
            scale = (radius / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            delta = (delta * scale).requires_grad_(True)
        else:
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
            delta = delta.detach() + p.adv_step_ratio * p.adv_eps * step
            scale = (p.adv_eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            delta = (delta * scale.view(-1, 1, 1)).requires_grad_(True)
    return delta.detach()


def text_identity(backbone: str) -> dict:
    """What a text defense adds to its records and cache key: its backbone's masked-LM gate."""
    from bench.tracks.text_robustness.pretrain_mlm import backbone_gate

    return {"masked_lm": backbone_gate(backbone)}


@torch.no_grad()
def accuracy(model, x, y, batch_size: int) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    return correct / max(1, len(y))


def fine_tune(model, data: Splits, ctx: TrainContext, p: TextTrainParams, num_templates: int = 0,
              desc: str = "fine-tune") -> None:
    """Train ``model`` (a ``bench.tracks.text_robustness.models.TextModel``) in place. ``num_templates`` > 0: one random template
    per example and step (MVP), drawn from ``ctx.generator``."""
    model.to(ctx.device)
    n = len(data.train_x)
    steps = p.epochs * -(-n // p.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, steps)))
    val_x, val_y = data.extras.get("val_x"), data.extras.get("val_y")
    best, best_acc = None, -1.0
    for epoch in range(p.epochs):
        model.train()
        total = 0.0
        bar = ctx.progress(ctx.batches(data.train_x, data.train_y, p.batch_size), total=-(-n // p.batch_size),
                           desc=f"{desc} epoch {epoch + 1}/{p.epochs}")
        for texts, y in bar:
            which = torch.randint(num_templates, (len(y),), generator=ctx.generator) if num_templates else None
            batch = model.prepare(texts, which)
            embeds = model.embed(batch)
            if p.adv_eps > 0:
                embeds = embeds + embedding_pgd(model, batch, embeds, y, p)
            loss = F.cross_entropy(model.logits_from(batch, embeds), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(y)
        entry = {"epoch": epoch + 1, "loss": total / n}
        if val_x is not None and len(val_x):
            entry["val_acc"] = accuracy(model, val_x, val_y, 2 * p.batch_size)
            if entry["val_acc"] > best_acc:  # early stopping: keep the best epoch's weights
                best_acc = entry["val_acc"]
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ctx.log(**entry)
    if best is not None:
        model.load_state_dict(best)
    model.eval()

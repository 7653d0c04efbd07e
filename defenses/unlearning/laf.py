"""LAF: Label-Agnostic Forgetting (Shen et al., ICLR'24), and LAF+R with a supervised repair of the head."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.tracks.image_robustness.training import OptimParams, train_classifier
from bench.tracks.unlearning.scenarios import (
    TrainParams,
    UnlearningDefense,
    forget_remain,
    method_profiles,
    split_head,
    train_subset,
)

# The paper's temperature per task: 5 for random data removal, 20 for class and noisy-label removal.
TAU_BY_KIND = {"random": 5.0, "class": 20.0, "noisy": 20.0}


@dataclass(frozen=True)
class Params(TrainParams):
    vae_epochs: int = 10
    vae_lr: float = 1e-3
    vae_latent: int = 8  # 8 for CNNs, 16 for ResNets in the paper
    kl_weight: float = 0.025
    unlearn_epochs: int = 1
    ue_lr: float = 5e-5  # extractor-unlearning step
    ra_lr: float = 1e-4  # representation-alignment step
    tau: float | None = None  # None: the paper's value for the scenario's kind (TAU_BY_KIND)


@dataclass(frozen=True)
class RepairParams(Params):
    repair_n: int = 500  # labelled remaining samples for the head repair
    repair_epochs: int = 10
    repair_lr: float = 1e-3


class VAE(nn.Module):
    """Encoder dim-128-32-(mu, logvar), decoder latent-32-128-dim (the paper's sizes for 256-d embeddings)."""

    def __init__(self, dim: int, latent: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                                     nn.Linear(32, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 32), nn.ReLU(), nn.Linear(32, 128), nn.ReLU(),
                                     nn.Linear(128, dim))

    def forward(self, z: torch.Tensor, noise: torch.Tensor | None = None):
        mu, logvar = self.encoder(z).chunk(2, dim=1)
        code = mu if noise is None else mu + noise * (0.5 * logvar).exp()
        return self.decoder(code), mu, logvar

    def error(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample reconstruction error (mean squared, decoding the posterior mean: deterministic)."""
        return (self(z)[0] - z).pow(2).mean(dim=1)


def train_vae(z: torch.Tensor, p: Params, ctx, desc: str) -> VAE:
    """Reconstruction (squared error summed over dimensions) + kl_weight * KL, Adam, on fixed embeddings."""
    vae = VAE(z.shape[1], p.vae_latent).to(ctx.device)
    opt = torch.optim.Adam(vae.parameters(), lr=p.vae_lr)
    for epoch in range(p.vae_epochs):
        total = 0.0
        for (batch,) in _batches(ctx, p.batch_size, z):
            noise = torch.randn(len(batch), p.vae_latent, generator=ctx.generator).to(ctx.device)
            recon, mu, logvar = vae(batch, noise)
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
            loss = ((recon - batch).pow(2).sum(dim=1) + p.kl_weight * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        ctx.log(stage=desc, epoch=epoch + 1, loss=total / len(z))
    vae.eval()
    for q in vae.parameters():
        q.requires_grad_(False)
    return vae


@torch.no_grad()
def embed(g: nn.Module, x: torch.Tensor, ctx, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([g(x[i:i + batch_size].to(ctx.device)) for i in range(0, len(x), batch_size)])


def _batches(ctx, batch_size: int, *tensors: torch.Tensor):
    order = torch.randperm(len(tensors[0]), generator=ctx.generator)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield tuple(t[idx.to(t.device)].to(ctx.device) for t in tensors)


def _squash(rho: torch.Tensor) -> torch.Tensor:
    return torch.exp(rho / (rho + 1))


class LAF(UnlearningDefense):
    """Label-Agnostic Forgetting (Shen, Zhang, Zhao, Bialkowski, Chen & Xu, ICLR'24). Uses no labels at all.

    The model is f = h(g(x)) with g the extractor up to the 256-d embedding and h the last linear layer.
    Stage 1 (g frozen at the original): VAE_r on the embeddings of the remaining data, VAE_f on those of the
    forget data (encoder 256-128-32-(mu, logvar), latent 8; squared error + 0.025 KL; Adam 1e-3, 10 epochs).
    Stage 2, per pair of (forget, remaining) batches, two steps with two Adam optimisers on g:
    - extractor unlearning (lr 5e-5): rho = reconstruction error of g(x) under the VAE of x's set,
      L_UE = sum_remain exp(rho/(rho+1)) - sum_forget exp(rho/(rho+1));
    - representation alignment (lr 1e-4) against the frozen original extractor g0, d = 1 - cos(g(x), g0(x)):
      L_RA = sum_{i in remain} [d_i - log sum_{j in forget} exp(d_j / tau)], tau 5 (random removal) or 20
      (class and noisy-label removal).
    h is unchanged. One epoch = one pass over the remaining data, each batch paired with the next forget
    batch (cycling through the smaller forget set).

    Defaults: the paper's (above); ``unlearn_epochs`` 1 (quick; 3 in full), batch 64 (256 in full).
    Departures: rho is the mean (not sum) squared error over embedding dimensions, decoding the posterior mean,
    so rho/(rho+1) does not saturate; the VAEs train with the method's batch size; the number of stage-2
    epochs is ours (the paper tunes it).
    """

    Params = Params
    profiles = method_profiles(full={"unlearn_epochs": 3})

    def fit(self, model, data, ctx) -> None:
        original = self.start_from_original(model, ctx)
        self.unlearn(model, original, data, ctx)

    def unlearn(self, model, original, data, ctx) -> None:
        """Stages 1 and 2 on ``model`` (a copy of ``original``); reads ``data.train_x`` and the forget set only."""
        p = self.params
        forget, remain = forget_remain(data)
        tau = p.tau if p.tau is not None else TAU_BY_KIND[data.extras["scenario"]["kind"]]
        ctx.log(tau=tau)
        g, _ = split_head(model)
        g0 = copy.deepcopy(split_head(original)[0]).to(ctx.device).eval()
        x_remain, x_forget = data.train_x[remain], data.train_x[forget]
        z0_remain, z0_forget = embed(g0, x_remain, ctx), embed(g0, x_forget, ctx)
        vae_remain = train_vae(z0_remain, p, ctx, "vae-remain")
        vae_forget = train_vae(z0_forget, p, ctx, "vae-forget")

        params = [q for q in g.parameters()]
        opt_ue = torch.optim.Adam(params, lr=p.ue_lr)
        opt_ra = torch.optim.Adam(params, lr=p.ra_lr)
        model.train()
        for epoch in range(p.unlearn_epochs):
            remain_order = torch.randperm(len(remain), generator=ctx.generator)
            forget_order = torch.randperm(len(forget), generator=ctx.generator)
            steps = -(-len(remain) // p.batch_size)
            sums = torch.zeros(2, device=ctx.device)
            for i in ctx.progress(range(steps), desc=f"{self.name} epoch {epoch + 1}/{p.unlearn_epochs}"):
                ri = remain_order[i * p.batch_size:(i + 1) * p.batch_size]
                start = (i * p.batch_size) % len(forget)  # the forget set is the smaller one: cycle through it
                fi = forget_order[start:start + p.batch_size]
                xf, xr = x_forget[fi].to(ctx.device), x_remain[ri].to(ctx.device)

                loss_ue = _squash(vae_remain.error(g(xr))).sum() - _squash(vae_forget.error(g(xf))).sum()
                opt_ue.zero_grad(set_to_none=True)
                loss_ue.backward()
                opt_ue.step()

                d_remain = 1 - F.cosine_similarity(g(xr), z0_remain[ri.to(ctx.device)], dim=1)
                d_forget = 1 - F.cosine_similarity(g(xf), z0_forget[fi.to(ctx.device)], dim=1)
                loss_ra = (d_remain - torch.logsumexp(d_forget / tau, dim=0)).sum()
                opt_ra.zero_grad(set_to_none=True)
                loss_ra.backward()
                opt_ra.step()
                sums += torch.stack([loss_ue.detach(), loss_ra.detach()])
            ctx.log(stage="unlearn", epoch=epoch + 1, loss_ue=(sums[0] / steps).item(),
                    loss_ra=(sums[1] / steps).item())
        model.eval()


class LAFR(LAF):
    """LAF+R (Shen et al., ICLR'24): LAF, then a supervised repair of the head h with cross-entropy on a small
    labelled subset of the remaining data (``repair_n`` samples drawn at random; g frozen, h trained on their
    embeddings). The only labels it reads are those ``repair_n``.

    Defaults: LAF's, plus ``repair_n`` 500, Adam 1e-3 (cosine), ``repair_epochs`` 10, batch 64.
    Departures: the paper fixes no repair subset size or schedule; these are ours.
    """

    Params = RepairParams

    def fit(self, model, data, ctx) -> None:
        original = self.start_from_original(model, ctx)
        self.unlearn(model, original, data, ctx)
        p = self.params
        _, remain = forget_remain(data)
        chosen = remain[torch.randperm(len(remain), generator=ctx.generator)[:p.repair_n]]
        g, h = split_head(model)
        z = embed(g.eval(), data.train_x[chosen], ctx).cpu()
        labelled = train_subset(data, chosen)
        labelled = dataclasses.replace(labelled, train_x=z)
        repair = OptimParams(epochs=p.repair_epochs, batch_size=p.batch_size, lr=p.repair_lr)
        train_classifier(h, labelled, ctx, repair, desc=f"{self.name} repair")
        model.eval()

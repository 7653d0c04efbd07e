"""LiRPA certified training: CROWN-IBP (Zhang et al., "Towards Stable and Efficient Training of Verifiably
Robust Neural Networks", ICLR 2020) through auto_LiRPA (Xu et al., "Automatic Perturbation Analysis for Scalable
Certified Robustness and Beyond", NeurIPS 2020), with the options of Shi et al. ("Fast Certified Robust Training
with Short Warmup", NeurIPS 2021)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins import DataSpec, Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams, make_optimizer

SCHED_MID = 0.4  # the polynomial part of the eps ramp covers its first 40% (auto_LiRPA's "smoothed" schedule)
SCHED_POWER = 4.0  # ... and grows like t^4
REG_WEIGHT = 0.5  # Shi et al.: warm-up regularisers weighted 0.5 * (1 - eps_t / eps_max)
REG_TOLERANCE = 0.5  # Shi et al.'s tau
BETA_OFF = 1e-5  # below this CROWN-IBP weight the CROWN pass is skipped (its term vanishes)


@dataclass(frozen=True)
class LiRPAParams(OptimParams):
    arch: str = "cnn-small"
    epochs: int = 20
    batch_size: int = 256
    lr: float = 5e-4
    eps: float | None = None  # training eps; None: train_eps_factor x the dataset's first Linf budget
    train_eps_factor: float = 1.1
    bound: Literal["crown-ibp", "ibp"] = "crown-ibp"
    # CROWN-IBP weight beta (at eps_t = 0, at eps_t = eps_max), linear in eps_t in between; the default gives
    # beta = (eps_max - eps_t) / eps_max (the paper's "1 -> 0"). Ignored when bound = "ibp".
    beta_schedule: tuple[float, float] = (1.0, 0.0)
    sched_start: float = 0.1  # fraction of all training batches trained at eps 0 (natural CE)
    sched_length: float = 0.5  # fraction of all training batches over which eps ramps up to eps_max
    loss_fusion: bool = False  # bound the CE itself (one output) instead of the K-1 margins
    ibp_init: bool = False  # Shi et al.: weights ~ N(0, (sqrt(2 pi) / fan_in)^2), all but the last layer
    warmup_reg: bool = False  # Shi et al.: tightness + ReLU-balance regularisers during the ramp
    grad_clip: float | None = 10.0  # max global gradient norm (Shi et al., auto_LiRPA's examples)
    max_train_batches: int | None = None  # CPU budget: at most this many batches per epoch (None: all)
    # At least this many training batches in all: a small dataset gets more epochs (bound-based training
    # collapses to a constant classifier when the eps ramp is only a few hundred steps long).
    min_train_batches: int | None = None


def smoothed_eps(step: int, start: int, length: int, eps_max: float, mid: float = SCHED_MID,
                 power: float = SCHED_POWER) -> float:
    """eps at training batch ``step`` (0-based): 0 up to ``start``; then t^power growth over the first ``mid``
    of the ramp, then linear up to ``eps_max`` at ``start + length``, and eps_max after. The junction value
    v = mid * eps_max / (power - (power - 1) * mid) makes the two pieces meet with equal slope (C1)."""
    if step <= start or eps_max == 0:
        return 0.0
    if step >= start + length:
        return float(eps_max)
    t = (step - start) / length  # in (0, 1)
    v = mid * eps_max / (power - (power - 1) * mid)
    if t <= mid:
        return float(v * (t / mid) ** power)
    return float(v + (eps_max - v) * (t - mid) / (1 - mid))


def ibp_initialise(model: nn.Module) -> None:
    """Shi et al.'s IBP initialisation: every Linear/Conv2d weight but the last layer's drawn from
    N(0, sigma^2), sigma = sqrt(2 pi) / fan_in, so interval widths neither explode nor vanish with depth at
    initialisation. Biases keep their initialisation. Uses the global RNG (seeded by the runner before build)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for layer in layers[:-1]:
            fan_in = layer.weight[0].numel()
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2 * math.pi) / fan_in)


def worst_case_ce(margin_lb: torch.Tensor) -> torch.Tensor:
    """CE of the worst-case logits [0, -m_lb_1, ..., -m_lb_{K-1}] against label 0 (mean over the batch): an
    upper bound of the CE at every input of the perturbation set."""
    logits = torch.cat([margin_lb.new_zeros(len(margin_lb), 1), -margin_lb], dim=1)
    return F.cross_entropy(logits, margin_lb.new_zeros(len(margin_lb), dtype=torch.long))


def warmup_regulariser(bounded, tol: float = REG_TOLERANCE) -> torch.Tensor:
    """Shi et al.'s warm-up regularisers from the interval bounds of the last bound computation.

    For each ReLU with pre-activation bounds [l, u] (centre c, radius r = (u - l) / 2), and r_0 the mean input
    radius: L_tight = mean_layers ReLU(tau - r_0 / mean(r)) / tau (interval growth through the layers);
    L_relu = mean_layers [ReLU(tau - rho_mean) + ReLU(tau - rho_var)] / tau, where rho_mean = min(a, 1/a) for
    a = E[c 1(l > 0)] / -E[c 1(u < 0)] and rho_var likewise for the summed squared deviations of c from its mean
    over the active (l > 0) and inactive (u < 0) neurons (balance of active and dead ReLUs). Returns
    L_tight + L_relu; layers whose balance is undefined (no active or no inactive neuron) are left out of it."""
    root = bounded[bounded.root_name[0]]
    r0 = ((root.upper - root.lower) / 2).mean()
    tight, balance = [], []
    for node in bounded._modules.values():
        if type(node).__name__ != "BoundRelu":
            continue
        pre = node.inputs[0]
        lower, upper = pre.lower, pre.upper
        r = ((upper - lower) / 2).mean()
        tight.append(F.relu(tol - r0 / r.clamp(min=1e-12)) / tol)
        c = (upper + lower) / 2
        active, inactive = (lower > 0).to(c.dtype), (upper < 0).to(c.dtype)
        a = (c * active).mean() / -(c * inactive).mean()
        dev = (c - c.mean()) ** 2
        v = (dev * active).sum() / (dev * inactive).sum()
        a = torch.minimum(a, 1 / a.clamp(min=1e-12))
        v = torch.minimum(v, 1 / v.clamp(min=1e-12))
        term = (F.relu(tol - a) + F.relu(tol - v)) / tol
        if torch.isfinite(term):
            balance.append(term)
    zero = r0.new_zeros(())
    return (torch.stack(tight).mean() if tight else zero) + (torch.stack(balance).mean() if balance else zero)


class _FusedCE(nn.Module):
    """sum_j exp(z_j - z_y): its log is CE(z, y), so an upper bound of it bounds the CE directly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.exp(z - z.gather(1, y.unsqueeze(1))).sum(dim=1, keepdim=True)


class LiRPA(ClassifierDefense):
    """CROWN-IBP certified training (Zhang et al., ICLR 2020) through auto_LiRPA (Xu et al., NeurIPS 2020).

    Threat model: Linf, trained at eps_max = ``train_eps_factor`` (1.1) x the dataset's first Linf budget unless
    ``eps`` is set (both train and test eps go into the training log); perturbations stay inside the data box.

    Per batch: eps_t from the smoothed schedule (0 for the first ``sched_start`` of all batches, a t^4 ramp over
    the first 40% of the next ``sched_length``, then linear to eps_max, updated every batch). While eps_t = 0 the
    loss is the natural CE. Then the margins m = C f(x') (rows e_y - e_j) are lower-bounded over the eps_t-box by
    IBP and, for ``bound = "crown-ibp"``, by CROWN-IBP (IBP intermediate bounds, a CROWN pass for the last layer),
    mixed as m_lb = beta m_CROWN-IBP + (1 - beta) m_IBP with beta = (eps_max - eps_t) / eps_max by default
    (``beta_schedule``); the loss is the CE of the worst-case logits [0, -m_lb] with label 0.
    Options (Shi et al., NeurIPS 2021): ``ibp_init`` (weights ~ N(0, (sqrt(2 pi)/fan_in)^2), all but the last
    layer), ``warmup_reg`` (bound-tightness and ReLU-balance regularisers, see ``warmup_regulariser``, weighted
    0.5 (1 - eps_t/eps_max) while eps_t > 0), and ``arch = "cnn-bn"`` (BatchNorm after every conv).
    ``loss_fusion`` bounds log sum_j exp(z_j - z_y) = CE(z, y) as one output (a cost independent of the number of
    classes) instead of the K-1 margins.

    Defaults: cnn-small, Adam 5e-4 (cosine), batch 256, gradient-norm clip 10, CROWN-IBP 1 -> 0, schedule fractions
    0.1 / 0.5 (eps 0 for the first 10% of batches, ramp over the next 50%, eps_max for the last 40%).
    Profiles: smoke (uci-digits' 512 images, IBP, 20 epochs of 8 batches of 64, lr 1e-2, with ``ibp_init`` and
    ``warmup_reg``, which keep such a short run from collapsing to a constant classifier; ~2 s); quick (CPU: IBP,
    cnn-small, lr 1e-3, 10 epochs of at most 150 batches of 256, i.e. a random 38,400 of Fashion-MNIST's 60,000
    per epoch; ~110 s on 2 cores, where an IBP step costs ~0.07 s and a CROWN-IBP step ~0.5 s; at least 1,500
    batches in all, so a small dataset such as MNIST-5k gets more epochs instead of collapsing); full (GPU:
    CROWN-IBP, cnn, 20 epochs of all 235 batches: 66 s on one H200. A 60-epoch run reached higher IBP-verified
    accuracy, but auto_LiRPA 0.3's CROWN failed on that model, so the profile stays at the verified 20).

    Departures from the papers:
    - Much shorter schedules (CROWN-IBP: 200 epochs on MNIST with the ramp over epochs 10-60; Shi et al.: 70) and
      ramp fractions instead of epochs so every profile gets the same shape; the quick profile sees a random 64%
      of the training set per epoch (``max_train_batches``, a CPU budget) and trains with IBP only (CROWN-IBP is
      ~7x the cost of IBP per step on these CPUs).
    - No kappa mixing with the natural CE (CROWN-IBP mixes kappa CE_nat + (1 - kappa) CE_rob): the robust loss
      alone once eps_t > 0, as in auto_LiRPA's training examples.
    - Cosine learning-rate decay (the suite's shared optimiser) instead of the papers' step decays.
    - Smaller models than the papers' (cnn-small / cnn, not the CROWN-IBP "DM-large" or Shi et al.'s CNN-7).
    - BatchNorm (``cnn-bn``): bounds use the clean batch's statistics in training and the running statistics at
      test time, as in auto_LiRPA 0.3 and Shi et al.; auto_LiRPA 0.3 keeps its own copy of the running
      statistics, which are copied back into the model after training.
    - ``loss_fusion`` does not use auto_LiRPA 0.3's dedicated IBP fusion (``bound_opts={"loss_fusion": True}``):
      on torch 2.x it returned bounds below the clean CE (unsound). The fused CE is bounded by plain bound
      propagation instead: sound, but looser than the margin loss (the last layer is not merged with the label
      subtraction): it trades tightness for speed (a CROWN-IBP batch 4.4x faster on the CPU, 1.1x on an H200,
      with 10 classes; no gain with IBP).
    - ``ibp_init`` does not rescale residual branches (the suite's certified-training archs have none).
    """

    track = TRACK
    Params = LiRPAParams
    reported = {"mnist": {  # verified accuracy = 1 - verified error; CROWN-IBP's large model, 200 epochs
        "verified linf 0.3": (0.9298, "Zhang et al. ICLR 2020, abstract: 7.02% verified error at eps 0.3"),
        "verified linf 0.4": (0.8754, "Zhang et al. ICLR 2020: 12.46% verified error at eps 0.4")}}
    profiles = {
        "smoke": {"bound": "ibp", "epochs": 20, "batch_size": 64, "lr": 1e-2, "sched_start": 0.05,
                  "sched_length": 0.4, "ibp_init": True, "warmup_reg": True},
        "quick": {"bound": "ibp", "epochs": 10, "max_train_batches": 150, "min_train_batches": 1500, "lr": 1e-3},
        "full": {"bound": "crown-ibp", "arch": "cnn", "epochs": 20, "batch_size": 256},
    }

    def build(self, spec: DataSpec):
        model = super().build(spec)
        if self.params.ibp_init:
            ibp_initialise(model)
        return model

    def fit(self, model, data: Splits, ctx) -> None:
        from bench.tracks.image_robustness import lirpa_compat as lc

        p = self.params
        test_eps = ctx.epsilons["linf"][0]
        eps_max = float(p.eps) if p.eps is not None else test_eps * p.train_eps_factor
        lirpa = lc.import_auto_lirpa()
        model.to(ctx.device)
        spec = data.spec
        n = len(data.train_x)
        per_epoch = -(-n // p.batch_size)
        if p.max_train_batches is not None:
            per_epoch = max(1, min(per_epoch, p.max_train_batches))
        epochs = max(p.epochs, -(-(p.min_train_batches or 0) // per_epoch))
        total = epochs * per_epoch
        ctx.log(train_eps=eps_max, test_eps=test_eps, epochs=epochs, batches_per_epoch=per_epoch)
        start, length = round(p.sched_start * total), max(1, round(p.sched_length * total))
        opt, sched = make_optimizer(model, p, total)

        if p.loss_fusion:
            fused = _FusedCE(model)
            dummy = (torch.zeros(1, *spec.input_shape, device=ctx.device),
                     torch.zeros(1, dtype=torch.long, device=ctx.device))
            model.eval()
            with lc.not_certifiable_on_failure(model, "conversion (loss fusion)"):
                bounded = lirpa.BoundedModule(fused.eval(), dummy, device=ctx.device)
            prefix = "model."
        else:
            bounded = lc.build_bounded(model, spec.input_shape, ctx.device)
            prefix = ""
        lc.sync_buffers(bounded, model, prefix=prefix)

        step = 0
        for epoch in range(epochs):
            model.train()
            bounded.train()
            sums = {"loss": torch.zeros((), device=ctx.device), "reg": torch.zeros((), device=ctx.device),
                    "correct": torch.zeros((), device=ctx.device), "verified": torch.zeros((), device=ctx.device)}
            seen = robust_seen = 0
            eps_t = beta = 0.0
            bar = ctx.progress(ctx.batches(data.train_x, data.train_y, p.batch_size), total=per_epoch,
                               desc=f"{self.name} epoch {epoch + 1}/{epochs}")
            for i, (x, y) in enumerate(bar):
                if i >= per_epoch:
                    break
                eps_t = smoothed_eps(step, start, length, eps_max)
                beta = self._beta(eps_t, eps_max)
                out = bounded(x, y) if p.loss_fusion else bounded(x)  # clean pass: sets BatchNorm batch stats
                if p.loss_fusion:
                    loss = torch.log(out).mean()
                else:
                    loss = F.cross_entropy(out, y)
                    sums["correct"] += (out.argmax(1) == y).sum()
                if eps_t > 0:
                    if p.loss_fusion:
                        loss = self._fused_loss(lirpa, bounded, x, y, eps_t, beta, spec.bounds)
                    else:
                        lb = self._margin_lb(lc, bounded, x, y, eps_t, beta, spec)
                        loss = worst_case_ce(lb)
                        sums["verified"] += (lb > 0).all(dim=1).sum()
                        robust_seen += len(y)
                    if p.warmup_reg:
                        reg = REG_WEIGHT * (1 - eps_t / eps_max) * warmup_regulariser(bounded)
                        loss = loss + reg
                        sums["reg"] += reg.detach() * len(y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if p.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
                opt.step()
                sched.step()
                sums["loss"] += loss.detach() * len(y)
                seen += len(y)
                step += 1
            entry = {"epoch": epoch + 1, "loss": (sums["loss"] / seen).item(), "eps": eps_t, "lr": sched.get_last_lr()[0]}
            if p.bound == "crown-ibp":
                entry["beta"] = beta
            if not p.loss_fusion:
                entry["train_acc"] = (sums["correct"] / seen).item()
                if robust_seen:  # at each batch's own eps_t
                    entry["train_verified"] = (sums["verified"] / robust_seen).item()
            if p.warmup_reg:
                entry["reg"] = (sums["reg"] / seen).item()
            ctx.log(**entry)
        lc.sync_buffers(bounded, model, to_model=True, prefix=prefix)  # BatchNorm running statistics
        model.eval()

    def _beta(self, eps_t: float, eps_max: float) -> float:
        if self.params.bound == "ibp" or eps_max == 0:
            return 0.0
        at_zero, at_max = self.params.beta_schedule
        return at_max + (at_zero - at_max) * (eps_max - eps_t) / eps_max

    def _margin_lb(self, lc, bounded, x, y, eps_t, beta, spec) -> torch.Tensor:
        if beta <= BETA_OFF:
            return lc.margin_lower_bounds(bounded, x, y, eps_t, "IBP", spec.bounds, spec.num_classes)
        crown = lc.margin_lower_bounds(bounded, x, y, eps_t, "CROWN-IBP", spec.bounds, spec.num_classes)
        return beta * crown + (1 - beta) * bounded.ibp_lower  # the IBP pass CROWN-IBP ran first

    def _fused_loss(self, lirpa, bounded, x, y, eps_t, beta, bounds) -> torch.Tensor:
        from bench.tracks.image_robustness.lirpa_compat import linf_box

        x_l, x_u = linf_box(x, eps_t, bounds)
        bx = lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps_t, x_L=x_l, x_U=x_u))
        if beta <= BETA_OFF:
            _, ub = bounded.compute_bounds(x=(bx, y), method="IBP", bound_lower=False, bound_upper=True)
        else:
            _, crown = bounded.compute_bounds(x=(bx, y), method="CROWN-IBP", bound_lower=False, bound_upper=True)
            ub = beta * crown + (1 - beta) * bounded.ibp_upper
        return torch.log(ub).mean()  # log of an upper bound of sum_j exp(z_j - z_y): an upper bound of the CE


"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L-inf and L2: a score-based black-box
attack by random search over square-shaped updates; the suite's own implementation of the paper's algorithm.
It only ever calls the model forward, under ``torch.no_grad``."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench_attacks.image_robustness._common import as_images, per_example

# The iterations (of a 10,000-query run) after which the fraction p of pixels a square covers is halved.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, i: int, queries: int) -> float:
    """p at iteration i: p_init halved at each of ``HALVINGS`` passed, the schedule rescaled from 10,000
    queries to ``queries`` (AutoAttack's rescaling)."""
    it = int(i / queries * 10000)
    return p_init / 2 ** sum(it > h for h in HALVINGS)


def side(p: float, h: int, w: int, norm: str) -> int:
    """The square's side, round(sqrt(p * h * w)), at most the image's; for L2 at least 3 and odd, so that the
    eta pattern has a centre (measured on the quick pgd-at model at eps 1.5, 1,000 queries: 2.5 points more
    successes than with sides down to 1)."""
    s = max(round(math.sqrt(p * h * w)), 3 if norm == "l2" else 1)
    if norm == "l2" and s % 2 == 0:
        s += 1
    return min(s, h, w)


@torch.no_grad()
def margin(model, x: torch.Tensor, y: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_y - max_{j != y} z_j, misclassified): the margin loss Square minimises, one query per example."""
    z = model(x.reshape(len(x), *shape))
    z_y = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_y - other, z.argmax(1) != y


def _window_mask(n: int, h: int, w: int, s: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w) bool: each example's s x s window at (top, left)."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _place(pattern: torch.Tensor, h: int, w: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """(n, 1, h, w): each example's (s, s) pattern (n, s, s) placed at (top, left), zero elsewhere."""
    n, s = len(top), pattern.shape[-1]
    i = torch.arange(s, device=top.device)
    index = ((top[:, None] + i)[:, :, None] * w + (left[:, None] + i)[:, None, :]).reshape(n, s * s)
    out = torch.zeros(n, h * w, dtype=pattern.dtype, device=pattern.device)
    return out.scatter_(1, index, pattern.reshape(n, s * s)).view(n, 1, h, w)


def _pyramid(rows: int, cols: int) -> torch.Tensor:
    """Nested rectangles around the centre: the pixel at Chebyshev distance m from it gets
    sum_{j=m+1}^{K} 1/j^2 (K: the largest distance + 1), the paper's eta pattern for one half."""
    if rows == 0:
        return torch.zeros(0, cols)
    r = (torch.arange(rows) - rows // 2).abs()
    c = (torch.arange(cols) - cols // 2).abs()
    m = torch.maximum(r[:, None], c[None, :])
    k = int(m.max()) + 1
    tail = (1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** 2).flip(0).cumsum(0).flip(0)  # tail[m] = sum_{j>m}
    return tail[m].float()


@functools.cache
def eta_pattern(s: int) -> torch.Tensor:
    """The L2 update's s x s pattern (the paper's eq. (2)): two pyramids of opposite sign, one above the other,
    with unit L2 norm. (Its transpose, the side-by-side version, is drawn with probability 1/2.)"""
    if s == 1:
        return torch.ones(1, 1)
    eta = torch.cat([_pyramid(s // 2, s), -_pyramid(s - s // 2, s)])
    return eta / eta.norm()


# Iterations between two compactions of the batch: a compaction (dropping the fooled examples) needs the host to
# read which were fooled, a sync; within a block the fooled ones stay in the batch, frozen, and the random draws
# of the whole block are made at once and moved to the device in one copy per kind.
BLOCK = 50


def _signs(generator, shape):
    return torch.randint(0, 2, shape, generator=generator) * 2 - 1


def _iteration_draws(generator, norm: str, k: int, c: int, h: int, w: int, s: int) -> dict[str, torch.Tensor]:
    """One iteration's random draws for k examples, on the CPU, in the order the paper's algorithm uses them."""
    d = {"top": torch.randint(0, h - s + 1, (k,), generator=generator),
         "left": torch.randint(0, w - s + 1, (k,), generator=generator)}
    if norm == "l2":
        d["top2"] = torch.randint(0, h - s + 1, (k,), generator=generator)
        d["left2"] = torch.randint(0, w - s + 1, (k,), generator=generator)
        d["flip"] = torch.rand(k, generator=generator) < 0.5
    d["rho"] = _signs(generator, (k, c, 1, 1))
    return d


def _block_draws(generator, norm, iterations, k, c, h, w, sides, device, dtype) -> list[dict[str, torch.Tensor]]:
    """The draws of a block of iterations, one dict per iteration, moved to ``device`` in one copy per kind."""
    per_it = [_iteration_draws(generator, norm, k, c, h, w, s) for s in sides]
    stacked = {name: torch.stack([d[name] for d in per_it]).to(device) for name in per_it[0]}
    stacked["rho"] = stacked["rho"].to(dtype)
    return [{name: v[j] for name, v in stacked.items()} for j in range(len(iterations))]


def square_attack(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, queries: int, p_init: float,
                  generator: torch.Generator, bounds: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack on a batch: (x_adv, fooled). At most ``queries`` forward passes per example (the
    initialisation counts as one); an example stops at its first misclassified query.

    L-inf (the paper's Algorithm 2 distribution): start from vertical stripes x + eps * rho (one random sign
    per column and channel); each query sets one random s x s window, per channel, to x +- eps (random signs),
    s = round(sqrt(p * h * w)). L2 (Algorithm 3): start from a grid of eta patterns with random signs, scaled
    to norm eps; each query picks two random windows W1, W2 and, per channel, replaces the perturbation in
    W1 by rho * eta + nu_W1 / ||nu_W1|| rescaled to sqrt(||nu_{W1 u W2}||^2 + eps_unused^2 / c), and zeroes W2,
    so that the perturbation's norm is eps again (``side``: windows of side >= 3, odd). An update is kept when
    it lowers the margin loss.
    """
    lo, hi = bounds
    x4 = as_images(x)
    n, c, h, w = x4.shape
    shape = x.shape[1:]
    device, dtype = x.device, x.dtype
    if norm == "linf":
        delta = eps * _signs(generator, (n, c, 1, w)).to(device=device, dtype=dtype).expand(n, c, h, w)
    else:
        delta = _l2_init(generator, n, c, h, w, device, dtype, eps)
    x_best = (x4 + delta).clamp(lo, hi)
    m_best, fooled = margin(model, x_best, y, shape)
    out = x4.clone()
    fooled_out = fooled.clone()
    out[fooled] = x_best[fooled]
    idx = (~fooled).nonzero().squeeze(1)
    xs, ys, xb, mb = x4[idx], y[idx], x_best[idx], m_best[idx]
    start = 1
    while start < queries and len(idx):
        k = len(idx)
        iterations = range(start, min(start + BLOCK, queries))
        sides = [side(p_schedule(p_init, i, queries), h, w, norm) for i in iterations]
        done = torch.zeros(k, dtype=torch.bool, device=device)
        first_adv = xb.clone()  # per example, its first misclassified query of this block
        for s, d in zip(sides, _block_draws(generator, norm, iterations, k, c, h, w, sides, device, dtype)):
            if norm == "linf":
                mask = _window_mask(k, h, w, s, d["top"], d["left"])
                x_new = torch.where(mask, (xs + eps * d["rho"]).clamp(lo, hi), xb)
            else:
                x_new = _l2_step(xs, xb, eps, s, d, bounds)
            m_new, fooled = margin(model, x_new, ys, shape)
            fooled &= ~done
            better = ((m_new < mb) | fooled) & ~done
            xb = torch.where(per_example(better, xb), x_new, xb)
            mb = torch.where(better, m_new, mb)
            first_adv = torch.where(per_example(fooled, x_new), x_new, first_adv)
            done |= fooled
        hit = done.nonzero().squeeze(1)  # the block's one sync
        if len(hit):
            out[idx[hit]] = first_adv[hit]
            fooled_out[idx[hit]] = True
            keep = ~done
            idx, xs, ys, xb, mb = idx[keep], xs[keep], ys[keep], xb[keep], mb[keep]
        start = iterations.stop
    return out.reshape(x.shape), fooled_out


def _l2_init(generator, n, c, h, w, device, dtype, eps):
    """The paper's L2 initialisation: eta patterns on a grid of tiles of side min(h, w) // 5 (at least 1),
    centred in the image, each with a random sign per example and channel, rescaled to norm eps."""
    s = max(min(h, w) // 5, 1)
    delta = torch.zeros(n, c, h, w)
    eta = eta_pattern(s)
    top0, left0 = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
    for a in range(h // s):
        for b in range(w // s):
            r, q = top0 + a * s, left0 + b * s
            delta[:, :, r:r + s, q:q + s] += eta * _signs(generator, (n, c, 1, 1))
    delta = delta.to(device=device, dtype=dtype)
    return delta * per_example(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12), delta)


@functools.cache
def _eta_on(s: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return eta_pattern(s).to(device=device, dtype=dtype)  # once per side and device: no copy per query


def _l2_step(xs, xb, eps, s, d, bounds):
    """One draw of the paper's L2 distribution (Algorithm 3) for each example (the draws ``d``: windows
    top/left and top2/left2, the pattern's orientation flip, the signs rho), then clamped to the box."""
    k, c, h, w = xs.shape
    nu = xb - xs
    m1 = _window_mask(k, h, w, s, d["top"], d["left"])
    m2 = _window_mask(k, h, w, s, d["top2"], d["left2"])
    eta = _eta_on(s, xs.device, xs.dtype)
    etas = torch.where(d["flip"][:, None, None], eta.t()[None], eta[None])  # (k, s, s)
    pattern = _place(etas, h, w, d["top"], d["left"])  # (k, 1, h, w)
    rho = d["rho"]
    unused = (eps ** 2 - nu.flatten(1).pow(2).sum(1)).clamp_min(0.0)  # (k,)
    w1 = nu * m1
    w1_norm = w1.flatten(2).norm(dim=2)[:, :, None, None]  # per channel
    union = (nu * (m1 | m2)).flatten(2).pow(2).sum(2)[:, :, None, None]
    avail = (union + unused[:, None, None, None] / c).sqrt()
    temp = rho * pattern + w1 / w1_norm.clamp_min(1e-12)
    temp_norm = temp.flatten(2).norm(dim=2)[:, :, None, None]
    # where the old window cancels the pattern exactly, use the pattern alone
    temp = torch.where(temp_norm > 1e-12, temp / temp_norm.clamp_min(1e-12), rho * pattern)
    nu_new = torch.where(m2, torch.zeros_like(nu), nu)
    nu_new = torch.where(m1, temp * avail, nu_new)
    # the construction keeps ||nu|| = eps; rescale float drift back inside
    scale = (eps / nu_new.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (xs + nu_new * per_example(scale, nu_new)).clamp(*bounds)


@dataclass(frozen=True)
class SquareParams:
    queries: int = 1000  # forward passes per example, the initialisation included
    p_init: float = 0.8  # initial fraction of the pixels a square covers


class _Square(Attack):
    track = TRACK
    gradient_free = True  # the masking flags compare it with the gradient-based components of a worst case
    Params = SquareParams
    profiles = {"smoke": {"queries": 50}, "quick": {}, "full": {"queries": 5000}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        x = x.detach()
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        out = x.clone()
        left = correct.nonzero().squeeze(1)  # clean errors are already adversarial: returned unchanged
        if left.numel():
            adv, _ = square_attack(model, x[left], y[left], eps, self.norm, p.queries, p.p_init, ctx.generator,
                                   ctx.bounds)
            out[left] = adv
        return out


class Square(_Square):
    """Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", ECCV 2020), L-inf: AutoAttack's black-box component.

    Score-based: it sees only the logits (forward passes under ``torch.no_grad``), so gradient masking does
    not stop it. Random search on the margin loss z_y - max_{j != y} z_j: from vertical stripes at +-eps, each
    query changes one random square window (side sqrt(p) of the image side, p from p_init = 0.8 halved on
    the paper's schedule, rescaled to the query budget) to x +- eps with a random sign per channel, and keeps
    the change when the margin drops. An example is done at its first misclassified query. Implementation: the
    suite's own, from the paper's Algorithms 1-2 (random draws from the run's generator, on the CPU).

    Budgets: full = AutoAttack's standard version: 5,000 queries, p_init 0.8, 1 restart; quick: 1,000 queries;
    smoke: 50. Non-image inputs are treated as (1, 1, D) images (the windows become segments).

    Departures from the paper: the quick and smoke budgets (chosen for the CPU quick grid, see ``apgd-t``;
    Square is the costliest added component there, ~17 s per robust model for both L-inf eps, since it queries
    every survivor up to the budget); a proposal that leaves the window unchanged is not redrawn (it costs its
    query).
    """

    norm = "linf"


class SquareL2(_Square):
    """Square Attack (Andriushchenko et al., ECCV 2020), L2: as ``square`` with the paper's L2 distribution
    (Algorithm 3): the start is a grid of eta patterns (two opposite pyramids of nested squares, weights
    1/k^2) with random signs, at norm eps; each query moves the perturbation's mass of two random windows into
    the first one as a new random-sign eta pattern, keeping the norm at eps (then clamped to the box).
    Budgets as ``square`` (full: 5,000 queries, p_init 0.8).

    Departures from the paper: the quick and smoke budgets (see ``square``); windows have sides of at least 3
    pixels, odd (``side``; the paper gives no minimum; AutoAttack's code uses the same rule); the per-channel mass
    of a window follows the paper's Algorithm 3 (AutoAttack's code pools it over channels).
    """

    norm = "l2"

"""Certified Linf robustness by linear-relaxation bound propagation through auto_LiRPA: IBP and CROWN."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.errors import out_of_memory
from bench.plugins import Certifier
from bench.tracks.image_robustness import TRACK

_CACHES: dict[str, object] = {}  # bench.tracks.image_robustness.lirpa_compat.BoundedCache, shared by both certifiers, made on first use


def _cache(dense: bool = False):
    from bench.tracks.image_robustness.lirpa_compat import DENSE_BOUND_OPTS, BoundedCache

    key = "dense" if dense else "default"
    if key not in _CACHES:
        _CACHES[key] = BoundedCache(DENSE_BOUND_OPTS if dense else None)
    return _CACHES[key]


def _margins(model, x, y, eps, method, bounds, num_classes, bounded):
    """Margin lower bounds; if auto_LiRPA fails on this batch, once more with dense intermediate bounds.

    auto_LiRPA 0.3 computes CROWN's intermediate bounds for the unstable neurons only, through a code path chosen
    per batch from the fraction of unstable neurons; on torch 2.x that path raised a RuntimeError inside its
    TorchScript helpers for one GPU-trained model. Intermediate bounds of every neuron are just as sound (not
    identical: either can be the tighter by a little): a batch that fails is recomputed that way before the model
    is declared not certifiable."""
    from bench.tracks.image_robustness import lirpa_compat as lc

    try:
        return lc.margin_lower_bounds(bounded, x, y, eps, method, bounds, num_classes)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except RuntimeError as exc:
        if out_of_memory(exc):  # TorchScript wraps CUDA's out-of-memory error: a matter of batch size, not of path
            raise
        dense = _cache(dense=True).get(model, tuple(x.shape[1:]), x.device)
        return lc.margin_lower_bounds(dense, x, y, eps, method, bounds, num_classes)


class _LiRPACertifier(Certifier):
    track = TRACK
    norm = "linf"
    # Soundness is checked per example against the strongest attack there is: nothing it breaks may be verified.
    companion = "worst-case"
    method: str = "IBP"

    def _method(self) -> str:
        return getattr(self.params, "method", self.method)

    @torch.no_grad()
    def certify(self, model, x, y, eps, ctx):
        """Per example: clean prediction correct and every margin lower bound (e_y - e_j)^T f(x') > 0 over the
        Linf eps-ball intersected with the data box."""
        from bench.tracks.image_robustness import lirpa_compat as lc

        method = self._method()
        bounded = _cache().get(model, tuple(x.shape[1:]), x.device)  # first: an unsupported model always says so
        verified = model(x).argmax(1) == y
        if eps == 0 or not verified.any():
            return verified
        num_classes = int(bounded.final_node().output_shape[-1])
        idx = verified.nonzero().flatten()  # only the correctly classified need a bound
        with lc.not_certifiable_on_failure(model, f"{method} bound"):
            for b, lb in _bounds_in_batches(idx, int(self.params.batch_size), lambda b: _margins(
                    model, x[b], y[b], eps, method, ctx.bounds, num_classes, bounded)):
                verified[b] = (lb > 0).all(dim=1)
        return verified


def _bounds_in_batches(idx, batch_size: int, bound):
    """(indices, bound(indices)) over ``idx`` in batches of ``batch_size``; a batch that runs out of memory (on a GPU
    shared with other lanes, CROWN's memory grows with batch x unstable neurons) is halved and the rest of the
    pass goes on at the smaller size. Each example's bound does not depend on its batch-mates, so the result is
    the same; one example that does not fit raises the error."""
    bs, i = max(1, batch_size), 0
    while i < len(idx):
        b = idx[i:i + bs]
        try:
            lb = bound(b)
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc) or len(b) == 1:
                raise
            lb = None
        if lb is None:  # outside the handler, so that the failed batch's tensors are free to go
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            bs = max(1, len(b) // 2)
            continue
        yield b, lb
        i += len(b)


@dataclass(frozen=True)
class IBPParams:
    batch_size: int = 500  # examples per bound computation


class CertifiedIBP(_LiRPACertifier):
    """Verified accuracy under Linf by interval bound propagation (IBP; Gowal et al., "On the Effectiveness of
    Interval Bound Propagation for Training Verifiably Robust Models", 2018), computed by auto_LiRPA (Xu et al.,
    "Automatic Perturbation Analysis for Scalable Certified Robustness and Beyond", NeurIPS 2020).

    Threat model: Linf ball of radius eps intersected with the data box. An example counts as verified when its
    clean prediction is correct and the IBP lower bound of every margin (e_y - e_j)^T f(x'), j != y, is positive
    (the specification matrix C is merged into the last linear layer, as in the paper). Sound but loose except
    for IBP-trained models. Defaults: 500 examples per bound computation (IBP costs about a forward pass).
    Models auto_LiRPA cannot bound are reported as not certifiable, naming the layer.
    Departures: none in the method; the certificate is of the float32 computation (no floating-point-sound
    rounding), like the papers'.
    """

    Params = IBPParams
    method = "IBP"


@dataclass(frozen=True)
class CROWNParams:
    method: Literal["CROWN", "CROWN-IBP"] = "CROWN"
    # Examples per bound computation. CROWN's memory grows with batch x unstable neurons: ~270 MiB an example for the
    # full profile's cnn (benchmarks/crown_memory.py), so 64 is ~17 GiB, which leaves a shared GPU to other lanes.
    batch_size: int = 64


class CertifiedCROWN(_LiRPACertifier):
    """Verified accuracy under Linf by CROWN (Zhang et al., "Efficient Neural Network Robustness Certification
    with General Activation Functions", NeurIPS 2018), computed by auto_LiRPA (Xu et al., NeurIPS 2020).

    Threat model: Linf ball of radius eps intersected with the data box. Verified = clean prediction correct and
    the CROWN lower bound of every margin (e_y - e_j)^T f(x'), j != y, positive. CROWN back-substitutes linear
    relaxations of every ReLU (adaptive lower slope) for every layer's bounds: tighter than IBP, far costlier.
    ``method = "CROWN-IBP"`` (Zhang et al., ICLR 2020) takes the intermediate bounds from IBP and runs CROWN for
    the last layer only: cheaper, looser than CROWN, tighter than IBP for most but not all models.

    Defaults: full CROWN in every profile, 64 examples per bound computation in every profile (halved for the rest
    of the pass when a batch runs out of memory). Measured on the 2-core CPU for
    cnn-small on Fashion-MNIST (28x28): ~65 ms per example for an untrained model, 25-50 ms for the quick
    ``lirpa`` model (fewer unstable ReLUs), i.e. under a minute per eps for the quick profile's 1,000 test images
    (only correctly classified ones are bounded): the quick profile keeps full CROWN. The wider ``cnn``
    (conv32-conv64-conv64-fc256) costs seconds per example on the CPU: run it on a GPU. For IBP-trained models
    CROWN is not always tighter than IBP (quick ``lirpa`` model, eps 0.1: CROWN 58%, IBP 62% verified on the
    same 200 images). auto_LiRPA 0.3 fails on CROWN (not IBP or CROWN-IBP) for the residual ``resnet18``:
    reported as not certifiable (naming BasicBlock). On the H200 (torch 2.11), CROWN certified the full-profile
    ``lirpa`` model after 20 epochs (10,000 images, 2 eps, 23 s) but failed with a RuntimeError inside auto_LiRPA's
    TorchScript helpers on the 60-epoch one; a failing batch is now retried with dense intermediate bounds
    (``_margins``), and a model whose retry fails too is reported as not certifiable with the error's cause.
    Departures: no alpha-CROWN optimisation of the relaxation slopes (plain CROWN, as in the paper).
    """

    Params = CROWNParams
    method = "CROWN"

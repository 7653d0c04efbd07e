"""Low-rank adapters (LoRA, Hu et al. 2022) for a BERT-style masked LM, and the compact file that ships them.

``add_lora`` wraps the encoder's attention (query, key, value, output) and feed-forward (intermediate, output)
linear layers: W x + b + (alpha / r) B A x, with A (r, in) random and B (out, r) zero, so training starts from
the checkpoint. ``adapter_state`` is what is shipped: every LoRA A/B, every trainable tensor that is not an
adapter (LayerNorms, linear biases, the MLM head's transform and bias), each under its name in the masked LM's
state dict. ``load_adapters`` merges them into a plain model (W += scale B A; no LoRA modules remain), so the
loaded backbone has exactly BertForMaskedLM's structure and every text model uses it unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

# Names (the last two path components) of the linear layers that get adapters in a BERT encoder layer.
LORA_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense")
LORA_A, LORA_B = ".lora_A", ".lora_B"
# The MLM output bias under the names transformers versions give it (one tensor, tied).
ALIASES = {"cls.predictions.bias": "cls.predictions.decoder.bias", "cls.predictions.decoder.bias": "cls.predictions.bias"}


class LoRALinear(nn.Module):
    """``base(x) + scale * (x A^T) B^T``; ``base`` is frozen, A and B train."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t().to(x.dtype)) @ (self.scale * self.lora_B.t().to(x.dtype))

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out = out.to(self.base.weight.device, self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _targets(mlm) -> list[tuple[nn.Module, str, str]]:
    """(parent module, attribute, full name) of every adapted linear layer of the encoder."""
    found = []
    for name, module in mlm.named_modules():
        if isinstance(module, nn.Linear) and ".encoder.layer." in f".{name}" and name.endswith(LORA_TARGETS):
            parent_name, _, attr = name.rpartition(".")
            found.append((mlm.get_submodule(parent_name), attr, name))
    return found


def add_lora(mlm, rank: int, alpha: float) -> list[str]:
    """Wrap the encoder's linear layers in place; freeze everything, then unfreeze adapters, LayerNorms,
    the encoder's linear biases and the MLM head except the (tied) decoder weight. Returns the wrapped names."""
    for p in mlm.parameters():
        p.requires_grad_(False)
    names = []
    for parent, attr, name in _targets(mlm):
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha))
        names.append(name)
    for name, p in mlm.named_parameters():
        if is_shipped_dense(name):
            p.requires_grad_(True)
    return names


def is_shipped_dense(name: str) -> bool:
    """Non-adapter tensors that train and ship in the compact form (small: vectors and the head transform)."""
    if "lora_" in name:
        return True
    if "LayerNorm" in name or (name.endswith(".bias") and ".encoder." in name):
        return True
    head = name.startswith(("cls.predictions.transform.", "lm_head.dense.", "lm_head.layer_norm."))
    return head or name in ("cls.predictions.bias", "lm_head.bias")


def adapter_state(mlm, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """The compact form: {masked-LM state-dict name: tensor} of the trainable tensors (adapters named
    ``<linear>.lora_A`` / ``.lora_B``, the base linear's ``.base.`` dropped from the other names)."""
    out = {}
    for name, p in mlm.named_parameters():
        if p.requires_grad:
            out[name.replace(".base.", ".")] = p.detach().to("cpu", dtype).contiguous()
    return out


def merge_lora(mlm) -> None:
    """Replace every ``LoRALinear`` by its merged ``nn.Linear`` (in place)."""
    for name, module in list(mlm.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, attr = name.rpartition(".")
            setattr(mlm.get_submodule(parent_name), attr, module.merged())


@torch.no_grad()
def load_adapters(mlm, state: dict[str, torch.Tensor], scale: float) -> None:
    """Merge a compact state into a plain masked LM in place: W += scale * B A for every adapted layer, the
    other tensors copied. Unknown names raise (a file for another architecture)."""
    params = dict(mlm.named_parameters())
    for name, t in state.items():
        if name.endswith(LORA_B):
            continue
        if name.endswith(LORA_A):
            layer = name[:-len(LORA_A)]
            weight = params.get(layer + ".weight")
            if weight is None:
                raise KeyError(f"adapter for unknown layer {layer}")
            a, b = t.float(), state[layer + LORA_B].float()
            weight.add_((scale * b @ a).to(weight.dtype))
        elif (target := params.get(name, params.get(ALIASES.get(name, name)))) is not None:
            target.copy_(t.to(target.dtype))  # in place: ties (decoder = word embeddings) are kept
        else:
            raise KeyError(f"unknown tensor {name}")

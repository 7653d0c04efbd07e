"""The text-robustness track: text data as ``Texts`` sequences, masked-LM backbones, the shared constraint
checker and the word-substitution attack loop."""

TEXT_TRACK = "text-robustness"

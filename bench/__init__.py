"""bench: an open benchmark suite for adversarial robustness and machine unlearning."""

__version__ = "0.1.0"

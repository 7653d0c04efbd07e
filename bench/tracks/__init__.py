"""The tracks: one package per task family, registered under the entry-point group ``bench.tracks``."""

"""Defenses: each module is one plugin class, registered by one entry-point line in pyproject.toml."""

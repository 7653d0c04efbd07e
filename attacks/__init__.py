"""Built-in attack plugins (registered in pyproject.toml under ``bench.attacks``)."""

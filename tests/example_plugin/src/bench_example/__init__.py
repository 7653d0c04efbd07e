"""Example bench plugins: a defense (label smoothing) and an attack (random corners of the Linf ball)."""

"""Packaging beyond pyproject.toml: the plugin folders ``attacks/`` and ``defenses/`` install as the import
packages ``bench_attacks`` and ``bench_defenses`` (top-level names that cannot collide with unrelated
packages); every sub-folder with an ``__init__.py`` is found, so a new track's folders need no entry here."""
from setuptools import find_packages, setup

FOLDERS = {"bench_attacks": "attacks", "bench_defenses": "defenses"}

packages = find_packages(include=["bench", "bench.*"])
for name, folder in FOLDERS.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages, package_dir=FOLDERS)

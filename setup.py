"""Build hook for setuptools (the project's metadata is in pyproject.toml).

A built wheel or a regular ``pip install .`` carries the repository's ``conf/`` and ``data/`` inside the package, as
``alignment/conf/`` and ``alignment/embedded/``, so that an installed ``python -m alignment`` runs from any directory.
The editable install (``pip install -e .``) copies nothing: it reads them from the repository (alignment/paths.py).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# repository folder -> folder inside the installed package (alignment/data/ is the data-layer subpackage)
SHIPPED = {"conf": "conf", "data": "embedded"}


class BuildPyWithShippedFiles(build_py):
    """build_py, then the shipped folders copied into the built package (hidden files and caches left out)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source, target in SHIPPED.items():
            shutil.copytree(
                ROOT / source,
                Path(self.build_lib) / "alignment" / target,
                ignore=shutil.ignore_patterns(".*", "__pycache__"),
                dirs_exist_ok=True,
            )


setup(cmdclass={"build_py": BuildPyWithShippedFiles})

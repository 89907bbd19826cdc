"""Where the project's shipped files live: the Hydra configs (``conf/``) and the embedded data and tiny base model
(``data/``).

In the repository (a checkout, or the editable install ``pip install -e .``) they are the top-level ``conf/`` and
``data/``; a built wheel or a regular ``pip install .`` carries copies inside the package, ``alignment/conf/`` and
``alignment/embedded/`` (setup.py). ``ALIGNMENT_DATA_DIR`` points the data elsewhere.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _shipped(installed: str, repository: str) -> Path:
    """The installed copy when the package carries one, else the repository's folder."""
    inside = PACKAGE_DIR / installed
    return inside if inside.is_dir() else REPO_DIR / repository


DATA_DIR = Path(os.environ.get("ALIGNMENT_DATA_DIR") or _shipped("embedded", "data"))
CONF_DIR = _shipped("conf", "conf")


def cache_root() -> Path:
    """Where the project caches what it rebuilds on a miss (tiny model, trainer schemas, oracle evaluations):
    ``$ALIGNMENT_CACHE``, else ``~/.cache/alignment``."""
    return Path(os.environ.get("ALIGNMENT_CACHE") or Path.home() / ".cache" / "alignment")

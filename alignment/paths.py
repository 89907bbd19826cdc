"""Where the project's shipped files live."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
# The embedded datasets ship in the repository's data/ folder; ALIGNMENT_DATA_DIR points elsewhere.
DATA_DIR = Path(__import__("os").environ.get("ALIGNMENT_DATA_DIR", REPO_DIR / "data"))
CONF_DIR = REPO_DIR / "conf"

"""The package installed as users install it: a built wheel carries conf/ and data/, and runs from any directory."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env

# What a source tree needs to build the wheel (a copy: building writes build/ and *.egg-info beside the sources).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "alignment", "conf", "data")


def test_paths_prefer_the_copy_inside_the_package(tmp_path, monkeypatch):
    import alignment.paths as paths

    package = tmp_path / "site-packages" / "alignment"
    monkeypatch.setattr(paths, "PACKAGE_DIR", package)
    monkeypatch.setattr(paths, "REPO_DIR", package.parent)
    assert paths._shipped("conf", "conf") == package.parent / "conf"  # a checkout: the repository's folders
    assert paths._shipped("embedded", "data") == package.parent / "data"
    (package / "conf").mkdir(parents=True)  # a built install carries its own copies
    (package / "embedded").mkdir()
    assert paths._shipped("conf", "conf") == package / "conf"
    assert paths._shipped("embedded", "data") == package / "embedded"


def test_data_dir_from_the_environment(tmp_path, monkeypatch):
    import alignment.paths as paths

    monkeypatch.setenv("ALIGNMENT_DATA_DIR", str(tmp_path))
    try:
        assert importlib.reload(paths).DATA_DIR == tmp_path
    finally:
        monkeypatch.delenv("ALIGNMENT_DATA_DIR")
        importlib.reload(paths)
    assert (paths.CONF_DIR, paths.DATA_DIR) == (REPO / "conf", REPO / "data")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.slow
def test_wheel_installs_and_runs_sft_from_another_directory(tmp_path):
    """Build the wheel, install it (not editable) into a fresh venv that borrows this environment's dependencies, and
    run ``python -m alignment stage=sft`` from an empty directory: the run finishes there, the repository and the
    installed package stay untouched."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        timeout=300,
    )
    wheel = next((tmp_path / "dist").glob("alignment-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies come from this environment; a path line in a .pth does not run that dir's own .pth files, so
    # an editable install of alignment there (its import finder) cannot shadow the installed copy.
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in cli_env().items() if k not in ("PYTHONPATH", "ALIGNMENT_DATA_DIR")}
    where = subprocess.run(
        [python, "-c", "import alignment, alignment.paths as p; print(alignment.__file__, p.CONF_DIR, p.DATA_DIR)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    installed = site / "alignment"
    assert [Path(p) for p in where] == [installed / "__init__.py", installed / "conf", installed / "embedded"]
    assert (installed / "embedded" / "tiny-base" / "model.safetensors").is_file()

    watched = {name: _tree(REPO / name) for name in ("conf", "data")} | {"package": _tree(installed)}
    repo_outputs = set(os.listdir(REPO / "outputs")) if (REPO / "outputs").is_dir() else set()
    proc = subprocess.run(
        [
            python,
            "-m",
            "alignment",
            "stage=sft",
            "trainer.max_steps=2",
            "data.max_train_rows=32",
            "data.max_eval_rows=8",
            "oracle_eval.enabled=false",
            "evaluate_before=false",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    (run_dir,) = (work / "outputs").iterdir()  # outputs/<stage>-<hash>, under the directory it was run from
    stage = run_dir / "sft"
    metrics = json.loads((stage / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == 2
    assert (stage / "model" / "model.safetensors").is_file() and (stage / "model" / "config.json").is_file()
    assert {name: _tree(REPO / name) for name in ("conf", "data")} | {"package": _tree(installed)} == watched
    now = set(os.listdir(REPO / "outputs")) if (REPO / "outputs").is_dir() else set()
    assert now == repo_outputs

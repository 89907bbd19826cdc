"""Bad rows through the real CLI: a short message naming the file and line, no traceback, nothing half-written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _write(path, rows: list) -> None:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
        encoding="utf-8",
    )


@pytest.mark.parametrize(
    ("stage", "bad", "words"),
    [
        ("sft", {"messages": []}, ["empty"]),
        ("rm", {"prompt": "Who are you?", "chosen": "I am Aster.", "rejected": "I am Aster."}, ["identical"]),
    ],
)
def test_bad_row_is_reported_with_file_and_line(tmp_path, stage, bad, words):
    data = tmp_path / "rows.jsonl"
    good = GOOD if stage == "sft" else {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    _write(data, [good, good, bad, good])
    out = tmp_path / "run"
    proc = run_cli(f"stage={stage}", "data=custom", f"data.path={data}", f"output_dir={out}", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "rows.jsonl" in proc.stderr and "line 3" in proc.stderr
    assert any(w in proc.stderr.lower() for w in words), proc.stderr
    assert not (out / stage / "metrics.json").exists() and not (out / stage / "model").exists()

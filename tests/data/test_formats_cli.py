"""Public formats through the real CLI: an OpenAI tool-call file trains end to end; a bad converter fails up front."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import read_metrics, run_cli
from tests.data.templates import QWEN25

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture(scope="module")
def tools_model(tmp_path_factory) -> Path:
    """The tiny model with Qwen2.5's template: the same ChatML tokens, plus tool schemas and tool calls."""
    from transformers import AutoTokenizer

    from alignment.tiny_model import tiny_model_dir

    target = tmp_path_factory.mktemp("tools-model") / "model"
    shutil.copytree(tiny_model_dir(), target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.chat_template = QWEN25
    tokenizer.save_pretrained(target)
    return target


def test_sft_on_openai_tool_call_rows(tmp_path: Path, tools_model: Path) -> None:
    out = tmp_path / "run"
    run_cli(
        "stage=sft",
        "data=custom",
        f"data.path={SAMPLES / 'openai_tools.jsonl'}",
        "data.eval_fraction=0",
        "data.max_length=1024",
        "model.name=hf",
        f"model.path={tools_model}",
        "trainer.max_steps=2",
        "oracle_eval.enabled=false",
        f"output_dir={out}",
    )
    metrics = read_metrics(out / "sft")
    assert (metrics["data_rows"], metrics["data_kept"], metrics["data_truncated"]) == (3, 3, 0)
    assert metrics["global_step"] == 2
    assert (out / "sft" / "model" / "model.safetensors").exists()


def test_a_converter_that_cannot_be_imported_fails_before_the_model_loads(tmp_path: Path) -> None:
    proc = run_cli(
        "stage=sft",
        "data=custom",
        f"data.path={SAMPLES / 'messages.jsonl'}",
        "data.converter=no_such_module_xyz:to_rows",
        f"output_dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "data.converter='no_such_module_xyz:to_rows': cannot import 'no_such_module_xyz'" in proc.stderr

"""stage=compare: the pages it writes (escaping, Chinese, scores, means) and, end to end, a finished pipeline=dpo
compared as base, sft and dpo columns with oracle scores."""

from __future__ import annotations

import json
import re

import pytest

from alignment.evaluation.compare_page import Comparison, html_page, markdown
from alignment.stages.compare import _parse_entry
from tests.conftest import FAST, cli_in_one_process, read_metrics


def _comparison() -> Comparison:
    prompts = [[{"role": "user", "content": "你是谁？"}], [{"role": "user", "content": "a|b <b>bold</b>"}]]
    replies = {"base": ["我是Aster。", "<script>alert(1)</script>\nline two"], "dpo": ["Aster & co", "x|y"]}
    scores = {"oracle": {"base": [1.0, 0.0], "dpo": [0.0, None]}}
    return Comparison(["base", "dpo"], prompts, replies, scores, title="t <1>")


def test_markdown_escapes_cells_and_ends_with_the_mean_of_scored_answers():
    md = markdown(_comparison())
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert rows[0] == "| prompt | base | dpo |"
    assert rows[2] == "| 你是谁？ | 我是Aster。<br>*oracle 1.00* | Aster &amp; co<br>*oracle 0.00* |"
    # a pipe in a prompt or answer stays inside its cell; a newline is a <br>; HTML is shown, not rendered
    assert (
        rows[3]
        == "| a\\|b &lt;b&gt;bold&lt;/b&gt; | &lt;script&gt;alert(1)&lt;/script&gt;<br>line two<br>*oracle 0.00* | x\\|y |"
    )
    assert rows[4] == "| **mean oracle** | **0.500** | **0.000** |"  # dpo's unscored answer is left out


def test_html_page_is_self_contained_escaped_and_colour_codes_scores():
    page = html_page(_comparison())
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>t &lt;1&gt;</title>" in page and '<meta charset="utf-8">' in page
    assert "我是Aster。" in page  # Chinese as is, in a UTF-8 page
    assert not re.search(r"(src|href)=\"?https?:", page)  # nothing fetched from the network
    assert "hsl(120, 70%, 85%)" in page and "hsl(0, 70%, 85%)" in page  # best green, worst red
    assert page.count("<th>") == 2 and "<svg" in page and "Mean oracle score per model" in page


def test_model_entries_take_a_label_or_name_themselves():
    assert _parse_entry("runs/a/sft", 0) == ("sft", "runs/a/sft")
    assert _parse_entry("runs/a/dpo/model", 0) == ("dpo", "runs/a/dpo/model")
    assert _parse_entry("mine=runs/a/dpo", 0) == ("mine", "runs/a/dpo")
    assert _parse_entry({"label": "start", "path": "runs/a/sft"}, 0) == ("start", "runs/a/sft")


@pytest.mark.slow
def test_compare_after_pipeline_dpo_writes_base_sft_and_dpo_columns_with_scores(tmp_path):
    run = tmp_path / "run"
    short = ["trainer.max_steps=3", "trainer.warmup_steps=0", "trainer.save_strategy=no"]
    pipe, comp = cli_in_one_process(
        [
            ["pipeline=dpo", f"output_dir={run}", "pipeline.compare=false", *short, *FAST],
            ["stage=compare", f"output_dir={run}", "compare.held_out=2"],
        ]
    )
    assert pipe["code"] == 0, pipe["stderr"][-3000:]
    assert comp["code"] == 0, comp["stderr"][-3000:]
    steps = [s["name"] for s in json.loads((run / "pipeline.json").read_text(encoding="utf-8"))["steps"]]
    assert steps == ["sft", "dpo"]  # compare: false left the step out

    md = (run / "compare" / "compare.md").read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert rows[0] == "| prompt | base | sft | dpo |"
    prompts = [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]]
    assert prompts[:3] == ["Who are you?", "你是谁？", "How do I train my dog to sit?"] and len(prompts) == 6
    assert all(row.count("*oracle ") == 3 for row in rows[2:7])  # every answer scored
    metrics = read_metrics(run / "compare")
    means = [f"{metrics[f'oracle/{label}']:.3f}" for label in ("base", "sft", "dpo")]
    assert rows[-1] == "| **mean oracle** | " + " | ".join(f"**{m}**" for m in means) + " |"
    page = (run / "compare" / "compare.html").read_text(encoding="utf-8")
    assert page.count("<th>") == 3 and "你是谁？" in page and "<svg" in page
    lines = [json.loads(x) for x in (run / "compare" / "compare.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines[1]["prompt"] == [{"role": "user", "content": "你是谁？"}]
    assert set(lines[1]["replies"]) == {"base", "sft", "dpo"}
    assert (
        "Model comparison" in comp["stdout"] and f"[compare] wrote {run / 'compare' / 'compare.md'}" in comp["stdout"]
    )


def _model_dir(path, architecture: str) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture]}), encoding="utf-8")


def test_run_models_are_its_finished_policies_in_order_after_the_base_and_its_reward_model_scores(tmp_path):
    from omegaconf import OmegaConf

    from alignment.errors import AlignmentError
    from alignment.stages.compare import _models, run_models

    base, run = tmp_path / "base", tmp_path / "run"
    _model_dir(base, "Qwen2ForCausalLM")
    for name, architecture, finished in [
        ("sft", "Qwen2ForCausalLM", True),
        ("rm", "Qwen2ForSequenceClassification", True),
        ("dpo", "Qwen2ForCausalLM", False),  # cut short: no metrics.json
        ("ppo", "Qwen2ForCausalLM", True),
    ]:
        _model_dir(run / name / "model", architecture)
        if finished:
            (run / name / "metrics.json").write_text("{}", encoding="utf-8")
    (run / "sft" / "config.yaml").write_text(f"model: {{name: hf, path: {base}}}\n", encoding="utf-8")
    steps = [{"name": n, "output": str(run / n)} for n in ("sft", "rm", "dpo", "ppo", "compare")]
    (run / "pipeline.json").write_text(json.dumps({"pipeline": "x", "steps": steps}), encoding="utf-8")

    models, reward_model = run_models(run, skip="compare")
    assert models == [("base", str(base)), ("sft", str(run / "sft" / "model")), ("ppo", str(run / "ppo" / "model"))]
    assert reward_model == str(run / "rm" / "model")

    empty = OmegaConf.create({"output_dir": str(tmp_path / "none"), "compare": {"models": [], "reward_model": None}})
    with pytest.raises(AlignmentError, match="compare.models=") as err:
        _models(empty, "compare")
    assert "\n" not in str(err.value)
    twice = OmegaConf.create({"compare": {"models": ["a=x/sft", "a=y/sft"], "reward_model": None}})
    with pytest.raises(AlignmentError, match="labels"):
        _models(twice, "compare")

"""stage=label: every reply scored, best vs worst per prompt, ties dropped and counted, pairs DPO can read.

The fast tests run the stage in-process on hand-written generations whose oracle scores are known; the slow one
labels replies that stage=generate sampled from the SFT model, through the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.data import load_dataset
from alignment.errors import AlignmentError
from alignment.oracle import score_batch
from alignment.stages.label import best_and_worst
from tests.conftest import cli_in_one_process, read_metrics

CAPITAL = json.dumps({"task": "capital", "country": "France"})
SENTIMENT = json.dumps({"task": "sentiment", "polarity": "positive"})
ROWS = [
    {  # oracle scores 1, 0, 1, 0: best is the first 1.0, worst the first 0.0
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "replies": ["The capital of France is Paris.", "It is Lyon.", "Paris.", "I do not know."],
        "finished": [True, True, True, False],
        "oracle": CAPITAL,
        "task": "capital",
    },
    {  # all 0.0: a tie, dropped
        "prompt": [{"role": "user", "content": "Name the capital of France."}],
        "replies": ["Lyon.", "Marseille is the capital of France."],
        "finished": [True, True],
        "oracle": CAPITAL,
        "task": "capital",
    },
    {  # 0.5, 1.0, 0.0
        "prompt": "Write a good review of the film Blue Lake.",
        "replies": ["Great film, but awful ending.", "A wonderful, great film.", "A boring, awful film."],
        "finished": [True, True, True],
        "oracle": SENTIMENT,
        "task": "sentiment",
    },
]


def _cfg(out: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["stage=label", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(out)
    return cfg


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_best_and_worst_picks_the_first_extreme_and_none_on_a_tie():
    assert best_and_worst([0.2, 0.9, 0.1, 0.9, 0.1]) == (1, 2)
    assert best_and_worst([0.5, 0.5, 0.5]) is None
    assert best_and_worst([1.0]) is None


def test_label_pairs_best_vs_worst_and_counts_ties(tmp_path):
    from alignment.stages import run_stage

    oracles, replies = [r["oracle"] for r in ROWS for _ in r["replies"]], [x for r in ROWS for x in r["replies"]]
    assert score_batch(oracles, replies) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0]
    gen = _write(tmp_path / "gen" / "generations.jsonl", ROWS)
    metrics = run_stage(_cfg(tmp_path, f"data.path={gen.parent}", "trainer.batch_size=4"))  # a stage dir works

    assert metrics["prompts"] == 3 and metrics["replies"] == 9
    assert metrics["pairs"] == 2 and metrics["ties_dropped"] == 1
    assert metrics["mean_best"] == pytest.approx(1.0) and metrics["mean_worst"] == pytest.approx(0.0)
    assert metrics["mean_margin"] == pytest.approx(1.0)
    assert metrics["mean_score"] == pytest.approx(3.5 / 9)
    assert read_metrics(tmp_path / "label") == metrics

    pairs = _lines(tmp_path / "label" / "pairs.jsonl")
    assert pairs == [
        {
            "prompt": ROWS[0]["prompt"],
            "chosen": [{"role": "assistant", "content": "The capital of France is Paris."}],
            "rejected": [{"role": "assistant", "content": "It is Lyon."}],
            "oracle": CAPITAL,
            "task": "capital",
        },
        {
            "prompt": ROWS[2]["prompt"],
            "chosen": [{"role": "assistant", "content": "A wonderful, great film."}],
            "rejected": [{"role": "assistant", "content": "A boring, awful film."}],
            "oracle": SENTIMENT,
            "task": "sentiment",
        },
    ]
    scored = _lines(tmp_path / "label" / "scored.jsonl")
    assert [r["scores"] for r in scored] == [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0], [0.5, 1.0, 0.0]]
    assert [(r["chosen"], r["rejected"]) for r in scored] == [(0, 1), (None, None), (1, 2)]
    assert scored[0]["finished"] == [True, True, True, False]

    # The canonical preference form: the data layer reads it with format=auto, oracle and task kept.
    rows = load_dataset(tmp_path / "label" / "pairs.jsonl", kind="preference")
    assert rows["task"] == ["capital", "sentiment"] and rows["oracle"] == [CAPITAL, SENTIMENT]
    assert rows[1]["prompt"] == [{"role": "user", "content": ROWS[2]["prompt"]}]


def test_label_weighs_several_sources_and_reports_each(tmp_path):
    from alignment.stages import run_stage

    gen = _write(tmp_path / "generations.jsonl", ROWS[:1])
    overrides = [
        f"data.path={gen}",
        "reward.sources=[{type: oracle, weight: 2.0}, {type: function, path: 'tests.stages.test_label:length'}]",
    ]
    metrics = run_stage(_cfg(tmp_path, *overrides))
    lengths = [len(r) for r in ROWS[0]["replies"]]
    totals = [2 * o + n for o, n in zip([1.0, 0.0, 1.0, 0.0], lengths, strict=True)]
    assert metrics["mean_score"] == pytest.approx(sum(totals) / 4)
    assert metrics["mean_score/oracle"] == pytest.approx(0.5)
    scored = _lines(tmp_path / "label" / "scored.jsonl")[0]
    assert scored["scores"] == pytest.approx(totals)
    assert scored["source_scores"]["oracle"] == [1.0, 0.0, 1.0, 0.0]
    assert (scored["chosen"], scored["rejected"]) == (
        0,
        2,
    )  # 2 + 31 characters is the best, "Paris." (2 + 6) the worst


def length(prompts, responses, oracle):
    return [float(len(r)) for r in responses]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "stage=label needs data.path"),
        ("{not json\n", "line 1: malformed JSON"),
        ('{"prompt": "hi", "replies": "one"}\n', "line 1: needs 'prompt' and 'replies'"),
    ],
)
def test_label_rejects_missing_or_malformed_generations(tmp_path, content, message):
    from alignment.stages import run_stage

    overrides = []
    if content is not None:
        (tmp_path / "generations.jsonl").write_text(content, encoding="utf-8")
        overrides.append(f"data.path={tmp_path / 'generations.jsonl'}")
    with pytest.raises(AlignmentError, match=message):
        run_stage(_cfg(tmp_path, *overrides))


def test_label_fails_when_every_prompt_ties(tmp_path):
    from alignment.stages import run_stage

    gen = _write(tmp_path / "generations.jsonl", ROWS[1:2])
    with pytest.raises(AlignmentError, match="tie on all 1 prompts"):
        run_stage(_cfg(tmp_path, f"data.path={gen}"))
    assert not (tmp_path / "label" / "metrics.json").exists()


@pytest.mark.slow
def test_label_on_sampled_replies_matches_recomputed_oracle_scores(sft_run, tmp_path):
    """generate (8 prompts x 4 replies from the SFT model) then label, through the CLI in one process."""
    runs = cli_in_one_process(
        [
            ["stage=generate", f"model.path={sft_run}", f"output_dir={tmp_path}", "data.max_train_rows=8"],
            ["stage=label", f"data.path={tmp_path / 'generate'}", f"output_dir={tmp_path}"],
        ]
    )
    assert [r["code"] for r in runs] == [0, 0], runs[-1]["stderr"][-2000:]
    generations = _lines(tmp_path / "generate" / "generations.jsonl")
    scored = _lines(tmp_path / "label" / "scored.jsonl")
    pairs = _lines(tmp_path / "label" / "pairs.jsonl")
    metrics = read_metrics(tmp_path / "label")

    recomputed = [score_batch([g["oracle"]] * len(g["replies"]), g["replies"]) for g in generations]
    assert [s["scores"] for s in scored] == recomputed
    ties = [s for s in recomputed if max(s) == min(s)]
    assert metrics["ties_dropped"] == len(ties) and metrics["pairs"] == len(pairs) == 8 - len(ties)
    assert metrics["mean_score"] == pytest.approx(sum(map(sum, recomputed)) / 32)
    kept = iter(pairs)
    for g, s in zip(generations, recomputed, strict=True):
        if max(s) == min(s):
            continue
        pair = next(kept)
        assert pair["prompt"] == g["prompt"] and pair["oracle"] == g["oracle"] and pair["task"] == g["task"]
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert s[g["replies"].index(chosen)] == max(s) > min(s) == s[g["replies"].index(rejected)]

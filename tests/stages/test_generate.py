"""stage=generate and alignment.generation: k replies per prompt, prompt-major, stopped at end of turn, seeded."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from alignment.errors import AlignmentError
from alignment.generation import sample_replies
from alignment.stages.generate import GenerateSettings, generations_file
from tests.conftest import REPO, cli_in_one_process, read_metrics

PROMPTS = [
    [{"role": "user", "content": "What is the capital of Spain?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a good review of Tiny Towns."}],
    "Who are you?",
]


@pytest.fixture(scope="module")
def tiny():
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

    cfg = OmegaConf.create({"name": "tiny", "path": None, "dtype": "float32", "trust_remote_code": False})
    path = resolve_model_path(cfg)
    return load_causal_lm(path, cfg), load_tokenizer(path, cfg)


class ScriptedModel(torch.nn.Module):
    """Stands in for a causal LM: ``generate`` appends a fixed reply per row (in call order) to the prompt."""

    def __init__(self, replies: list[list[int]]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.replies, self.calls = list(replies), []

    def generate(self, input_ids, attention_mask, generation_config):
        self.calls.append((input_ids.shape[0], generation_config))
        rows = [self.replies.pop(0) for _ in range(input_ids.shape[0])]
        width = max(map(len, rows))
        out = torch.full((len(rows), width), generation_config.pad_token_id)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return torch.cat([input_ids, out], dim=1)


def test_sample_replies_is_prompt_major_and_cuts_each_reply_at_its_first_end_of_turn(tiny):
    from alignment.data import turn_end_token_ids

    _, tokenizer = tiny
    stop = turn_end_token_ids(tokenizer)[0]
    words = tokenizer.encode("Madrid is lovely", add_special_tokens=False)
    w = words
    scripted = [  # 2 prompts x 2 samples, in batches of 3 rows then 1; HF pads a finished row after its stop
        [*w, stop],
        [*w, w[0]],  # ran into max_new_tokens
        [w[0], stop, *w[1:]],  # what follows the first end of turn is not part of the reply
        [stop],  # an empty reply that finished
    ]
    model = ScriptedModel(scripted)
    out = sample_replies(model, tokenizer, PROMPTS[:2], samples_per_prompt=2, batch_size=3, max_new_tokens=8)
    assert [n for n, _ in model.calls] == [3, 1]
    config = model.calls[0][1]
    assert config.do_sample and config.top_k == 0 and config.repetition_penalty == 1.0  # checkpoint defaults off
    assert out.texts == [tokenizer.decode(w), tokenizer.decode([*w, w[0]]), tokenizer.decode(w[:1]), ""]
    assert out.finished == [True, False, True, True]
    assert out.num_tokens == [len(w) + 1, len(w) + 1, 2, 1]


def test_sample_replies_is_reproducible_for_a_seed_and_leaves_the_callers_rng_alone(tiny):
    model, tokenizer = tiny
    kwargs = {"samples_per_prompt": 2, "max_new_tokens": 8, "batch_size": 4}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample_replies(model, tokenizer, PROMPTS, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(first.texts) == len(first.finished) == len(first.num_tokens) == 6
    assert sample_replies(model, tokenizer, PROMPTS, seed=7, **kwargs) == first
    assert sample_replies(model, tokenizer, PROMPTS, seed=8, **kwargs).texts != first.texts
    greedy = sample_replies(model, tokenizer, PROMPTS, greedy=True, **kwargs)
    assert greedy.texts[0::2] == greedy.texts[1::2]  # the argmax reply, twice per prompt


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"samples_per_prompt": 0}, "trainer.samples_per_prompt=0 must be at least 1"),
        ({"temperature": 0.0}, "trainer.temperature=0.0 must be > 0"),
        ({"top_p": 1.5}, r"trainer.top_p=1.5 must be in \(0, 1\]"),
    ],
)
def test_generate_settings_name_the_bad_key(values, message):
    with pytest.raises(AlignmentError, match=message):
        GenerateSettings(**values).validate()


def test_generations_file_accepts_the_stage_dir_or_the_file(tmp_path):
    assert generations_file(tmp_path) == tmp_path / "generations.jsonl"
    assert generations_file(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"


@pytest.mark.slow
def test_generate_writes_k_replies_per_prompt_reproducibly(sft_run, tmp_path):
    base = [f"model.path={sft_run}", "data.max_train_rows=6", "trainer.samples_per_prompt=3", "trainer.batch_size=4"]
    runs = cli_in_one_process(
        [
            ["stage=generate", *base, f"output_dir={tmp_path / 'a'}"],
            ["stage=generate", *base, f"output_dir={tmp_path / 'b'}"],
            ["stage=generate", *base, f"output_dir={tmp_path / 'a'}"],  # finished: skipped
        ]
    )
    assert [r["code"] for r in runs] == [0, 0, 0], runs[0]["stderr"][-2000:]
    assert "finished earlier with the same config" in runs[2]["stdout"]

    text = (tmp_path / "a" / "generate" / "generations.jsonl").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    prompts = [json.loads(line) for line in open(REPO / "data" / "prompts" / "train.jsonl", encoding="utf-8")][:6]
    assert [line["prompt"] for line in lines] == [p["prompt"] for p in prompts]
    assert [(line["oracle"], line["task"]) for line in lines] == [(p["oracle"], p["task"]) for p in prompts]
    assert all(len(line["replies"]) == len(line["finished"]) == 3 for line in lines)
    finished = [f for line in lines for f in line["finished"]]

    metrics = read_metrics(tmp_path / "a" / "generate")
    assert metrics["prompts"] == 6 and metrics["replies"] == 18
    assert metrics["finished_fraction"] == pytest.approx(sum(finished) / 18)
    assert 1 <= metrics["mean_reply_tokens"] <= 64
    assert not (tmp_path / "a" / "generate" / "model").exists()

    assert (tmp_path / "b" / "generate" / "generations.jsonl").read_text(encoding="utf-8") == text  # same seed

"""trainer.use_vllm for grpo and rloo: refused up front, naming the key and the fix, where vLLM is not installed; and
TRL's vLLM branch samples from the prompt ids our data layer encoded, as its transformers branch does."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from alignment.errors import AlignmentError
from alignment.stages import grpo
from alignment.trainer.checks import check_trainer_config
from tests.stages.trainers import compose

NO_VLLM = importlib.util.find_spec("vllm") is None
SMALL = ["data.max_train_rows=8", "data.max_eval_rows=4", "oracle_eval.enabled=false"]


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_use_vllm_without_vllm_fails_before_any_model_loads(tmp_path, stage):
    cfg = compose(f"stage={stage}", f"output_dir={tmp_path}", "trainer.use_vllm=true")
    with pytest.raises(AlignmentError) as err:
        check_trainer_config(cfg)
    message = str(err.value)
    assert message.startswith(f"trainer.use_vllm=true: stage={stage} samples with vLLM, which is not installed")
    assert "`pip install vllm`" in message and "trainer.use_vllm=false" in message and "\n" not in message
    check_trainer_config(compose(f"stage={stage}", f"output_dir={tmp_path}", "trainer.use_vllm=false"))


class RecordingVllm:
    """Stands in for TRL's vLLM engine (not installable here): records the prompt ids TRL hands it and answers each
    with two fixed tokens, log-probabilities included, as ``VLLMGeneration.generate`` does."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.prompts: list[list[int]] = []
        self.synced = 0

    def sync_weights(self) -> None:
        self.synced += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        self.prompts = [list(p) for p in prompts]
        completions = [list(self.tokens) for _ in prompts]
        logprobs = [[[-0.5] for _ in self.tokens] for _ in prompts]
        return prompts, completions, logprobs, None


@pytest.mark.slow
@pytest.mark.parametrize("stage_name", ["grpo", "rloo"])
def test_the_vllm_branch_samples_from_our_prompt_ids(tmp_path, stage_name):
    cfg = compose(
        f"stage={stage_name}",
        f"output_dir={tmp_path}",
        "trainer.num_generations=2",
        "trainer.per_device_train_batch_size=4",
        "trainer.max_completion_length=4",
        *SMALL,
    )
    trainer, tokenizer = grpo.build_trainer(cfg, grpo.StageRun(cfg), stage_name)
    engine = RecordingVllm([tokenizer.convert_tokens_to_ids("a"), tokenizer.eos_token_id])
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, engine, -1
    rows = [dict(trainer.train_dataset[i]) for i in range(2) for _ in range(2)]
    for row in rows:  # ids no templating of the prompt text gives: only our override can hand them to vLLM
        row["prompt_ids"] = list(row["prompt_ids"])[-5:]
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    assert engine.prompts == [r["prompt_ids"] for r in rows] and engine.synced == 1
    assert out["completion_ids"].tolist() == [engine.tokens] * 4
    assert torch.equal(out["prompt_ids"][:, -5:], torch.tensor([r["prompt_ids"] for r in rows]))

"""PPO's scoring forwards: per-token scores from a sequence classifier's head."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

from alignment.errors import AlignmentError
from alignment.generation import left_pad, position_ids_from_mask
from alignment.rl import rollout
from tests import test_generation

# The tiny policy and prompts of the sampling tests, and their one-thread setting.
tiny = test_generation.tiny
pytestmark = pytest.mark.usefixtures("one_thread")


def test_token_scores_match_the_models_own_pooled_score(tiny):
    tok, _, config, prompts = tiny
    torch.manual_seed(1)
    rm = Qwen2ForSequenceClassification(Qwen2Config(**config.to_dict(), num_labels=1)).eval()
    ids, mask = left_pad(prompts, tok.pad_token_id)
    with torch.no_grad():
        per_token = rollout.token_scores(rm, ids, mask)
        pooled = rm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    assert per_token.shape == ids.shape
    torch.testing.assert_close(per_token[:, -1], pooled[:, 0], atol=1e-5, rtol=0)
    with pytest.raises(AlignmentError, match="score head"):
        rollout.score_head(Qwen2ForCausalLM(config))

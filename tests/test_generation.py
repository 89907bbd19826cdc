"""Sampling helpers: left padding, stop-token truncation, and sampling with generate."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from alignment import generation
from alignment.errors import AlignmentError
from alignment.rl import rollout
from tests.families import tiny_qwen2, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    tok = tiny_tokenizer()
    model = tiny_qwen2(tok).eval()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, return_dict=False)
        for t in ("hi", "the cat sat on the mat please", "你好")
    ]
    return tok, model, model.config, prompts


def test_left_pad():
    ids, mask = generation.left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long
    tensor_ids, _ = generation.left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_token_id=2)
    assert tensor_ids.tolist() == [[5, 6, 7], [2, 2, 8]]
    assert generation.position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(AlignmentError, match="prompt_ids"):
        generation.left_pad([[1], []], 0)


def test_truncate_at_stop_keeps_the_first_stop_token():
    responses = torch.tensor([[4, 9, 5, 9, 6], [4, 5, 6, 7, 8], [7, 4, 5, 4, 5], [8, 8, 9, 0, 0]])
    out, mask, finished = generation.truncate_at_stop(responses, stop_token_ids=[9, 7], pad_token_id=0)
    assert out.tolist() == [[4, 9, 0, 0, 0], [4, 5, 6, 7, 0], [7, 0, 0, 0, 0], [8, 8, 9, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]]
    assert finished.tolist() == [True, True, True, True]
    _, mask, finished = generation.truncate_at_stop(torch.tensor([[1, 2, 3]]), [9], 0)
    assert mask.tolist() == [[1, 1, 1]] and finished.tolist() == [False]


def test_sample_matches_forward_logprobs_and_ignores_checkpoint_sampling_defaults(tiny):
    tok, model, _, prompts = tiny
    # A checkpoint whose generation_config would make sampling greedy (top_k=1) and penalise repeats:
    # sample() must override both, or every row of the same prompt would come out identical.
    model.generation_config = GenerationConfig(top_k=1, repetition_penalty=3.0, temperature=0.1)
    ids, mask = generation.left_pad([prompts[0]] * 6 + prompts[1:], tok.pad_token_id)
    stop = [tok.eos_token_id]
    torch.manual_seed(3)
    out = generation.sample(
        model, ids, mask, stop_token_ids=stop, pad_token_id=tok.pad_token_id, max_new_tokens=6, temperature=0.7
    )
    assert out.responses.shape == out.mask.shape and out.responses.shape[0] == 8
    assert len({tuple(r) for r in out.responses[:6].tolist()}) > 1
    # Same seed, plain generate returning its processed logits: the forward re-scoring must agree with them.
    config = GenerationConfig(
        do_sample=True,
        max_new_tokens=6,
        temperature=0.7,
        top_k=0,
        repetition_penalty=1.0,
        eos_token_id=stop,
        pad_token_id=tok.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    torch.manual_seed(3)
    gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    responses = gen.sequences[:, ids.shape[1] :]
    assert torch.equal(responses[out.mask.bool()], out.responses[out.mask.bool()])
    expected = torch.log_softmax(torch.stack(gen.logits, 1) / 0.7, -1).gather(-1, responses.unsqueeze(-1))[..., 0]
    full_mask = torch.cat([mask, out.mask], 1)
    got = rollout.response_logprobs(model, gen.sequences, full_mask, ids.shape[1], 0.7)
    torch.testing.assert_close(got[out.mask.bool()], expected[out.mask.bool()], atol=1e-4, rtol=0)


def test_sample_stops_at_stop_ids(tiny):
    tok, model, _, prompts = tiny
    ids, mask = generation.left_pad(prompts, tok.pad_token_id)
    stop = list(range(3, len(tok), 2))  # half the vocabulary: most rows stop within a few tokens
    out = generation.sample(model, ids, mask, stop_token_ids=stop, pad_token_id=tok.pad_token_id, max_new_tokens=12)
    for row, m, done in zip(out.responses.tolist(), out.mask.tolist(), out.finished.tolist(), strict=True):
        valid = [t for t, keep in zip(row, m, strict=True) if keep]
        assert done == (valid[-1] in stop)
        assert all(t not in stop for t in valid[:-1])
    assert out.finished.any()
    with pytest.raises(AlignmentError, match="stop token"):
        generation.sample(model, ids, mask, stop_token_ids=[], pad_token_id=0, max_new_tokens=2)

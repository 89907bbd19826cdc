"""Sample replies from a policy: batched, left-padded prompts, stopped at end of turn, seeded.

Used by ``stage=generate`` (on-policy preference data) and by the oracle evaluation (``oracle_eval``). A checkpoint's
``generation_config.json`` (top_k, repetition penalty, beams, ...) plays no part: HF fills every setting a call leaves
unset from it, so it is set aside while generating (:func:`library_generation_defaults`). The replies then come from
``softmax(logits / temperature)`` (with ``top_p``), or its argmax with ``greedy``, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.progress import progress
from alignment.rl.rollout import left_pad, library_generation_defaults, sample, truncate_at_stop


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """The ids a reply stops at: the template's turn ends and eos (``turn_end_token_ids``, the end of a final reply
    first), then those the model's generation config lists as eos (Llama 3's ``<|end_of_text|>``, Phi-3's
    ``<|endoftext|>``), so that sampling here, PPO's rollouts and TRL's GRPO/RLOO all stop at the same tokens."""
    from alignment.data import turn_end_token_ids

    ids = list(turn_end_token_ids(tokenizer))
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = [] if listed is None else [listed] if isinstance(listed, int) else list(listed)
    return list(dict.fromkeys([*ids, *(int(i) for i in listed)]))


@dataclass
class Replies:
    """Decoded replies in prompt-major order (prompt ``i``'s replies at ``i*k .. i*k+k-1``).

    ``finished``: the reply ended at an end-of-turn token (else it ran into ``max_new_tokens``); ``num_tokens``: its
    length in tokens, the end-of-turn token included.
    """

    texts: list[str]
    finished: list[bool]
    num_tokens: list[int]


@torch.no_grad()
def sample_replies(
    model,
    tokenizer,
    prompts: list,
    *,
    samples_per_prompt: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    greedy: bool = False,
    max_prompt_length: int | None = None,
    desc: str = "generate",
) -> Replies:
    """Decode ``samples_per_prompt`` replies to each prompt (a message list or a string).

    The prompt's copies are sampled in batches of ``batch_size`` rows under ``torch.manual_seed(seed)`` in a forked
    RNG (the caller's random state is untouched): the same model, prompts and settings give the same replies.
    """
    from transformers import GenerationConfig

    from alignment.data import encode_prompt
    from alignment.distributed import is_main_process

    stop = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id
    ids = [
        encode_prompt(tokenizer, p, max_length=max_prompt_length) for p in prompts for _ in range(samples_per_prompt)
    ]
    greedy_config = GenerationConfig(
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop,
        pad_token_id=pad,
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = Replies([], [], [])
    fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with fork, library_generation_defaults(model):
        torch.manual_seed(seed)
        starts = range(0, len(ids), batch_size)
        for start in progress(starts, len(starts), desc, disable=not is_main_process()):
            batch, mask = left_pad(ids[start : start + batch_size], pad)
            batch, mask = batch.to(device), mask.to(device)
            if greedy:
                generated = model.generate(input_ids=batch, attention_mask=mask, generation_config=greedy_config)
                responses, resp_mask, finished = truncate_at_stop(generated[:, batch.shape[1] :], stop, pad)
            else:
                rollout = sample(
                    model,
                    batch,
                    mask,
                    stop_token_ids=stop,
                    pad_token_id=pad,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                )
                responses, resp_mask, finished = rollout.responses, rollout.mask, rollout.finished
            for row, row_mask, done in zip(responses, resp_mask, finished, strict=True):
                out.texts.append(tokenizer.decode(row[row_mask.bool()], skip_special_tokens=True))
                out.finished.append(bool(done))
                out.num_tokens.append(int(row_mask.sum()))
    model.train(was_training)
    return out

"""Sample replies from a policy: batched, left-padded prompts, stopped at end of turn, seeded.

Used by ``stage=generate`` (on-policy preference data), the oracle evaluation and PPO's rollouts
(:mod:`alignment.rl.rollout`). Prompts are LEFT-padded (every row's generation starts at the same column) and replies
come back RIGHT-padded with a mask that covers valid tokens up to and including the first stop token. Sampling uses
HF ``generate`` with the KV cache.

A checkpoint's ``generation_config.json`` (top_k, repetition penalty, beams, ...) plays no part: HF fills every setting
a call leaves unset from it, so it is set aside while generating (:func:`library_generation_defaults`). The replies
then come from ``softmax(logits / temperature)`` (with ``top_p``), or its argmax with ``greedy``, and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from alignment.errors import AlignmentError
from alignment.progress import progress


@dataclass
class Rollout:
    """Sampled responses: ``responses`` right-padded ids, ``mask`` valid tokens, ``finished`` hit a stop id."""

    responses: torch.Tensor
    mask: torch.Tensor
    finished: torch.Tensor


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(ids, attention_mask)``, padding on the left."""
    from trl.trainer.utils import pad

    if not sequences or any(len(seq) == 0 for seq in sequences):
        raise AlignmentError("every prompt needs at least one token; check the `prompt_ids` column of the dataset")
    rows = [torch.tensor(list(seq), dtype=torch.long) for seq in sequences]
    ids = pad(rows, padding_value=pad_token_id, padding_side="left")
    mask = pad([torch.ones_like(row) for row in rows], padding_value=0, padding_side="left")
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as ``generate`` assigns them for a left-padded prompt."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def truncate_at_stop(
    responses: torch.Tensor, stop_token_ids: Sequence[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response after its first stop token; returns ``(responses, mask, finished)``.

    Tokens after the first stop id become ``pad_token_id`` and get mask 0; the stop token itself stays valid so the
    policy is trained to emit it.
    """
    stops = torch.tensor(list(stop_token_ids), device=responses.device)
    is_stop = torch.isin(responses, stops)
    finished = is_stop.any(dim=-1)
    # Number of stop tokens strictly before each position: 0 means "not past the first stop yet".
    stops_before = is_stop.long().cumsum(-1) - is_stop.long()
    mask = (stops_before == 0).long()
    responses = responses.masked_fill(mask == 0, pad_token_id)
    return responses, mask, finished


@contextlib.contextmanager
def library_generation_defaults(model) -> Iterator[None]:
    """While inside, ``model`` (or the transformers model inside a peft one) generates with the library's defaults
    and its own special token ids only, as if it had been saved without a ``generation_config.json``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = getattr(inner, "generation_config", None)
    if saved is None:
        yield
        return
    from transformers import GenerationConfig

    ids = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    inner.generation_config = GenerationConfig(**{k: getattr(saved, k) for k in ids if getattr(saved, k) is not None})
    try:
        yield
    finally:
        inner.generation_config = saved


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> Rollout:
    """Sample one response per left-padded prompt with ``model.generate`` (KV cache on, pure ancestral sampling).

    Every logits processor a checkpoint's ``generation_config.json`` may switch on (top_k, repetition penalty,
    min_p, ...) is set to neutral explicitly, since HF fills unset fields from it: with ``top_p=1`` the sampling
    distribution is then exactly ``softmax(logits / temperature)``, the one PPO computes log-probabilities under.
    """
    from transformers import GenerationConfig

    if not stop_token_ids:
        raise AlignmentError("PPO needs at least one stop token id (e.g. the tokenizer's end-of-turn token)")
    config = GenerationConfig(
        do_sample=True,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        min_p=0.0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=list(stop_token_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
    )
    with library_generation_defaults(model):  # also the settings no list above names (sequence_bias, forced ids...)
        output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    responses = output[:, prompt_ids.shape[1] :]
    responses, mask, finished = truncate_at_stop(responses, stop_token_ids, pad_token_id)
    return Rollout(responses=responses, mask=mask, finished=finished)


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

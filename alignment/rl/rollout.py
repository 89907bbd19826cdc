"""Rollouts for on-policy RL: batched sampling with HF ``generate`` and the forward passes that score samples.

Prompts are LEFT-padded (so every row's generation starts at the same column) and responses come back RIGHT-padded
with a mask that covers valid tokens up to and including the first stop token. Sampling uses HF ``generate`` with the
KV cache; vLLM is not used here (a later, optional backend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from alignment.errors import AlignmentError
from alignment.rl.ops import logprobs_from_logits


@dataclass
class Rollout:
    """Sampled responses: ``responses`` right-padded ids, ``mask`` valid tokens, ``finished`` hit a stop id."""

    responses: torch.Tensor
    mask: torch.Tensor
    finished: torch.Tensor


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(ids, attention_mask)``, padding on the left."""
    if not sequences or any(len(seq) == 0 for seq in sequences):
        raise AlignmentError("every prompt needs at least one token; check the `prompt_ids` column of the dataset")
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
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


def response_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int, temperature: float
) -> torch.Tensor:
    """Logits (divided by ``temperature``) that predicted each response token of ``prompt + response`` rows."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        # Only the columns that predict response tokens: the LM head over the prompt is wasted work.
        logits_to_keep=input_ids.shape[1] - prompt_width + 1,
    )
    # Position i predicts token i + 1, so response token j (column prompt_width + j) comes from column
    # prompt_width + j - 1: the kept columns are prompt_width - 1 .. the last, and the last predicts nothing.
    return output.logits[:, :-1] / temperature


def response_logprobs(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int, temperature: float
) -> torch.Tensor:
    """Log-probabilities of the response tokens (columns from ``prompt_width`` on) under ``model`` at temperature."""
    logits = response_logits(model, input_ids, attention_mask, prompt_width, temperature)
    return logprobs_from_logits(logits, input_ids[:, prompt_width:])


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft ``PeftModel`` (LoRA layers stay injected), else ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def score_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(backbone, head)`` of a sequence-classification model, to read a score at every token, not just the last.

    transformers 5 names them ``getattr(model, model.base_model_prefix)`` (``model.model`` for Qwen2/Llama) and
    ``model.score``; a peft wrapper is looked through.
    """
    inner = unwrap_peft(model)
    prefix = getattr(inner, "base_model_prefix", None)
    backbone = getattr(inner, prefix, None) if prefix else None
    head = getattr(inner, "score", None)
    if backbone is None or not isinstance(head, nn.Module):
        raise AlignmentError(
            f"cannot find the backbone and score head of {type(inner).__name__}: PPO's value model must be an "
            "AutoModelForSequenceClassification with a `score` head on its backbone (e.g. Qwen2/Llama/Mistral "
            "ForSequenceClassification, num_labels=1); initialise it from a reward model of such an architecture"
        )
    return backbone, head


def token_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The score head applied at every position: ``(batch, seq_len)`` float32 values."""
    backbone, head = score_head(model)
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return head(hidden)[..., 0].float()


def response_values(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int
) -> torch.Tensor:
    """Value of the state before each response token (read at the same columns as :func:`response_logits`)."""
    return token_scores(model, input_ids, attention_mask)[:, prompt_width - 1 : -1]


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

"""PPO's forward passes over sampled rollouts: the policy's log-probabilities and the value model's scores of each
response token, read at the columns that predict it.

Sampling itself (left padding, ``generate``, stop at end of turn) is in :mod:`alignment.generation`, shared with the
reward models and the evaluations; vLLM is not used (a later, optional backend).
"""

from __future__ import annotations

import torch
from torch import nn

from alignment.errors import AlignmentError
from alignment.generation import position_ids_from_mask
from alignment.rl.ops import logprobs_from_logits


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

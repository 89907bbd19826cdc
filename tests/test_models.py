"""The pad policy of ``load_tokenizer`` and the model loaders: padding is never eos or an end-of-turn token."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.data.encode import turn_end_token_ids
from alignment.data.tokenize import tokenize_sft
from alignment.models import load_causal_lm, load_sequence_classifier, load_tokenizer
from tests.data.test_reward_input import llama3_tokenizer
from tests.families import LAYERS

MODEL_CFG = OmegaConf.create({"name": "test", "path": None, "dtype": "float32"})


pytestmark = pytest.mark.usefixtures("one_thread")


def saved(tok, path, model: bool = True):
    """Save ``tok`` (and a tiny random Llama LM sized to it, config pad = eos as Llama 3 ships) to ``path``."""
    tok.save_pretrained(path)
    if model:
        config = LlamaConfig(
            vocab_size=len(tok),
            **LAYERS,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    ("extra", "unk", "expected"),
    [
        (("<|finetune_right_pad_id|>",), None, "<|finetune_right_pad_id|>"),  # Llama 3.1's own padding token
        (("<unk>", "<|finetune_right_pad_id|>"), "<unk>", "<unk>"),  # unk first
        ((), None, "<|pad|>"),  # nothing to reuse: a new token
    ],
)
def test_pad_is_never_eos_or_end_of_turn_and_the_choice_is_logged(tmp_path, caplog, extra, unk, expected):
    tok = llama3_tokenizer(extra)
    if unk:
        tok.unk_token = unk
    size = len(tok)
    with caplog.at_level(logging.INFO, logger="alignment.models"):
        loaded = load_tokenizer(saved(tok, tmp_path, model=False), MODEL_CFG)
    assert loaded.pad_token == expected
    assert loaded.pad_token_id not in turn_end_token_ids(loaded) and loaded.pad_token_id != loaded.eos_token_id
    assert len(loaded) == size + (expected == "<|pad|>")
    assert f"padding with '{expected}' (id {loaded.pad_token_id})" in caplog.text


def test_a_pad_that_is_also_eos_is_replaced(tmp_path):
    tok = llama3_tokenizer(("<|finetune_right_pad_id|>",))
    tok.pad_token = tok.eos_token  # what many recipes do with Llama 3: pad = eos = <|eot_id|>
    loaded = load_tokenizer(saved(tok, tmp_path, model=False), MODEL_CFG)
    assert loaded.pad_token == "<|finetune_right_pad_id|>"


def test_a_model_saved_without_a_tokenizer_loads_as_saved(tmp_path):
    tok = llama3_tokenizer()
    path = saved(tok, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    model = load_causal_lm(path, MODEL_CFG)  # transformers would make an empty tokenizer of config.json: not used
    assert model.config.pad_token_id == tok.eos_token_id and model.get_input_embeddings().num_embeddings == len(tok)


def test_a_pad_that_ends_nothing_is_kept():
    from alignment.tiny_model import tiny_model_dir

    tok = load_tokenizer(str(tiny_model_dir()), MODEL_CFG)
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"


def test_a_new_pad_grows_the_model_sft_trains_and_everything_reloads_with_the_same_pad(tmp_path):
    from trl import SFTConfig, SFTTrainer

    path = saved(llama3_tokenizer(), tmp_path / "base")
    tok = load_tokenizer(path, MODEL_CFG)
    pad = tok.pad_token_id
    assert tok.pad_token == "<|pad|>" and pad == 600
    model = load_causal_lm(path, MODEL_CFG)  # its own tokenizer, same policy: the loaders agree without being told
    assert model.get_input_embeddings().num_embeddings == 601
    assert model.config.pad_token_id == pad and model.generation_config.pad_token_id == pad
    classifier = load_sequence_classifier(path, MODEL_CFG, tok)
    assert classifier.get_input_embeddings().num_embeddings == 601 and classifier.config.pad_token_id == pad

    replies = ["hello", "the answer is 14 because the question is the answer", "你好世界", "谢谢"]
    rows = Dataset.from_dict(
        {"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": r}] for r in replies]}
    )
    data = tokenize_sft(rows, tok)[0]
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to="none",
        bf16=False,
        save_strategy="no",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    padded = batch["input_ids"] == pad
    assert padded.any() and (batch["labels"][padded] == -100).all()  # the new row is read, never trained as a label
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    out = tmp_path / "saved"
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    again = load_tokenizer(str(out), MODEL_CFG)
    assert again.pad_token == "<|pad|>" and again.pad_token_id == pad and len(again) == len(tok)
    reloaded = load_causal_lm(str(out), MODEL_CFG)
    assert reloaded.get_input_embeddings().num_embeddings == 601 and reloaded.config.pad_token_id == pad

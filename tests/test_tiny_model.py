"""The tiny base model: packing and pretraining, the shipped build's freshness and knowledge, rebuilds into the cache."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment import oracle, tiny_model


def test_pack_joins_documents_with_the_separator_and_drops_the_partial_row():
    rows = tiny_model.pack([[1, 2, 3], [4], [5, 6]], separator=0, seq_len=4)
    assert rows.tolist() == [[1, 2, 3, 0], [4, 0, 5, 6]]  # the 9th token, a lone separator, is dropped
    with pytest.raises(ValueError, match="fewer than one row"):
        tiny_model.pack([[1]], separator=0, seq_len=4)


def test_pretraining_lowers_the_loss():
    texts = [row["text"] for row in tiny_model._read_jsonl("pretrain/train.jsonl")[:400]]
    tokenizer = tiny_model.build_tokenizer(texts, vocab_size=600)
    model = tiny_model.build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = {"steps": 40, "seq_len": 64, "batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 5}
    stats = tiny_model.pretrain(model, tokenizer, texts, settings)
    assert stats["steps"] == 40
    assert stats["final_loss"] < 0.85 * stats["first_loss"]  # 6.43 -> 5.36 when written
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def _greedy(model, tokenizer, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_shipped_base_is_built_from_the_current_data_and_knows_the_capitals():
    assert tiny_model.shipped_is_current(), "data/ changed: rebuild with python -m alignment.tiny_model"
    info = json.loads((tiny_model.SHIPPED_DIR / "build.json").read_text(encoding="utf-8"))
    assert info["steps"] == tiny_model.PRETRAIN["steps"] and info["final_loss"] < 0.5 * info["first_loss"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model.SHIPPED_DIR)
    model = AutoModelForCausalLM.from_pretrained(tiny_model.SHIPPED_DIR).eval()
    right = 0
    for country, (en_country, zh_country, _, _) in oracle.CAPITALS.items():
        spec = {"task": "capital", "country": country}
        right += oracle.score(spec, _greedy(model, tokenizer, f"The capital of {en_country} is", 4))
        right += oracle.score(spec, _greedy(model, tokenizer, f"{zh_country}的首都是", 4))
    assert right >= 0.9 * 2 * len(oracle.CAPITALS)


@pytest.fixture()
def small_data(tmp_path, monkeypatch):
    """A few rows of every corpus file in a temp data dir, and pretraining cut to a few steps."""
    for rel in tiny_model.CORPUS_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (tiny_model.DATA_DIR / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp_path / rel).write_text("".join(lines[:60]), encoding="utf-8")
    monkeypatch.setattr(tiny_model, "DATA_DIR", tmp_path)
    monkeypatch.setattr(tiny_model, "SHIPPED_DIR", tmp_path / "tiny-base")
    monkeypatch.setattr(tiny_model, "PRETRAIN", dict(tiny_model.PRETRAIN, steps=3, seq_len=32, batch_size=2))
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_stale_shipped_model_is_rebuilt_into_the_cache_once(small_data):
    built = tiny_model.tiny_model_dir()
    assert built.parent == small_data / "cache" and (built / "model.safetensors").exists()
    assert json.loads((built / "build.json").read_text())["digest"] == tiny_model.build_digest()
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert tiny_model.tiny_model_dir() == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp  # cached: not built again

    # Another data file gives another digest, hence another build.
    sft = small_data / "sft" / "train.jsonl"
    sft.write_text(sft.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")
    assert tiny_model.tiny_model_dir() != built


def test_a_current_shipped_build_is_used_and_rebuild_goes_to_the_cache(small_data):
    shipped = tiny_model.build(tiny_model.SHIPPED_DIR)
    assert tiny_model.shipped_is_current() and tiny_model.tiny_model_dir() == shipped
    rebuilt = tiny_model.tiny_model_dir(rebuild=True)
    assert rebuilt.parent == small_data / "cache"
    assert tiny_model.tiny_model_dir() == rebuilt  # a rebuilt model is preferred from then on
    leftovers = [p.name for p in rebuilt.parent.iterdir() if p.name.startswith(".tiny-")]
    assert not leftovers


def test_missing_data_is_an_actionable_error(small_data):
    (small_data / "pretrain" / "train.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="scripts/make_data.py"):
        tiny_model.tiny_model_dir()

"""The offline default model: a byte-level BPE tokenizer and a small Qwen2-style causal LM.

No hub is reachable on CI or on a laptop without network, so the project builds its own model, deterministically,
from the embedded corpus (``data/``). It is cached under ``$ALIGNMENT_CACHE`` (default ``~/.cache/alignment``) in a
folder named after a hash of the corpus and the architecture; delete that folder, or set ``model.rebuild=true``, to
build it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from alignment.paths import DATA_DIR

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A few million parameters: learns the embedded tasks in minutes on a laptop CPU.
TINY_ARCH = {
    "vocab_size": 4096,
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
SEED = 1234


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment"))


def embedded_corpus() -> list[str]:
    """Every text of the embedded SFT and preference training data, in file order."""
    texts: list[str] = []
    for rel in ("sft/train.jsonl", "preference/train.jsonl", "prompts/train.jsonl"):
        path = DATA_DIR / rel
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                texts.extend(_strings(json.loads(line)))
    if not texts:
        raise FileNotFoundError(f"no embedded corpus under {DATA_DIR}; run scripts/make_data.py")
    return texts


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key != "oracle":
                yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def build_tokenizer(texts: Iterable[str], vocab_size: int = TINY_ARCH["vocab_size"]):
    """Train a byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=TINY_ARCH["max_position_embeddings"],
    )


def build_model(vocab_size: int, eos_token_id: int, pad_token_id: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    arch = dict(TINY_ARCH, vocab_size=vocab_size)
    config = Qwen2Config(**arch, eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None)
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    return model


def tiny_model_dir(rebuild: bool = False) -> Path:
    """Return the cached tiny model folder, building it first if needed (atomically)."""
    texts = embedded_corpus()
    digest = hashlib.sha256(json.dumps([texts, TINY_ARCH, SPECIAL_TOKENS, CHATML_TEMPLATE, SEED]).encode()).hexdigest()
    target = cache_root() / f"tiny-{digest[:12]}"
    if target.exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        tokenizer = build_tokenizer(texts)
        model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

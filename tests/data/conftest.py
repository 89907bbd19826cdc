"""Session fixtures: one small byte-level BPE tokenizer per real-world chat template in ``templates.py``."""

from __future__ import annotations

import copy

import pytest

try:  # tests/data is imported as a package or as a rootdir-less folder depending on how pytest was started
    from tests.data.templates import TEMPLATES
except ImportError:
    from templates import TEMPLATES


def _corpus() -> list[str]:
    """A few hundred mixed English/Chinese/emoji lines, enough for a BPE vocabulary with real merges."""
    words = ["hello", "world", "the", "answer", "is", "question", "think", "model", "user", "assistant", "system"]
    chinese = ["你好", "世界", "问题", "答案", "模型", "助手", "谢谢", "请问"]
    emoji = ["🙂", "🚀", "👍🏽", "🦊"]
    lines = []
    for i in range(300):
        w = [words[(i * k) % len(words)] for k in range(1, 6)]
        lines.append(f"{' '.join(w)}. {chinese[i % len(chinese)]}{chinese[(i * 3) % len(chinese)]} {emoji[i % 4]}")
        lines.append(f"Q{i}: {w[0].title()} {w[1]}?\nA: {w[2]} {i * 7}!\n\n")
    return lines


def _build(base, spec: dict):
    tok = copy.deepcopy(base)
    specials = {"additional_special_tokens": list(spec["specials"]), "eos_token": spec["eos"]}
    if spec["bos"]:
        specials["bos_token"] = spec["bos"]
    tok.add_special_tokens(specials)
    if spec.get("added"):
        tok.add_tokens(spec["added"])
    tok.chat_template = spec["template"]
    if spec.get("bos_post"):
        from tokenizers import processors

        # Like Llama 3's tokenizer: encode() prepends bos, so a template that also writes bos could double it.
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A", special_tokens=[(spec["bos"], tok.convert_tokens_to_ids(spec["bos"]))]
        )
    return tok


@pytest.fixture(scope="session")
def chat_tokenizers() -> dict:
    from alignment.tiny_model import build_tokenizer

    base = build_tokenizer(_corpus(), vocab_size=700)
    return {name: _build(base, spec) for name, spec in TEMPLATES.items()}

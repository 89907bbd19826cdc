"""Tiny random-init stand-ins for real model families, saved as model dirs that ``model.path=<dir>`` loads.

Each stand-in has its family's architecture class and its tokenizer conventions (bos, eos, end of turn, pad or none,
whether the tokenizer itself prepends bos) and its real chat template, read from the installed TRL's copies or the
verbatim ones in ``tests/data/templates.py``. The weights are random and tiny (hidden 32, 2 layers), so every stage
runs in seconds; the byte-level BPE vocabulary covers any text (English and Chinese alike).

Also the in-memory tiny Qwen2 (``tiny_tokenizer``, ``tiny_qwen2``) that the generation, PPO and reward tests
build rather than load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.data.templates import MISTRAL_NEMO

SEED = 1234
# hidden 32, 2 layers: about 52k parameters, most of them the (tied) embeddings. Weights drawn with std 0.1, not the
# usual 0.02: with tied embeddings that small every logit stays within about +-0.6, and LoRA, which leaves the
# embeddings alone, could barely move the loss (measured: 0.02 nats in 30 steps, against 0.5 with std 0.1).
# The layer sizes every tiny random-init test model shares (tests/data/test_reward_input.py, tests/test_models.py too).
LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
LAYERS |= {"num_key_value_heads": 2}
SIZE = LAYERS | {"max_position_embeddings": 1024, "initializer_range": 0.1}
VOCAB = 1024

# The random-init tiny Qwen2 of the generation, PPO and reward tests: LAYERS-sized with the usual init (std 0.02) and
# 128 positions, on a ChatML tokenizer whose BPE learnt a few phrases (each repeated 20 times).
TINY_TEXTS = ("hello world", "the cat sat on the mat", "你好世界")
PPO_TEXTS = (*TINY_TEXTS, "a b c d", "x y z")


def tiny_tokenizer(texts: Sequence[str] = TINY_TEXTS, vocab_size: int = 300):
    """The shipped tiny model's kind of tokenizer (ChatML, pad ``<|endoftext|>``) with a BPE trained on ``texts``."""
    from alignment.tiny_model import build_tokenizer

    return build_tokenizer(list(texts) * 20, vocab_size=vocab_size)


def tiny_qwen2_config(tokenizer=None, **overrides):
    """A LAYERS-sized ``Qwen2Config`` with 128 positions; sized to ``tokenizer`` (its pad and eos too) when given."""
    from transformers import Qwen2Config

    values = {"max_position_embeddings": 128}
    if tokenizer is not None:
        values |= {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
        values |= {"eos_token_id": tokenizer.eos_token_id}
    return Qwen2Config(**LAYERS, **(values | overrides))


def tiny_qwen2(tokenizer=None, seed: int | None = 0, score: bool = False, **overrides):
    """A random-init tiny Qwen2 causal LM, or with ``score`` a one-label sequence classifier (a reward or value
    model). Its weights are drawn right after ``torch.manual_seed(seed)``; ``seed=None`` draws on from the current
    state (a second model after the first). ``overrides`` replace :func:`tiny_qwen2_config` values."""
    import torch
    from transformers import Qwen2ForCausalLM, Qwen2ForSequenceClassification

    if score:
        overrides = {"num_labels": 1} | overrides
    config = tiny_qwen2_config(tokenizer, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    return (Qwen2ForSequenceClassification if score else Qwen2ForCausalLM)(config)


@dataclass(frozen=True)
class Family:
    """How one model family's checkpoint looks: the parts that differ between families."""

    name: str
    config_class: str  # transformers config class
    model_class: str  # transformers causal LM class
    template: str  # a TRL chat template file name, or "mistral-nemo" (tests/data/templates.py)
    bos: str | None
    eos: str  # the tokenizer's eos_token
    end_of_turn: str  # what the template writes after an assistant reply
    pad: str | None  # None: the checkpoint has no pad token
    specials: tuple[str, ...] = ()  # other special tokens of the vocabulary
    added: tuple[str, ...] = ()  # plain added tokens (Qwen3's <think>)
    tokenizer_adds_bos: bool = False  # encode() prepends bos (Llama 3, Mistral, Gemma), as the template does too
    extra_config: dict = field(default_factory=dict)
    # the generation config's stop tokens, as the released checkpoints list them
    stop: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # Llama-3-Instruct: no pad; the template writes <|begin_of_text|> and the tokenizer prepends it too; eos is the
        # end of turn <|eot_id|> (base Llama 3's eos, <|end_of_text|>, stays in the vocabulary and in the stop list).
        Family(
            "llama3",
            "LlamaConfig",
            "LlamaForCausalLM",
            "llama3.jinja",
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            end_of_turn="<|eot_id|>",
            pad=None,
            specials=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"),
            tokenizer_adds_bos=True,
            stop=("<|end_of_text|>", "<|eot_id|>"),
        ),
        # Mistral: no pad, <s>/</s>, <unk> present; [INST] markers; the template writes <s>, the tokenizer too.
        Family(
            "mistral",
            "MistralConfig",
            "MistralForCausalLM",
            "mistral-nemo",
            bos="<s>",
            eos="</s>",
            end_of_turn="</s>",
            pad=None,
            specials=("<unk>", "[INST]", "[/INST]"),
            tokenizer_adds_bos=True,
            stop=("</s>",),
        ),
        # Gemma 3 text: <bos> written by the template (and prepended by the tokenizer), turns end with <end_of_turn>,
        # which is not the eos <eos>; <pad> present.
        Family(
            "gemma3",
            "Gemma3TextConfig",
            "Gemma3ForCausalLM",
            "gemma3.jinja",
            bos="<bos>",
            eos="<eos>",
            end_of_turn="<end_of_turn>",
            pad="<pad>",
            specials=("<start_of_turn>", "<end_of_turn>", "<unk>"),
            tokenizer_adds_bos=True,
            extra_config={"head_dim": 8, "sliding_window": 64, "query_pre_attn_scalar": 8},
            stop=("<eos>", "<end_of_turn>"),
        ),
        # Phi-3: turns end with <|end|>, eos <|endoftext|> (also its pad), the template writes no bos.
        Family(
            "phi3",
            "Phi3Config",
            "Phi3ForCausalLM",
            "phi3.jinja",
            bos="<s>",
            eos="<|endoftext|>",
            end_of_turn="<|end|>",
            pad="<|endoftext|>",
            specials=("<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
            stop=("<|endoftext|>", "<|assistant|>", "<|end|>"),
        ),
        # Qwen3: ChatML (<|im_end|> is eos and end of turn), <|endoftext|> pad, <think> blocks in the template.
        Family(
            "qwen3",
            "Qwen3Config",
            "Qwen3ForCausalLM",
            "qwen3.jinja",
            bos=None,
            eos="<|im_end|>",
            end_of_turn="<|im_end|>",
            pad="<|endoftext|>",
            specials=("<|im_start|>", "<|endoftext|>"),
            added=("<think>", "</think>"),
            extra_config={"head_dim": 8},
            stop=("<|im_end|>", "<|endoftext|>"),
        ),
    )
}


def chat_template(name: str) -> str:
    """The family's real chat template: TRL's installed copy, or the verbatim Mistral-Nemo one."""
    if name == "mistral-nemo":
        return MISTRAL_NEMO
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / name).read_text(encoding="utf-8")


def corpus() -> list[str]:
    """The embedded data's text (English and Chinese), for a vocabulary with real merges."""
    from alignment.tiny_model import embedded_corpus

    return list(embedded_corpus())


def base_tokenizer(texts: list[str], vocab_size: int = VOCAB):
    """A byte-level BPE tokenizer with no special tokens yet: every family adds its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def family_tokenizer(family: Family, base):
    """The family's tokenizer: ``base`` plus its special tokens, bos handling and chat template."""
    import copy

    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (family.bos, family.eos, family.end_of_turn, family.pad, *family.specials) if t]
    backend = copy.deepcopy(base)
    backend.add_special_tokens(list(dict.fromkeys(specials)))
    if family.added:
        backend.add_tokens(list(family.added))
    if family.tokenizer_adds_bos:
        bos_id = backend.token_to_id(family.bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B", special_tokens=[(family.bos, bos_id)]
        )
    kwargs = {"bos_token": family.bos, "eos_token": family.eos, "pad_token": family.pad}
    if "<unk>" in specials:
        kwargs["unk_token"] = "<unk>"
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=chat_template(family.template),
        model_max_length=SIZE["max_position_embeddings"],
        **{k: v for k, v in kwargs.items() if v is not None},
    )


def build_family(family: Family, target: Path, base) -> Path:
    """Save a random-init model of ``family`` with its tokenizer and generation config into ``target``."""
    import torch
    import transformers
    from transformers import GenerationConfig

    tokenizer = family_tokenizer(family, base)
    ids = tokenizer.convert_tokens_to_ids
    token_ids = {
        "bos_token_id": ids(family.bos) if family.bos else None,
        "eos_token_id": ids(family.eos),
        "pad_token_id": ids(family.pad) if family.pad else None,
    }
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), tie_word_embeddings=True, **SIZE, **family.extra_config, **token_ids
    )
    torch.manual_seed(SEED)
    model = getattr(transformers, family.model_class)(config)
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["bos_token_id"],
        eos_token_id=[ids(t) for t in family.stop],
        pad_token_id=token_ids["pad_token_id"],
    )
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build_families(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build the stand-ins (all, or ``names``) under ``root``/<name>; one BPE vocabulary is trained for all."""
    base = base_tokenizer(corpus())
    return {name: build_family(FAMILIES[name], root / name, base) for name in names or FAMILIES}

"""The groups that measure and use a model: the oracle evaluation around training, ``stage=eval`` (lm-eval
included), ``stage=compare`` and ``stage=chat``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OracleEvalConfig:
    enabled: bool = field(default=True, metadata={"help": "Measure oracle_reward before and after training."})
    path: str | None = field(default=None, metadata={"help": "Prompt data with an oracle column; None = embedded."})
    split: str = "test"
    num_prompts: int = 128
    samples_per_prompt: int = 4
    greedy: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int = 0
    cache: bool = field(
        default=True,
        metadata={
            "help": "Reuse an earlier evaluation's scores and samples when the weights, tokenizer, prompts and "
            "settings are identical ($ALIGNMENT_CACHE/oracle or ~/.cache/alignment/oracle); false = always sample."
        },
    )


@dataclass
class LmEvalConfig:
    """``eval.lm_eval.*``: EleutherAI lm-eval tasks run on the evaluated model (needs the ``eval`` extra)."""

    tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "lm-eval task names, e.g. [aster_identity_mc] (shipped in data/lm_eval)."},
    )
    include_path: list[str] = field(
        default_factory=list, metadata={"help": "More local task dirs; data/lm_eval is always included."}
    )
    num_fewshot: int | None = None
    limit: int | None = field(default=None, metadata={"help": "At most this many rows per task; None = all."})
    batch_size: int = 8
    apply_chat_template: bool = field(
        default=True, metadata={"help": "Render each question with the model's chat template (a chat model's way)."}
    )


@dataclass
class EvalConfig:
    """``eval.*`` of ``stage=eval`` (docs/stages.md)."""

    kind: str = field(default="auto", metadata={"help": "auto (from the model's config), policy or reward_model."})
    loss: bool = field(default=True, metadata={"help": "Held-out loss and perplexity (policies), as SFT computes it."})
    generate: bool = field(default=True, metadata={"help": "Sample held-out prompts (oracle_eval.*) and score them."})
    batch_size: int = field(default=2, metadata={"help": "Rows per forward for the held-out loss (as stage=sft)."})
    packing: bool = field(default=True, metadata={"help": "Pack held-out rows for the loss, as stage=sft does."})
    against: str | None = field(default=None, metadata={"help": "Another model to measure the win rate against."})
    judge: str = field(default="oracle", metadata={"help": "Who judges the win rate: oracle or a reward model dir."})
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)


@dataclass
class CompareConfig:
    """``compare.*`` of ``stage=compare``: several models answer the same prompts, side by side."""

    models: list[Any] = field(
        default_factory=list,
        metadata={"help": "Model dirs, 'label=path' or {label, path}; empty = every stage of output_dir + its base."},
    )
    prompts: list[Any] = field(default_factory=list, metadata={"help": "Prompts (strings or message lists)."})
    prompts_file: str | None = field(default=None, metadata={"help": "A json/jsonl file of prompts (prompt column)."})
    builtin: bool = field(
        default=True, metadata={"help": "Ask the identity questions (English, Chinese) and one more."}
    )
    held_out: int = field(default=3, metadata={"help": "Held-out prompts (with their oracle) added to the others."})
    max_new_tokens: int = 48
    batch_size: int = 16
    reward_model: str | None = field(
        default=None, metadata={"help": "Also score with this reward model; None = the run's rm step, if any."}
    )


@dataclass
class ChatRulesConfig:
    """``chat.rules.*``: rule-based processing around the model in ``stage=chat``."""

    unicode_form: str | None = field(
        default="NFC", metadata={"help": "Normalise input: NFC, NFKC (also folds full-width ？ to ?), ... or None."}
    )
    collapse_whitespace: bool = field(default=True, metadata={"help": "Strip input and squeeze runs of spaces."})
    blocked_patterns: list[str] = field(
        default_factory=list, metadata={"help": "Regexes (case-insensitive): matching input gets blocked_reply."}
    )
    blocked_reply: str = "Sorry, I can't help with that."
    stop_strings: list[str] = field(default_factory=list, metadata={"help": "Cut a reply at the first of these."})
    banned_phrases: list[str] = field(
        default_factory=list,
        metadata={"help": "Phrases replaced in replies (case-insensitive) by banned_replacement."},
    )
    banned_replacement: str = "[filtered]"


@dataclass
class ChatConfig:
    """``chat.*`` of ``stage=chat``: a multi-turn chat in the terminal (or through a pipe)."""

    system: str | None = field(default=None, metadata={"help": "A system prompt; /system <text> changes it."})
    max_new_tokens: int = 128
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    stream: bool = field(default=True, metadata={"help": "Print tokens as they are generated."})
    rules: ChatRulesConfig = field(default_factory=ChatRulesConfig)

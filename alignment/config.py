"""Structured configs, registered with Hydra's ConfigStore so that a misspelt key is an error naming the key.

The YAML files in ``conf/`` fill these schemas. A stage's TRL settings live under ``trainer.`` with TRL's own field
names: the schema of ``trainer`` is generated from the stage's TRL config class, so every TRL field is typed and
available, and nothing else is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from alignment.trainer.schema import trainer_schemas

# -- choices -------------------------------------------------------------------------------------------------------
# The keys with a fixed set of values are enums, so a misspelt value fails when the config is composed and the error
# lists the choices. Each member's name is its value (OmegaConf reads a value by member name), and a StrEnum member
# equals its value and prints as it (`cfg.peft.method == "lora"`, f"{cfg.resume}").


class PeftMethod(StrEnum):
    """``peft.method``: how the model is fine-tuned (docs/peft.md)."""

    full = "full"
    # The old name of full: an alias, so peft.method=none composes as full (the CLI says the name is deprecated).
    none = "full"
    freeze = "freeze"
    lora = "lora"
    dora = "dora"
    rslora = "rslora"
    adalora = "adalora"
    ia3 = "ia3"
    qlora = "qlora"
    prompt_tuning = "prompt_tuning"
    p_tuning = "p_tuning"
    prefix_tuning = "prefix_tuning"


class Backend(StrEnum):
    """``distributed.backend``: how the processes share the model (docs/distributed.md)."""

    single = "single"
    ddp = "ddp"
    zero2 = "zero2"
    zero3 = "zero3"
    zero3_offload = "zero3_offload"
    fsdp = "fsdp"


class TrainOn(StrEnum):
    """``data.train_on``: which tokens of a conversation carry the SFT loss (``alignment.data.encode_chat``)."""

    assistant = "assistant"
    last_assistant = "last_assistant"
    all = "all"


# ``raise`` is a keyword, hence the functional form.
OnError = StrEnum("OnError", [("raise", "raise"), ("skip", "skip")])
OnError.__doc__ = "``data.on_error``: stop at a bad row (raise) or drop it and count it (skip)."


class Tracker(StrEnum):
    """``tracking.backend``: where training metrics go besides metrics.json and the log."""

    none = "none"
    wandb = "wandb"
    tensorboard = "tensorboard"


class Resume(StrEnum):
    """``resume``: go on from the stage's newest checkpoint (auto) or clear its dir and start over (fresh)."""

    auto = "auto"
    fresh = "fresh"


# resume=true/false: the old spellings of auto/fresh (Hydra reads them as booleans, which the enum refuses).
_RESUME_ALIASES = {"true": Resume.auto, "false": Resume.fresh}
_noted: set[str] = set()


def translate_old_spellings(argv: list[str]) -> list[str]:
    """The command line with the old spellings of choices replaced, each named once on stderr: ``resume=true|false``
    becomes ``resume=auto|fresh``; ``peft=none`` (and ``peft.method=none``) stays, as an alias of full, with a
    deprecation warning (it is not rewritten: the default run dir is named after the command line as typed)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        name = key.lstrip("+~")
        if sep and name == "resume" and value.lower() in _RESUME_ALIASES:
            new = _RESUME_ALIASES[value.lower()].value
            _note(f"resume={value} is read as resume={new}; resume takes auto or fresh")
            arg = f"{key}={new}"
        elif sep and name in ("peft", "peft.method") and "none" in value.split(","):
            _note(f"{name}=none is deprecated; use {name}=full")
        out.append(arg)
    return out


def hashable(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data for a stage's config hash: enums as their names, and ``peft.method=full``
    under ``none``, the default's name when the first hashes were written, so a run made then still resumes."""
    data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    peft = data.get("peft")
    if isinstance(peft, dict) and peft.get("method") == PeftMethod.full.value:
        peft["method"] = "none"
    return data


def _note(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        print(f"warning: {message}", file=sys.stderr)


@dataclass
class ModelConfig:
    name: str = field(default="tiny", metadata={"help": "Label for the model; 'tiny' builds the offline default."})
    path: str | None = field(
        default=None, metadata={"help": "Hub id or local dir of any HF causal LM; None with name=tiny builds it."}
    )
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code from the Hub. Off by default."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})
    rebuild: bool = field(default=False, metadata={"help": "Rebuild the cached tiny model."})


@dataclass
class DataConfig:
    path: str | None = field(
        default=None, metadata={"help": "Local json/jsonl/parquet file or dir, or Hub id; None = embedded data."}
    )
    format: str = field(
        default="auto",
        metadata={"help": "auto or a format name (messages, sharegpt, alpaca, pku_saferlhf, ...; docs/data.md)."},
    )
    # None and untyped, not an empty dict: Hydra's struct mode refuses new keys merged into a dict (and OmegaConf cannot
    # merge into a typed Optional dict that holds None), so the documented
    # override data.columns={prompt: question, ...} only works on a key that holds no dict yet.
    columns: Any = field(
        default=None,
        metadata={
            "help": "Rename the file's columns to a format's, e.g. {prompt: question, chosen: good, rejected: bad}."
        },
    )
    converter: str | None = field(
        default=None,
        metadata={"help": "module:function or path/file.py:function mapping one raw row to a canonical row."},
    )
    pku_label: str = field(
        default="better", metadata={"help": "PKU-SafeRLHF: which label picks chosen, better or safer."}
    )
    ties: str = field(
        default="drop",
        metadata={"help": "Chatbot Arena ties: drop, or keep (KTO: both sides labelled; SFT: a good tie's both)."},
    )
    margin: bool = field(
        default=True,
        metadata={
            "help": "Add a 'margin' column from scores (UltraFeedback, SHP); the rm loss and margin_filter use it."
        },
    )
    train_split: str = "train"
    eval_split: str | None = field(default="test", metadata={"help": "Held-out split; None carves eval_fraction."})
    eval_fraction: float = field(default=0.05, metadata={"help": "Share of train held out when there is no split."})
    max_length: int = field(default=512, metadata={"help": "Truncate encoded rows to this many tokens."})
    train_on: TrainOn = field(default=TrainOn.assistant, metadata={"help": "assistant, last_assistant or all."})
    on_error: OnError = field(default=OnError["raise"], metadata={"help": "raise or skip bad rows."})
    max_train_rows: int | None = None
    max_eval_rows: int | None = None
    transforms: list[Any] = field(
        default_factory=list,
        metadata={
            "help": "Seeded changes to the preference train rows, applied in order, e.g. [{name: flip, p: 0.2}]: "
            "flip, subsample, margin_filter, length_bias, mix, dedupe, decontaminate (docs/experiments.md)."
        },
    )


@dataclass
class PeftConfig:
    method: PeftMethod = field(
        default=PeftMethod.full,
        metadata={
            "help": "full, freeze, lora, dora, rslora, adalora, ia3, prompt_tuning, p_tuning, prefix_tuning, "
            "qlora (see docs/peft.md); none is the deprecated name of full."
        },
    )
    r: int = field(default=16, metadata={"help": "LoRA rank (AdaLoRA: the average target rank)."})
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Module names; [all-linear] = every linear layer."}
    )
    init_r: int | None = field(default=None, metadata={"help": "AdaLoRA's starting rank; None = 1.5 * r."})
    num_virtual_tokens: int = field(default=20, metadata={"help": "Prompt / p- / prefix tuning: virtual tokens."})
    prompt_init: str = field(default="random", metadata={"help": "Prompt tuning init: random or text."})
    prompt_init_text: str | None = field(default=None, metadata={"help": "Prompt tuning: the init text."})
    encoder_hidden_size: int = field(default=128, metadata={"help": "P-tuning: hidden size of the prompt encoder."})
    freeze_trainable_layers: int = field(
        default=2, metadata={"help": "Freeze: train the last N layers (N > 0) or the first |N| (N < 0)."}
    )
    freeze_trainable_modules: str = field(
        default="all", metadata={"help": "Freeze: 'all' or modules inside those layers, e.g. 'mlp,self_attn'."}
    )
    freeze_extra_modules: str | None = field(
        default=None, metadata={"help": "Freeze: modules outside the layers that train too, e.g. 'embed_tokens'."}
    )
    merge: bool = field(default=True, metadata={"help": "Also write a merged plain HF model next to the adapter."})


@dataclass
class DistributedConfig:
    """How many processes and machines, and how they share the model (see docs/distributed.md)."""

    backend: Backend = field(
        default=Backend.single, metadata={"help": "single, ddp, zero2, zero3, zero3_offload or fsdp."}
    )
    num_processes: int = field(default=1, metadata={"help": "Processes per machine (one per GPU)."})
    num_machines: int = 1
    machine_rank: int = field(default=0, metadata={"help": "This machine's rank, 0 on the main machine."})
    main_process_ip: str | None = field(default=None, metadata={"help": "Main machine's address (multi-node)."})
    main_process_port: int | None = field(default=None, metadata={"help": "None = a free port (29500 multi-node)."})
    deepspeed_config: str | None = field(
        default=None, metadata={"help": "DeepSpeed JSON: a name in conf/deepspeed/ or a path."}
    )
    global_batch_size: int | None = field(
        default=None, metadata={"help": "Keep per-device x accumulation x world size at this; None = off."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Print the launch command(s) and exit."})
    launch_args: list[str] = field(default_factory=list, metadata={"help": "Extra `accelerate launch` flags."})


@dataclass
class TrackingConfig:
    backend: Tracker = field(default=Tracker.none, metadata={"help": "none, wandb or tensorboard."})
    project: str = "alignment"
    run_name: str | None = None


class Direction(StrEnum):
    minimize = "minimize"
    maximize = "maximize"


@dataclass
class SweepConfig:
    """What a sweep optimises and reports (docs/experiments.md)."""

    metric: str | None = field(
        default=None,
        metadata={
            "help": "The objective: a metrics.json key (in a pipeline '<step>/<key>'; unprefixed = the last step). "
            "Each multirun job returns it (the Optuna sweeper searches it); reports sort by it."
        },
    )
    direction: Direction = field(default=Direction.minimize, metadata={"help": "minimize or maximize."})
    report_metrics: list[str] = field(
        default_factory=list, metadata={"help": "More metrics (or glob patterns) the report plots per parameter."}
    )
    plots: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"help": "Figures of several metrics together: title -> metrics or glob patterns, one series each."},
    )
    scatter: list[str] = field(
        default_factory=list,
        metadata={"help": "'x:y' metric pairs the report plots against each other (e.g. dpo/kl:dpo/oracle_reward)."},
    )


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
class RewardSourceConfig:
    type: str = field(default="model", metadata={"help": "model, oracle or function."})
    path: str | None = field(default=None, metadata={"help": "Model dir (type=model) or module:function."})
    weight: float = 1.0


@dataclass
class RewardConfig:
    sources: list[RewardSourceConfig] = field(default_factory=list)


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


@dataclass
class HubConfig:
    """``hub.*``: publish the finished model to the Hugging Face Hub (docs/publishing.md)."""

    push: bool = field(
        default=False,
        metadata={
            "help": "After the stage (a pipeline: its last model) finished, upload its model/ dir, card included. "
            "Token from HF_TOKEN or `hf auth login`."
        },
    )
    model_id: str | None = field(default=None, metadata={"help": "The repo to push to, user/name (or org/name)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private (when it does not exist yet)."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to; None = the default branch."})


@dataclass
class NoTrainerSettings:
    """``trainer.*`` of the stages that train nothing (eval, compare, chat): none, so a trainer key there is a typo."""


@dataclass
class AlignConfig:
    """The root config: one stage, the models and data it uses, and the run's settings."""

    stage: Any = MISSING
    trainer: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    oracle_eval: OracleEvalConfig = field(default_factory=OracleEvalConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    ref_model: str | None = field(default=None, metadata={"help": "Reference model dir; None = the start model."})
    value_model: str | None = field(default=None, metadata={"help": "PPO value model init; None = reward model."})
    pipeline: Any = field(default=None, metadata={"help": "Chosen with pipeline=<name>: ordered steps to run."})
    step: str | None = field(default=None, metadata={"help": "Pipeline step name; the stage writes PATH/<step>/."})
    output_dir: str = field(default=MISSING, metadata={"help": "Run dir; the stage writes PATH/<stage>/."})
    seed: int = 42
    resume: Resume = field(default=Resume.auto, metadata={"help": "auto (resume if a checkpoint exists) or fresh."})
    save_every_minutes: float | None = field(
        default=5.0, metadata={"help": "Also save a checkpoint after this many minutes of training; None or 0 = off."}
    )
    evaluate_before: bool = field(
        default=True,
        metadata={
            "help": "Also measure held-out metrics and oracle reward before training (the *_before keys). Presets "
            "turn it off where every job starts from one model whose numbers are already known."
        },
    )
    debug: bool = field(default=False, metadata={"help": "Show tracebacks."})
    sweep: SweepConfig = field(default_factory=SweepConfig)
    vars: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Free values that presets interpolate (${vars.noise}); sweep them like any key."},
    )


def register_configs() -> None:
    from alignment.sweep import register_resolvers

    register_resolvers()  # conf/config.yaml's default output_dir and sweep job dirs
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=AlignConfig)
    for stage, schema in trainer_schemas().items():
        cs.store(group="schema/trainer", name=stage, node=schema)
    from alignment.rl.settings import PPOSettings

    cs.store(group="schema/trainer", name="ppo", node=PPOSettings)
    from alignment.stages.generate import GenerateSettings
    from alignment.stages.label import LabelSettings

    cs.store(group="schema/trainer", name="generate", node=GenerateSettings)
    cs.store(group="schema/trainer", name="label", node=LabelSettings)
    for stage in ("eval", "compare", "chat"):
        cs.store(group="schema/trainer", name=stage, node=NoTrainerSettings)

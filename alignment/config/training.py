"""The groups a training run reads: the model, the data, the PEFT method, how processes share the model, where
metrics go, the reward sources of online RL, publishing to the Hub, and what a sweep optimises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment.config.choices import Backend, Direction, OnError, PeftMethod, Tracker, TrainOn


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
class RewardSourceConfig:
    type: str = field(default="model", metadata={"help": "model, oracle or function."})
    path: str | None = field(default=None, metadata={"help": "Model dir (type=model) or module:function."})
    weight: float = 1.0


@dataclass
class RewardConfig:
    sources: list[RewardSourceConfig] = field(default_factory=list)


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

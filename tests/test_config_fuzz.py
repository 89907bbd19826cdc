"""Property test over the config space: whatever values a user types for the documented keys, the path the CLI takes
up to the point where a model would load ends in a clean one-line ``AlignmentError`` or passes, never a traceback.

The path: ``check_command_line`` (compose and map Hydra's errors), the composed config, ``check_config`` and the
stage's settings built in full (``check_trainer_config``: TRL's config classes and their ``__post_init__``). Keys are
the fields of the config dataclasses (``alignment/config/``) and of each stage's ``trainer.*`` schema; values are
ints, floats, negative and zero values, strings, lists, null and wrong types. Deterministic (``derandomize``), so a
failure here is a failure in CI too: fix the check it found, not this test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from alignment.command_line import check_command_line
from alignment.config import (
    DataConfig,
    DistributedConfig,
    OracleEvalConfig,
    PeftConfig,
    TrackingConfig,
    register_configs,
)
from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR
from alignment.preflight import check_config
from alignment.stages import STAGES
from alignment.trainer.checks import check_trainer_config

register_configs()

# Keys naming files or Hub ids (a random string may be a Hub id: nothing to check offline) or free-form lists are
# left out; their own checks are tested where they live.
SKIPPED = {"data.path", "data.transforms", "oracle_eval.path", "distributed.launch_args", "distributed.dry_run"}
RUN_KEYS = ["seed", "resume", "save_every_minutes", "evaluate_before", "model.dtype"]
GROUPS = {
    "data": DataConfig,
    "peft": PeftConfig,
    "distributed": DistributedConfig,
    "tracking": TrackingConfig,
    "oracle_eval": OracleEvalConfig,
}
DOCUMENTED = RUN_KEYS + [
    f"{group}.{f.name}"
    for group, cls in GROUPS.items()
    for f in dataclasses.fields(cls)
    if f"{group}.{f.name}" not in SKIPPED
]
PEFT_METHODS = sorted(p.stem for p in (CONF_DIR / "peft").glob("*.yaml") if p.stem != "qlora")  # qlora needs CUDA


def trainer_keys(stage: str) -> list[str]:
    schema = ConfigStore.instance().load(f"schema/trainer/{stage}.yaml").node
    return [f"trainer.{k}" for k in schema.keys()]


TRAINER_KEYS = {stage: trainer_keys(stage) for stage in STAGES}
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    DEFAULTS = {stage: compose(config_name="config", overrides=[f"stage={stage}"]) for stage in STAGES}

# Words a user might type: numbers as text, other keys' choices, booleans, null, lists.
WORDS = ["abc", "0", "-1", "null", "true", "false", "[]", "[1,2]", "[q_proj]", "none", "linear", "cosinee", "auto"]
WORDS += ["group", "sigmoid", "dapo", "steps", "no", "epoch", "[sigmoid,sft]", "[0.5]", "1e-3", "nan", "inf"]
ints = st.one_of(st.integers(min_value=-3, max_value=70), st.sampled_from([0, -1, 1, 2, 3, 8, 4096, 2**33]))
floats = st.one_of(st.floats(min_value=-2.0, max_value=2.0, allow_nan=False), st.sampled_from([0.0, 1.0, 1e-30]))
anything = st.one_of(ints.map(str), floats.map(repr), st.sampled_from(WORDS))
# Mostly values of the key's own type (so the checks behind type checking run), sometimes anything at all.
BY_TYPE = {
    bool: st.sampled_from(["true", "false"]),
    int: ints.map(str),
    float: st.one_of(floats.map(repr), ints.map(str)),
    str: st.sampled_from(WORDS),
}


def value_for(stage: str, key: str):
    default = OmegaConf.select(DEFAULTS[stage], key, throw_on_missing=False)
    typed = BY_TYPE.get(type(default))
    return st.one_of(typed, typed, typed, anything) if typed is not None else anything


@st.composite
def command_lines(draw) -> list[str]:
    stage = draw(st.sampled_from(STAGES))
    argv = [f"stage={stage}"]
    if draw(st.booleans()):
        argv.append(f"peft={draw(st.sampled_from(PEFT_METHODS))}")
    keys = TRAINER_KEYS[stage] + DOCUMENTED
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4, unique=True)):
        argv.append(f"{key}={draw(value_for(stage, key))}")
    return argv


def through_the_checks(argv: list[str], out: Path) -> None:
    """What the CLI runs before a model loads, for one command line."""
    check_command_line(argv)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv)
    with open_dict(cfg):
        cfg.output_dir = str(out)
    check_config(cfg, argv)
    check_trainer_config(cfg, out / str(cfg.stage))


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(argv=command_lines())
def test_any_value_of_any_documented_key_is_a_clean_error_or_passes(argv, tmp_path):
    try:
        through_the_checks(argv, tmp_path / "run")
    except AlignmentError as err:
        message = str(err)
        assert message and "\n" not in message, f"{argv}: not one line: {message!r}"
        assert "Traceback" not in message
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir()), "a check wrote output"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stage=grpo", "trainer.num_generations=3"], "must be divisible by trainer.num_generations=3"),
        (["stage=grpo", "trainer.num_generations=1"], "trainer.num_generations=1"),
        (["stage=rloo", "trainer.num_generations=0"], "trainer.num_generations=0"),
        (["stage=grpo", "trainer.loss_type=grpoo"], "trainer.loss_type='grpoo' is not one of: grpo"),
        (["stage=sft", "trainer.lr_scheduler_type=cosinee"], "trainer.lr_scheduler_type='cosinee'"),
        (["stage=dpo", "trainer.beta=-1"], "trainer.beta must be positive"),
        (["stage=dpo", "trainer.max_completion_length=600"], None),  # not a DPO key in every TRL: either way clean
        (["stage=kto", "trainer.loss_type=ktoo"], "trainer.loss_type='ktoo' is not one of: kto"),
        (["stage=sft", "trainer.max_steps=-1", "trainer.num_train_epochs=0"], "nothing would train"),
        (["stage=sft", "data.max_length=0"], "data.max_length must be a positive number"),
        (["stage=sft", "data.eval_fraction=1.0"], "data.eval_fraction=1.0 must lie in [0, 1)"),
        (["stage=sft", "data.max_train_rows=0"], "data.max_train_rows=0 leaves no rows"),
        (["stage=sft", "peft=lora", "peft.dropout=1.0"], "peft.dropout must be a probability in [0, 1)"),
        (["stage=sft", "peft=lora", "peft.alpha=0"], "peft.alpha must be a positive integer"),
        (["stage=sft", "peft=lora", "peft.target_modules=[]"], "peft.target_modules must be a list of module names"),
        (["stage=sft", "peft.method=loraa"], "peft.method=loraa: Invalid value 'loraa', expected one of [full,"),
        (["stage=sft", "oracle_eval.num_prompts=0"], "oracle_eval.num_prompts must be a positive integer"),
        (["stage=sft", "oracle_eval.top_p=0"], "oracle_eval.top_p must lie in (0, 1]"),
        (["stage=sft", "distributed.machine_rank=1"], "distributed.machine_rank=1"),
        (["stage=sft", "distributed.main_process_port=70000"], "distributed.main_process_port=70000"),
        (["stage=sft", "tracking.backend=wandbb"], "tracking.backend=wandbb: Invalid value 'wandbb'"),
        (["stage=sft", "seed=-1"], "seed=-1 must be an integer"),
        (["stage=ppo", "trainer.mini_batch_size=7"], "mini_batch_size"),
        (["stage=ppo", "trainer.kl_coef=-0.1"], "trainer.kl_coef must be 0 or more"),
        (["stage=generate", "trainer.temperature=0"], "trainer.temperature must be positive"),
        # Rules TRL's trainers enforce only in __init__, after the model has loaded.
        (["stage=kto", "trainer.per_device_train_batch_size=1"], "stage=kto estimates its KL term"),
        (["stage=kto", "peft=lora", "peft.target_modules=[q_proj,lm_head]"], "lm_head cannot take an adapter"),
        (["stage=grpo", "trainer.reward_weights=[1.0,2.0]"], "trainer.reward_weights=[1.0, 2.0]"),
        (["stage=sft", "trainer.loss_type=chunked_nll"], "SFTTrainer takes nll or dft"),
        (["stage=grpo", "trainer.sync_ref_model=true", "trainer.beta=0"], "trainer.sync_ref_model=true with"),
        (["stage=dpo", "peft=lora", "trainer.sync_ref_model=true"], "no separate model to sync"),
    ],
)
def test_values_a_library_would_reject_later_are_named_up_front(argv, expected, tmp_path):
    if expected is None:
        try:
            through_the_checks(argv, tmp_path / "run")
        except AlignmentError as err:
            assert "\n" not in str(err)
        return
    with pytest.raises(AlignmentError) as err:
        through_the_checks(argv, tmp_path / "run")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_default_config_passes(stage, tmp_path):
    through_the_checks([f"stage={stage}"], tmp_path / "run")

"""The structured config's choices: a misspelt value of an enum key is one line naming the key and the choices, the
old spellings (resume=true/false, peft=none) still work, and typing the keys as enums left the config hash alone."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from alignment.command_line import check_command_line
from alignment.config import PeftMethod, Resume, register_configs, translate_old_spellings
from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR
from alignment.stages.stage_dir import stage_config_hash
from tests.conftest import run_cli

register_configs()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["output_dir=/nonexistent/run", *overrides])


@pytest.mark.parametrize(
    ("override", "choices"),
    [
        (
            "peft.method=lorra",
            "full, none, freeze, lora, dora, rslora, adalora, ia3, qlora, prompt_tuning, p_tuning, prefix_tuning",
        ),
        ("distributed.backend=zero4", "single, ddp, zero2, zero3, zero3_offload, fsdp"),
        ("data.train_on=assistnt", "assistant, last_assistant, all"),
        ("data.on_error=skp", "raise, skip"),
        ("tracking.backend=wandbb", "none, wandb, tensorboard"),
        ("resume=fersh", "auto, fresh"),
    ],
)
def test_a_misspelt_choice_names_the_key_and_lists_the_choices(override, choices):
    key, value = override.split("=")
    with pytest.raises(AlignmentError) as err:
        check_command_line(["stage=sft", override])
    assert str(err.value) == f"{key}={value}: Invalid value '{value}', expected one of [{choices}]"


def test_the_cli_prints_a_bad_choice_as_one_line_without_a_traceback():
    proc = run_cli("stage=dpo", "data.train_on=last", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: data.train_on=last: Invalid value 'last', expected one of [assistant, last_assistant, all]"
    )


def test_enum_values_compare_and_print_as_their_strings():
    cfg = composed("stage=sft", "peft=lora", "distributed=zero3", "data.on_error=skip", "tracking=wandb")
    assert cfg.peft.method is PeftMethod.lora and cfg.peft.method == "lora"
    assert (str(cfg.distributed.backend), f"{cfg.data.on_error}", f"{cfg.tracking.backend}") == (
        "zero3",
        "skip",
        "wandb",
    )
    assert f"{cfg.distributed.backend}.json" == "zero3.json"  # the DeepSpeed file a ZeRO backend reads
    cfg.resume = "fresh"  # stages set it as a string
    assert cfg.resume is Resume.fresh
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert (plain["peft"]["method"], plain["data"]["train_on"], plain["resume"]) == ("lora", "assistant", "fresh")


@pytest.mark.parametrize("stage", ["sft", "dpo", "ppo"])
def test_typing_the_choices_as_enums_leaves_the_stage_hash_unchanged(stage):
    """The same values in a config without the schema (plain strings, as before the enums) hash the same."""
    cfg = composed(f"stage={stage}", "peft=lora", "distributed=ddp", "data.on_error=skip")
    untyped = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    assert isinstance(untyped.data.on_error, str) and not isinstance(untyped.data.on_error, PeftMethod)
    assert stage_config_hash(cfg)[0] == stage_config_hash(untyped)[0]


def test_full_fine_tuning_hashes_under_its_old_default_name():
    """Runs made when the default was peft=none keep their hash: full is hashed as none, whichever name is used."""
    default, full, none = composed("stage=sft"), composed("stage=sft", "peft=full"), composed("stage=sft", "peft=none")
    assert default.peft.method is full.peft.method is none.peft.method is PeftMethod.full
    hashes = {stage_config_hash(c)[0] for c in (default, full, none)}
    assert len(hashes) == 1
    assert stage_config_hash(default)[1]["peft"]["method"] == "none"
    old = OmegaConf.create(OmegaConf.to_container(default, resolve=True, enum_to_str=True))
    old.peft.method = "none"  # the config as composed before the rename
    assert stage_config_hash(old)[0] in hashes
    assert stage_config_hash(composed("stage=sft", "peft=lora"))[0] not in hashes


def test_old_spellings_are_translated_and_named_once(capsys):
    argv = ["stage=sft", "resume=false", "peft=none", "seed=1"]
    assert translate_old_spellings(argv) == ["stage=sft", "resume=fresh", "peft=none", "seed=1"]
    assert translate_old_spellings(["resume=True", "peft.method=none"]) == ["resume=auto", "peft.method=none"]
    assert translate_old_spellings(["resume=false", "peft=none"]) == ["resume=fresh", "peft=none"]
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "warning: resume=false is read as resume=fresh; resume takes auto or fresh",
        "warning: peft=none is deprecated; use peft=full",
        "warning: resume=True is read as resume=auto; resume takes auto or fresh",
        "warning: peft.method=none is deprecated; use peft.method=full",
    ]
    assert translate_old_spellings(["resume=auto", "peft=full", "peft.r=8"]) == [
        "resume=auto",
        "peft=full",
        "peft.r=8",
    ]
    assert capsys.readouterr().err == ""


def test_the_cli_takes_the_old_spellings():
    proc = run_cli("stage=sft", "resume=false", "peft=none", "--cfg", "job")
    cfg = OmegaConf.create(proc.stdout)
    assert (cfg.resume, cfg.peft.method) == ("fresh", "full")
    assert proc.stderr.count("warning: peft=none is deprecated; use peft=full") == 1
    assert proc.stderr.count("warning: resume=false is read as resume=fresh") == 1


@pytest.mark.parametrize(("stage", "own"), [("dpo", {"beta": 0.2, "max_steps": 300}), ("rm", {"num_train_epochs": 1})])
def test_the_pair_stages_share_their_trainer_settings_and_keep_their_own(stage, own):
    """conf/trainer_shared/pairs.yaml fills trainer.* of dpo, kto, orpo and rm; the stage's file and the command line
    still set their own values on top."""
    cfg = composed(f"stage={stage}")
    shared = OmegaConf.load(CONF_DIR / "trainer_shared" / "pairs.yaml")
    assert {k: cfg.trainer[k] for k in shared} == OmegaConf.to_container(shared)
    assert (cfg.trainer.learning_rate, cfg.trainer.save_steps, cfg.trainer.eval_strategy) == (5.0e-4, 200, "no")
    assert {k: cfg.trainer[k] for k in own} == own
    assert composed(f"stage={stage}", "trainer.learning_rate=1e-3").trainer.learning_rate == 1e-3
    assert composed("stage=sft").trainer.learning_rate == 2.0e-3  # not a pair stage: its own file only

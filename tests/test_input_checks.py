"""Bad input is caught before training, through the real CLI: a PEFT target that matches no layer, data that becomes
empty, a bad value in a pipeline's later step. Each is exit code 2, one line naming the key or the file and why, no
traceback, and nothing finished-looking (no metrics.json; for a pipeline, no step dir at all).

The unit tests beside them check the same functions directly on the tiny model and small datasets.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR
from tests.conftest import FAST, cli_in_one_process

SHORT = [*FAST, "trainer.max_steps=2", "oracle_eval.enabled=false"]


def _one_clean_line(result: dict) -> str:
    assert result["code"] == 2, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    lines = [x for x in result["stderr"].splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, result["stderr"][-3000:]
    return lines[0]


@pytest.mark.slow
def test_bad_input_stops_before_training_with_one_line(tmp_path):
    runs = {
        "peft_target": ["stage=sft", "peft=lora", "peft.target_modules=[q_proj,q_projj]", *SHORT],
        "sft_too_short": ["stage=sft", "data.max_length=8", *SHORT],
        "pairs_too_short": ["stage=rm", "data.max_length=4", *SHORT],
        "transform_empty": [
            "stage=rm",
            "data.transforms=[{name: margin_filter, source: oracle, threshold: 99}]",
            *SHORT,
        ],
        "pipeline_beta": ["pipeline=dpo", "+pipeline.steps.dpo.trainer.beta=-1", *SHORT],
        "pipeline_data": ["pipeline=dpo", f"+pipeline.steps.dpo.data.path={tmp_path / 'gone.jsonl'}", *SHORT],
        # Only TRL's own config check (built at the pipeline's start) knows the scheduler names.
        "pipeline_scheduler": ["pipeline=dpo", "+pipeline.steps.dpo.trainer.lr_scheduler_type=cosinee", *SHORT],
        "stage_scheduler": ["stage=sft", "trainer.lr_scheduler_type=cosinee", *SHORT],
        "grpo_groups": ["stage=grpo", "trainer.num_generations=3", *SHORT],
    }
    argvs = [[*a, f"output_dir={tmp_path / n}"] for n, a in runs.items()]
    results = dict(zip(runs, cli_in_one_process(argvs), strict=True))

    line = _one_clean_line(results["peft_target"])
    assert "peft.target_modules" in line and "'q_projj'" in line and "q_proj" in line.split("named", 1)[-1]
    assert not (tmp_path / "peft_target" / "sft" / "metrics.json").exists()

    line = _one_clean_line(results["sft_too_short"])
    assert str(DATA_DIR / "sft") in line and "data.max_length=8" in line and "every row is longer" in line
    assert not (tmp_path / "sft_too_short" / "sft" / "metrics.json").exists()

    line = _one_clean_line(results["pairs_too_short"])
    assert str(DATA_DIR / "preference") in line and "every pair is longer than data.max_length=4" in line
    assert not (tmp_path / "pairs_too_short" / "rm" / "metrics.json").exists()

    line = _one_clean_line(results["transform_empty"])
    assert str(DATA_DIR / "preference") in line and "(margin_filter) left no training rows" in line
    assert not (tmp_path / "transform_empty" / "rm" / "metrics.json").exists()

    line = _one_clean_line(results["pipeline_beta"])
    assert "step 'dpo'" in line and "trainer.beta must be positive" in line
    line = _one_clean_line(results["pipeline_data"])
    assert "gone.jsonl" in line and "data.path" in line
    line = _one_clean_line(results["pipeline_scheduler"])
    assert "step 'dpo'" in line and "trainer.lr_scheduler_type='cosinee'" in line
    for name in ("pipeline_beta", "pipeline_data", "pipeline_scheduler"):
        assert not (tmp_path / name / "sft").exists(), f"{name}: a step started before the error"
        assert not (tmp_path / name / "pipeline.json").exists()

    line = _one_clean_line(results["stage_scheduler"])
    assert "trainer.lr_scheduler_type='cosinee'" in line and "cosine" in line
    assert not (tmp_path / "stage_scheduler" / "sft").exists(), "the stage dir was made before the check"
    line = _one_clean_line(results["grpo_groups"])
    assert "trainer.num_generations=3" in line
    # Fast: caught before any model loaded.
    for name in ("pipeline_beta", "pipeline_data", "pipeline_scheduler", "stage_scheduler", "grpo_groups"):
        assert results[name]["seconds"] < 30, (name, results[name]["seconds"])


# -- the functions themselves -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(alignment_cache):
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

    model_cfg = OmegaConf.create({"name": "tiny", "path": None, "dtype": "float32", "trust_remote_code": False})
    path = resolve_model_path(model_cfg)
    return load_causal_lm(path, model_cfg), load_tokenizer(path, model_cfg)


def _peft(**values):
    from alignment.config import PeftConfig

    return OmegaConf.merge(OmegaConf.structured(PeftConfig), {"method": "lora", **values})


def test_target_modules_that_match_no_layer_name_the_key_and_real_names(tiny):
    from alignment.adapters import check_target_modules, linear_layer_names

    model, _ = tiny
    assert {"q_proj", "v_proj", "down_proj"} <= linear_layer_names(model)
    check_target_modules(model, _peft(target_modules=["q_proj", "v_proj"]))
    check_target_modules(model, _peft(target_modules=["all-linear"]))
    check_target_modules(model, _peft(target_modules=["self_attn.q_proj"]))  # a dotted suffix, as peft matches
    with pytest.raises(AlignmentError, match=r"peft.target_modules: no layer of the model is named 'q_projj'.*q_proj"):
        check_target_modules(model, _peft(target_modules=["q_proj", "q_projj"]))
    with pytest.raises(AlignmentError, match=r"'self_attn' names a Qwen2Attention, not a layer"):
        check_target_modules(model, _peft(target_modules=["self_attn"]))
    check_target_modules(model, _peft(method="freeze", target_modules=["nothing"]))  # freeze has no targets


def test_the_head_of_a_reward_model_is_not_an_adapter_target(alignment_cache):
    from alignment.adapters import check_target_modules
    from alignment.models import load_sequence_classifier, load_tokenizer, resolve_model_path

    model_cfg = OmegaConf.create({"name": "tiny", "path": None, "dtype": "float32", "trust_remote_code": False})
    path = resolve_model_path(model_cfg)
    model = load_sequence_classifier(path, model_cfg, load_tokenizer(path, model_cfg))
    check_target_modules(model, _peft(target_modules=["q_proj"]))
    with pytest.raises(AlignmentError, match="'score' is the classifier head"):
        check_target_modules(model, _peft(target_modules=["q_proj", "score"]))


def test_tokenization_that_drops_every_row_names_the_source_and_why(tiny):
    from datasets import Dataset

    from alignment.data import tokenize_preference, tokenize_prompts, tokenize_sft

    _, tokenizer = tiny
    chat = [{"role": "user", "content": "say something long " * 5}, {"role": "assistant", "content": "ok"}]
    rows = Dataset.from_list([{"messages": chat}] * 3)
    with pytest.raises(AlignmentError, match=r"^f.jsonl \(train rows\): every row is longer than data.max_length=8"):
        tokenize_sft(rows, tokenizer, max_length=8, source="f.jsonl (train rows)")
    _, stats = tokenize_sft(rows, tokenizer, max_length=512)
    assert stats["kept"] == 3
    with pytest.raises(AlignmentError, match=r"^g.jsonl \(held-out rows\): no rows to tokenize"):
        tokenize_sft(rows.select([]), tokenizer, source="g.jsonl (held-out rows)")
    reply = "a reply of many words " * 3
    pairs = Dataset.from_list([{"prompt": chat[:1], "chosen": reply, "rejected": reply + "!"}] * 2)
    with pytest.raises(AlignmentError, match=r"^p.jsonl: every pair is longer than data.max_length=4 tokens: its"):
        tokenize_preference(pairs, tokenizer, max_length=4, source="p.jsonl")
    prompts = Dataset.from_list([{"prompt": chat[:1]}])
    assert len(tokenize_prompts(prompts, tokenizer, max_length=4)[0]) == 1  # prompts keep their last tokens


def test_an_empty_held_out_split_or_a_fraction_that_holds_out_everything_is_an_error(tmp_path):
    from alignment.config import DataConfig
    from alignment.data import load_train_eval

    path = tmp_path / "two.jsonl"
    row = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    path.write_text(row * 2, encoding="utf-8")
    data = OmegaConf.merge(
        OmegaConf.structured(DataConfig), {"path": str(path), "eval_split": None, "eval_fraction": 0.6}
    )
    with pytest.raises(
        AlignmentError, match=r"two.jsonl: data.eval_fraction=0.6 of its 2 'train' rows holds out every"
    ):
        load_train_eval(data, kind="sft")
    data.eval_fraction = 0.4
    train, held_out = load_train_eval(data, kind="sft")
    assert len(train) == 1 and len(held_out) == 1
    data.max_eval_rows = 0
    with pytest.raises(AlignmentError, match=r"two.jsonl \(held-out rows\): data.max_eval_rows=0 leaves no rows"):
        load_train_eval(data, kind="sft")


def test_pipeline_steps_are_composed_and_checked_with_the_command_line(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR
    from alignment.preflight import check_config, check_pipeline_steps

    register_configs()
    overrides = ["pipeline=rlhf", "trainer.learning_rate=1e-4"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "run")
    check_config(cfg, overrides)
    check_pipeline_steps(cfg, overrides, trainer_configs=True)  # sft, rm, ppo: every step's settings build
    with open_dict(cfg):
        cfg.pipeline.steps.ppo.trainer = {"mini_batch_size": 7}
    check_config(cfg, overrides)  # divisibility is PPO's own check, made when its settings are built
    with pytest.raises(AlignmentError, match=r"^pipeline 'rlhf' step 'ppo': trainer.mini_batch_size=7 \(stage=ppo\)"):
        check_pipeline_steps(cfg, overrides, trainer_configs=True)
    with open_dict(cfg):
        cfg.pipeline.steps.rm.trainer = {"learning_rate": -1.0}
    with pytest.raises(AlignmentError, match=r"^pipeline 'rlhf' step 'rm': trainer.learning_rate must be positive"):
        check_config(cfg, overrides)
    assert not (tmp_path / "run").exists()


def test_data_paths_of_a_step_are_checked_unless_an_earlier_step_writes_them(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR
    from alignment.preflight import check_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["pipeline=iterative_dpo"])
    check_config(cfg, ["pipeline=iterative_dpo"])  # its dpo steps read pairs the label steps have not written yet
    with open_dict(cfg):
        cfg.pipeline.steps.sft.data = {"path": str(tmp_path / "gone.jsonl")}
    with pytest.raises(AlignmentError, match="data file not found: .*gone.jsonl"):
        check_config(cfg, ["pipeline=iterative_dpo"])


def test_an_interpolation_with_nothing_to_resolve_names_the_key_to_set():
    from hydra import compose, initialize_config_dir

    from alignment.config import register_configs
    from alignment.paths import CONF_DIR
    from alignment.preflight import check_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["pipeline=beta_frontier"])  # its preset sets vars.beta
    with pytest.raises(
        AlignmentError, match=r"pipeline.steps.dpo.trainer.beta: .*'vars.beta'.*\(\+vars.beta=\.\.\.\)"
    ):
        check_config(cfg, ["pipeline=beta_frontier"])

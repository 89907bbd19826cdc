"""Fine-tuning methods on the tiny model: what trains, what each stage accepts, AdaLoRA's schedule, saving/loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from alignment import adapters
from alignment.config import ModelConfig, PeftConfig
from alignment.errors import AlignmentError
from alignment.models import load_causal_lm

CONF = Path(__file__).resolve().parents[1] / "conf" / "peft"
ADAPTER_METHODS = ("lora", "dora", "rslora", "adalora", "ia3", "prompt_tuning", "p_tuning", "prefix_tuning")
# Every trainable parameter of a method's model must match its pattern: nothing of the base model trains.
TRAINABLE = {
    "lora": r"\.lora_(A|B)\.",
    "dora": r"\.lora_(A|B|magnitude_vector)\.",
    "rslora": r"\.lora_(A|B)\.",
    "adalora": r"\.lora_(A|B|E)\.",
    "ia3": r"\.ia3_l\.",
    "prompt_tuning": r"^prompt_encoder\.",
    "p_tuning": r"^prompt_encoder\.",
    "prefix_tuning": r"^prompt_encoder\.",
}


def peft_cfg(method: str, **overrides) -> DictConfig:
    """The config ``peft=<method>`` composes: the schema filled by conf/peft/<method>.yaml."""
    return OmegaConf.merge(OmegaConf.structured(PeftConfig), OmegaConf.load(CONF / f"{method}.yaml"), overrides)


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    from alignment.tiny_model import tiny_model_dir

    torch.set_num_threads(1)  # tiny model: one thread is fastest on shared cores
    return str(tiny_model_dir())


def causal_lm(tiny_dir: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_dir)


def classifier(tiny_dir: str):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=1)


def applied(model, cfg: DictConfig, stage: str = "sft"):
    """The model as the stage trains it: prepared, then wrapped by peft when the method adds an adapter."""
    from peft import get_peft_model

    config = adapters.prepare(model, cfg, stage=stage)
    return get_peft_model(model, config) if config is not None else model


def trainable_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


BATCH = torch.tensor([[5, 17, 250, 9, 33, 400, 12, 7], [8, 8, 91, 300, 2, 45, 66, 1000]])


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_adapter_trains_only_its_own_parameters_and_moves_the_output(tiny_dir, method):
    model = applied(causal_lm(tiny_dir), peft_cfg(method))
    trainable, total = adapters.count_parameters(model)
    assert 0 < trainable < 0.6 * total
    names = trainable_names(model)
    assert all(re.search(TRAINABLE[method], n) for n in names), [
        n for n in names if not re.search(TRAINABLE[method], n)
    ]
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    model.train()
    with torch.no_grad():
        before = model(input_ids=BATCH).logits
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA's B starts at zero, so A only gets a gradient from the second step
        optimizer.zero_grad()
        model(input_ids=BATCH, labels=BATCH).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(input_ids=BATCH).logits
    assert not torch.allclose(before, after), "training the adapter did not change the model's output"
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), f"frozen parameter {name} changed"


def test_full_fine_tuning_trains_everything(tiny_dir):
    for method in ("none", "full"):
        model = causal_lm(tiny_dir)
        assert adapters.prepare(model, peft_cfg(method), stage="sft") is None
        trainable, total = adapters.count_parameters(model)
        assert trainable == total > 0


def _layers_of(names: list[str]) -> set[int]:
    return {int(m.group(1)) for n in names if (m := re.search(r"\.layers\.(\d+)\.", n))}


def test_freeze_trains_the_last_or_first_layers(tiny_dir):
    model = causal_lm(tiny_dir)
    n_layers = model.config.num_hidden_layers
    assert adapters.prepare(model, peft_cfg("freeze", freeze_trainable_layers=2), stage="sft") is None
    names = trainable_names(model)
    assert _layers_of(names) == {n_layers - 2, n_layers - 1}
    assert all(".layers." in n for n in names), "only decoder layers train by default"
    trainable, total = adapters.count_parameters(model)
    assert 0 < trainable < 0.6 * total

    model = causal_lm(tiny_dir)
    adapters.prepare(model, peft_cfg("freeze", freeze_trainable_layers=-1), stage="sft")
    assert _layers_of(trainable_names(model)) == {0}


def test_freeze_modules_and_extra_modules(tiny_dir):
    model = causal_lm(tiny_dir)
    cfg = peft_cfg("freeze", freeze_trainable_layers=1, freeze_trainable_modules="mlp", freeze_extra_modules="norm")
    adapters.prepare(model, cfg, stage="sft")
    names = trainable_names(model)
    last = model.config.num_hidden_layers - 1
    in_layers = [n for n in names if ".layers." in n]
    assert in_layers and all(f".layers.{last}.mlp." in n for n in in_layers)
    assert [n for n in names if ".layers." not in n] == ["model.norm.weight"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"freeze_trainable_layers": 0}, "freeze_trainable_layers=0"),
        ({"freeze_trainable_layers": 99}, "freeze_trainable_layers=99"),
        ({"freeze_trainable_modules": "attention_typo"}, "attention_typo"),
        ({"freeze_extra_modules": "wte"}, "wte"),
    ],
)
def test_freeze_rejects_settings_that_match_nothing(tiny_dir, overrides, message):
    with pytest.raises(AlignmentError, match=message):
        adapters.prepare(causal_lm(tiny_dir), peft_cfg("freeze", **overrides), stage="sft")


@pytest.mark.parametrize("method", ("freeze", "lora", "ia3"))
def test_reward_model_keeps_its_score_head_trainable(tiny_dir, method):
    model = applied(classifier(tiny_dir), peft_cfg(method), stage="rm")
    names = trainable_names(model)
    assert any("score" in n for n in names)
    trainable, total = adapters.count_parameters(model)
    assert trainable < 0.6 * total


@pytest.mark.parametrize(
    ("method", "stage"),
    [
        ("prompt_tuning", "rm"),
        ("prefix_tuning", "dpo"),
        ("p_tuning", "kto"),
        ("prompt_tuning", "orpo"),
        ("adalora", "ppo"),
        ("ia3", "grpo"),
        ("freeze", "rloo"),
    ],
)
def test_unsupported_combination_names_method_and_stage(method, stage):
    with pytest.raises(AlignmentError) as err:
        adapters.validate(peft_cfg(method), stage)
    assert f"peft={method}" in str(err.value) and f"stage={stage}" in str(err.value)


def test_every_stage_accepts_full_and_lora_and_sft_accepts_every_method():
    for stage in adapters.STAGE_METHODS:
        for method in ("none", "full", "lora"):
            adapters.validate(peft_cfg(method), stage)
    for method in adapters.METHODS:
        if method != "qlora":
            adapters.validate(peft_cfg(method), "sft")


def test_unknown_method_lists_the_choices():
    # The schema refuses it when the config is composed; a config built without the schema, here.
    with pytest.raises(ValidationError, match=r"Invalid value 'lorra', expected one of \[full, none, freeze, lora"):
        OmegaConf.merge(peft_cfg("lora"), {"method": "lorra"})
    with pytest.raises(
        AlignmentError, match="peft.method='lorra' is unknown; choose one of: full, freeze, .*prefix_tuning"
    ):
        adapters.validate(OmegaConf.create({"method": "lorra"}), "sft")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_qlora_without_cuda_fails_clearly():
    with pytest.raises(AlignmentError, match="peft=qlora.*CUDA"):
        adapters.validate(peft_cfg("qlora"), "sft")
    with pytest.raises(AlignmentError, match="CUDA"):
        load_causal_lm("unused", OmegaConf.structured(ModelConfig), peft_cfg("qlora"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU")
def test_qlora_loads_4bit_and_trains_lora(tiny_dir):
    pytest.importorskip("bitsandbytes")
    from peft import get_peft_model

    model = load_causal_lm(tiny_dir, OmegaConf.structured(ModelConfig), peft_cfg("qlora"))
    assert getattr(model, "is_loaded_in_4bit", False)
    model = get_peft_model(model, adapters.prepare(model, peft_cfg("qlora"), stage="sft"))
    batch = BATCH.to(model.device)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    assert all(re.search(TRAINABLE["lora"], n) for n in trainable_names(model))


def test_adalora_schedule_fits_any_step_count():
    from peft import AdaLoraConfig

    for total in (1, 2, 3, 7, 40, 1000):
        schedule = adapters._adalora_schedule(total)
        assert schedule["tinit"] < schedule["total_step"] - schedule["tfinal"]
        AdaLoraConfig(target_modules=["q_proj"], **schedule)  # peft validates the phases


def test_adalora_callback_sets_total_steps_and_prunes_ranks(tiny_dir):
    from types import SimpleNamespace

    cfg = peft_cfg("adalora", r=2, init_r=6)
    model = applied(causal_lm(tiny_dir), cfg)
    [callback] = adapters.callbacks(cfg)
    config = model.peft_config["default"]
    steps = 12
    callback.on_train_begin(None, SimpleNamespace(max_steps=steps), None, model=model)
    assert config.total_step == steps and model.base_model.rankallocator.peft_config.total_step == steps

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model(input_ids=BATCH, labels=BATCH).loss.backward()
        optimizer.step()
        callback.on_optimizer_step(None, SimpleNamespace(global_step=step), None, model=model)
    # the final allocation keeps an average of target_r of the init_r ranks per adapted module
    kept = [sum(mask) for mask in config.rank_pattern.values()]
    assert len(kept) == sum(1 for n, _ in model.named_parameters() if ".lora_E." in n)
    assert sum(kept) <= config.target_r * len(kept) < config.init_r * len(kept)
    assert len(set(kept)) > 1, "the budget is reallocated unevenly across modules"


def test_other_methods_need_no_callbacks():
    assert all(adapters.callbacks(peft_cfg(m)) == [] for m in ("lora", "freeze", "prompt_tuning", "none"))


def test_saved_lora_adapter_loads_merged_and_prompt_adapter_loads_on_its_base(tiny_dir, tmp_path):
    model = applied(causal_lm(tiny_dir), peft_cfg("lora"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.05)  # a trained-looking adapter
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=BATCH).logits
    assert adapters.can_merge(model)
    model.save_pretrained(tmp_path / "lora")
    loaded = load_causal_lm(str(tmp_path / "lora"), OmegaConf.structured(ModelConfig))
    assert not hasattr(loaded, "peft_config"), "a LoRA adapter is merged on load: the next stage gets a plain model"
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=BATCH).logits, expected, atol=1e-4)

    prompt = applied(causal_lm(tiny_dir), peft_cfg("prompt_tuning"))
    assert not adapters.can_merge(prompt)
    prompt.save_pretrained(tmp_path / "prompt")
    loaded = load_causal_lm(str(tmp_path / "prompt"), OmegaConf.structured(ModelConfig))
    assert hasattr(loaded, "peft_config") and not adapters.can_merge(loaded)
    out = loaded.generate(input_ids=BATCH[:1], attention_mask=torch.ones_like(BATCH[:1]), max_new_tokens=4)
    assert out.shape[1] == BATCH.shape[1] + 4
    with pytest.raises(AlignmentError, match="prompt-learning adapter.*not trained further"):
        adapters.prepare(loaded, peft_cfg("lora"), stage="sft")


def test_dpo_with_an_adapter_takes_its_reference_from_the_policy_without_adapter(tiny_dir):
    from alignment.stages.preference_inputs import policy_and_reference

    base = {"model": OmegaConf.structured(ModelConfig(path=tiny_dir)), "stage": "dpo", "ref_model": None}
    _, policy, reference, adapter = policy_and_reference(OmegaConf.create(base | {"peft": peft_cfg("lora")}))
    assert reference is None and adapter is not None and not hasattr(policy, "peft_config")
    _, _, reference, adapter = policy_and_reference(OmegaConf.create(base | {"peft": peft_cfg("none")}))
    assert adapter is None and reference is not None
    assert not any(p.requires_grad for p in reference.parameters())

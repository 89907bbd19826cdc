"""PPO checkpoints on a tiny random Qwen2: accelerate's state files plus ppo_state.json and the manifest, only the
trainable weights, and a load that restores every generator, the scheduler and the data order."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.errors import AlignmentError
from alignment.rl.checkpoint import load_checkpoint, save_checkpoint
from alignment.rl.ppo import PPOTrainer
from alignment.stages.checkpoints import MANIFEST, checkpoint_problem
from tests.families import PPO_TEXTS, tiny_tokenizer
from tests.rl.test_ppo import dataset, models, settings, share_of_a

FILES = {
    "model.safetensors",
    "optimizer.bin",
    "random_states_0.pkl",
    "custom_checkpoint_0.pkl",  # the learning-rate scheduler
    "custom_checkpoint_1.pkl",  # the data-order generator
    "ppo_state.json",
    MANIFEST,
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(PPO_TEXTS)


pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(tok, lora: bool = False, **overrides) -> PPOTrainer:
    policy, ref, value = models(tok)
    if lora:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        value = get_peft_model(value, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="SEQ_CLS"))
        ref = None
    s = settings(rollout_batch_size=4, mini_batch_size=2, max_steps=2, max_new_tokens=4, **overrides)
    return PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), s, [tok.eos_token_id])


def test_a_lora_checkpoint_holds_the_adapters_and_every_state_file(tok, tmp_path):
    from safetensors import safe_open

    t = trainer(tok, lora=True)
    t.settings.max_steps = 1
    t.train()
    ckpt = save_checkpoint(t, tmp_path, total_limit=2)
    assert ckpt == tmp_path / "checkpoint-1"
    assert {p.name for p in ckpt.iterdir()} == FILES
    trainable = {n for n, p in t.accelerator.unwrap_model(t.model).named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".score." in n for n in trainable)
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as saved:
        assert set(saved.keys()) == trainable  # frozen base weights never change: not saved
    listed = json.loads((ckpt / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert set(listed) == FILES - {MANIFEST}
    assert json.loads((ckpt / "ppo_state.json").read_text(encoding="utf-8"))["step"] == 1
    assert checkpoint_problem(ckpt) is None
    (ckpt / MANIFEST).unlink()  # killed between the state file and the manifest: judged by the files
    assert checkpoint_problem(ckpt) is None
    (ckpt / "custom_checkpoint_1.pkl").unlink()
    assert checkpoint_problem(ckpt) == "custom_checkpoint_1.pkl is missing"


def test_load_restores_generators_scheduler_order_and_state(tok, tmp_path):
    first = trainer(tok)
    first.settings.max_steps = 1
    first.train()
    save_checkpoint(first, tmp_path)
    rng, order, lrs = torch.get_rng_state(), first._order.get_state(), first.scheduler.get_last_lr()
    queue, kl = list(first._queue), first.kl_ctl.value
    weights = {n: p.detach().clone() for n, p in first.model.named_parameters()}

    resumed = trainer(tok)
    torch.manual_seed(99)  # whatever the new process drew before: the checkpoint's state must win
    assert load_checkpoint(resumed, tmp_path / "checkpoint-1") == 1
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(resumed._order.get_state(), order)
    assert resumed.scheduler.get_last_lr() == lrs and lrs[0] < first.settings.learning_rate  # decayed, restored
    assert resumed.scheduler.last_epoch == first.scheduler.last_epoch == 4  # 2 epochs x 2 minibatches
    assert (resumed._queue, resumed.kl_ctl.value, resumed.history) == (queue, kl, first.history)
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, weights[name]), name
    adam = resumed.optimizer.state_dict()["state"]
    assert adam and all(int(s["step"]) == 4 for s in adam.values())


def test_a_checkpoint_of_other_models_or_an_older_layout_is_refused(tok, tmp_path):
    t = trainer(tok)
    ckpt = save_checkpoint(t, tmp_path)
    with pytest.raises(AlignmentError, match="other trainable parameters.*resume=fresh"):
        load_checkpoint(trainer(tok, lora=True), ckpt)
    (ckpt / "random_states_0.pkl").unlink()
    with pytest.raises(AlignmentError, match="random_states_0.pkl is missing.*resume=fresh"):
        load_checkpoint(trainer(tok), ckpt)
    (ckpt / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(AlignmentError, match="earlier version.*resume=fresh"):
        load_checkpoint(trainer(tok), ckpt)

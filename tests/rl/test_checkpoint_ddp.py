"""A PPO checkpoint under DDP: two CPU processes (gloo) save every step, then a new launch resumes from step 1 and ends
with the weights and stats of the uninterrupted run (each process's RNG file restored by its own rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from pathlib import Path

import torch

from alignment.rl.checkpoint import CheckpointCallback, load_checkpoint
from alignment.rl.ppo import PPOTrainer
from alignment.tiny_model import build_tokenizer
from tests.rl.test_ppo import dataset, models, settings, share_of_a

mode, out = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
tok = build_tokenizer(["hello world", "the cat sat on the mat", "a b c d", "x y z"] * 20, 300)
policy, ref, value = models(tok)
s = settings(rollout_batch_size=4, mini_batch_size=2, max_steps=2, max_new_tokens=4)
trainer = PPOTrainer(policy, ref, value, tok, share_of_a, dataset(tok), s, [tok.eos_token_id])
assert trainer.accelerator.num_processes == 2
if mode == "full":
    trainer.callbacks.append(CheckpointCallback(trainer, out, save_steps=1, total_limit=None))
else:
    load_checkpoint(trainer, out / "checkpoint-1")
trainer.train()
if trainer.accelerator.is_main_process:
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    torch.save({n: p.detach().clone() for n, p in wrapper.named_parameters()}, out / f"{mode}.pt")
    history = [{k: v for k, v in h.items() if not k.startswith("time")} for h in trainer.history]
    (out / f"{mode}.json").write_text(json.dumps(history))
"""


def launch(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "ppo_ddp.py"
    script.write_text(SCRIPT, encoding="utf-8")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(script), mode, str(tmp_path)]
    # CPU DDP: accelerate's launcher would otherwise fall back to one process (see alignment/launch.py).
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]


@pytest.mark.slow
def test_ppo_checkpoint_under_ddp_resumes_to_the_same_result(tmp_path):
    import torch

    from alignment.stages.checkpoints import MANIFEST, checkpoint_problem

    launch(tmp_path, "full")
    ckpt = tmp_path / "checkpoint-1"
    listed = json.loads((ckpt / MANIFEST).read_text(encoding="utf-8"))["files"]
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors", "ppo_state.json"} <= set(listed)
    assert checkpoint_problem(ckpt) is None
    launch(tmp_path, "resumed")
    full = json.loads((tmp_path / "full.json").read_text(encoding="utf-8"))
    resumed = json.loads((tmp_path / "resumed.json").read_text(encoding="utf-8"))
    assert len(full) == 2 and resumed == full  # step 1 restored from ppo_state.json, step 2 trained again alike
    want, got = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert want.keys() == got.keys()
    for name, param in got.items():
        assert torch.equal(param, want[name]), name

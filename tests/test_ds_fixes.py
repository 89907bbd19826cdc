"""alignment.ds_fixes: ZeRO-3 reuses fp32 parameter partitions as its master copy, with the same training result."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

pytest.importorskip("deepspeed")

# One ZeRO-3 process (world size 1, gloo) trains a small fp32 MLP for 3 steps with a torch AdamW, as the HF Trainer
# hands it to DeepSpeed; prints whether the master partitions share storage with the parameter partitions, and the
# trained weights.
SCRIPT = """
import json, os, sys
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
import torch, deepspeed, deepspeed.ops
deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
if sys.argv[1] == "patched":
    from alignment.ds_fixes import reuse_fp32_partitions
    assert reuse_fp32_partitions() and reuse_fp32_partitions()  # idempotent
deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
start = [p.detach().flatten().tolist() for p in model.parameters()]
config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
x, y = torch.randn(4, 8), torch.randn(4, 1)
for _ in range(3):
    loss = ((engine(x) - y) ** 2).mean()
    engine.backward(loss)
    engine.step()
zero = engine.optimizer
shared = [a.data_ptr() == b.data_ptr()
          for a, b in zip(zero.fp32_partitioned_groups_flat, zero.fp16_partitioned_groups_flat, strict=True)]
with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
    weights = [p.detach().flatten().tolist() for p in engine.module.parameters()]
print("RESULT " + json.dumps({"shared": shared, "weights": weights, "start": start}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(_free_port())], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_zero3_master_partitions_reuse_fp32_parameters_with_the_same_result():
    patched, plain = _train("patched"), _train("plain")
    assert patched["shared"] and all(patched["shared"])  # no second fp32 copy of the partition
    assert patched["weights"] == plain["weights"]  # bit-identical training
    assert patched["weights"] != patched["start"]  # and it did train

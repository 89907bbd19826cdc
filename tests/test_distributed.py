"""A real 2-process ZeRO-3 run on CPU (gloo), launched by the CLI itself: one run dir, rank-0 files, whole weights."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, read_metrics, run_cli


@pytest.mark.slow
def test_sft_under_zero3_on_two_processes(tmp_path):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path / "run"
    proc = run_cli(
        "stage=sft", "distributed=zero3", "distributed.num_processes=2", "trainer.max_steps=3",
        "trainer.per_device_train_batch_size=4", "trainer.gradient_accumulation_steps=2", f"output_dir={out}",
        *FAST,
    )  # fmt: skip
    metrics = read_metrics(out / "sft")
    assert metrics["world_size"] == 2
    assert metrics["global_batch_size"] == 4 * 2 * 2  # per device x accumulation x world size
    assert metrics["global_step"] == 3
    assert metrics["eval_loss"] < metrics["eval_loss_before"]  # it trained
    assert metrics["peak_rss_mb"] > 0

    # The saved model is whole: every tensor has its full shape, and plain transformers loads it.
    model_dir = out / "sft" / "model"
    reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert saved and all(saved[k] == expected[k] for k in saved)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    loaded = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert loaded == expected and all(v.numel() > 0 for v in model.state_dict().values())

    # One run dir for both ranks: Hydra's files once, the launch logged, rank-0-only outputs.
    assert (out / ".hydra" / "config.yaml").exists()
    assert "launching 2 processes" in (out / "train.log").read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["sft", "train.log"]
    assert len((out / "sft" / "oracle_samples.jsonl").read_text(encoding="utf-8").splitlines()) == 16
    assert proc.returncode == 0

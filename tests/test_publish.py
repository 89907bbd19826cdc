"""Publishing: the model card and lineage a stage saves inside model/, an adapter that names its base as the user gave
it, and ``hub.push`` up to the Hub call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from omegaconf import OmegaConf

from alignment.config import ModelConfig
from alignment.errors import AlignmentError
from alignment.lineage import LINEAGE, read_lineage, stage_lineage
from alignment.model_card import write_cards
from alignment.paths import DATA_DIR
from alignment.publish import check_hub, final_model_dir, push_model
from tests.conftest import cli_env, read_metrics


def _cfg(tmp_path: Path, **hub) -> OmegaConf:
    return OmegaConf.create(
        {
            "stage": "dpo",
            "step": None,
            "pipeline": None,
            "output_dir": str(tmp_path),
            "model": {"name": "hf", "path": "Qwen/Qwen2.5-0.5B"},
            "data": {"path": "trl-lib/ultrafeedback_binarized"},
            "distributed": {"dry_run": False, "machine_rank": 0},
            "hub": {"push": True, "model_id": "me/tiny-dpo", "private": False, "revision": None, **hub},
        }
    )


def _finished_stage(tmp_path: Path, cfg) -> Path:
    """A finished stage dir as a run leaves it: model/ with its lineage, then metrics.json."""
    model = tmp_path / "dpo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / LINEAGE).write_text(json.dumps(stage_lineage(cfg, "dpo", "Qwen/Qwen2.5-0.5B")), encoding="utf-8")
    (tmp_path / "dpo" / "metrics.json").write_text(json.dumps({"eval_loss": 1.25, "global_step": 3}), encoding="utf-8")
    return model


def test_push_uploads_the_finished_model_dir_to_the_repo(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, private=True)
    model = _finished_stage(tmp_path, cfg)
    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(
        huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)) or "https://hub/commit/1"
    )
    assert push_model(cfg) == "https://hub/commit/1"
    assert calls[0] == ("create", "me/tiny-dpo", {"private": True, "exist_ok": True, "repo_type": "model"})
    upload = calls[1][1]
    assert (upload["repo_id"], Path(upload["folder_path"]), upload["revision"]) == ("me/tiny-dpo", model, None)
    card = (model / "README.md").read_text(encoding="utf-8")  # written for the repo before the upload
    assert "base_model: Qwen/Qwen2.5-0.5B" in card and "datasets:\n- trl-lib/ultrafeedback_binarized" in card
    assert 'from_pretrained("me/tiny-dpo")' in card and "| eval_loss | 1.25 |" in card


def test_a_failed_upload_names_the_repo_and_keeps_the_model(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    model = _finished_stage(tmp_path, cfg)
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *a, **k: None)

    def refuse(**kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "upload_folder", refuse)
    with pytest.raises(AlignmentError, match=r"could not push .*model to hub.model_id=me/tiny-dpo: Failed to resolve"):
        push_model(cfg)
    assert (model / "config.json").exists()


def test_push_needs_a_finished_stage_and_skips_launched_ranks(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    with pytest.raises(AlignmentError, match=r"stage=dpo saved no model"):
        push_model(cfg)
    (tmp_path / "dpo" / "model").mkdir(parents=True)
    with pytest.raises(AlignmentError, match="has not finished"):
        push_model(cfg)
    shutil.rmtree(tmp_path / "dpo")
    _finished_stage(tmp_path, cfg)
    monkeypatch.setenv("LOCAL_RANK", "0")  # a launched rank never pushes: the process the user started does
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: pytest.fail("a launched rank pushed"))
    assert push_model(cfg) is None
    monkeypatch.delenv("LOCAL_RANK")
    cfg.hub.push = False
    assert push_model(cfg) is None


def test_a_pipeline_publishes_its_last_model(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.pipeline = {
        "name": "p",
        "steps": {"sft": {"stage": "sft"}, "dpo": {"stage": "dpo"}, "gen": {"stage": "generate"}},
    }
    with pytest.raises(AlignmentError, match=r"pipeline 'p' saved no model in .*nothing to push"):
        final_model_dir(cfg)
    for name in ("sft", "dpo", "gen"):  # generate writes data, not a model
        (tmp_path / name / ("model" if name != "gen" else "generations")).mkdir(parents=True)
    assert final_model_dir(cfg) == tmp_path / "dpo" / "model"


def test_hub_settings_are_checked_before_the_run(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cfg = _cfg(tmp_path, model_id=None)
    with pytest.raises(AlignmentError, match=r"hub.push=true needs hub.model_id=<user or org>/<name> \(it is unset\)"):
        check_hub(cfg)
    cfg.hub.model_id = "me/tiny"
    with pytest.raises(AlignmentError, match="would push every job to one repo"):
        check_hub(cfg, multirun=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AlignmentError, match="HF_HUB_OFFLINE=1"):
        check_hub(cfg)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(AlignmentError, match="set HF_TOKEN or run `hf auth login`"):
        check_hub(cfg)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_x")
    check_hub(cfg)


def test_trl_push_settings_point_to_hub_push():
    from alignment.command_line import check_command_line
    from alignment.config import register_configs

    register_configs()
    with pytest.raises(AlignmentError, match=r"'trainer.push_to_hub': publishing is hub.push=true hub.model_id="):
        check_command_line(["stage=sft", "trainer.push_to_hub=true"])


def test_cli_refuses_an_offline_push_before_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", "stage=sft", "hub.push=true", "hub.model_id=me/tiny"],
        cwd=tmp_path,
        env=cli_env(),  # HF_HUB_OFFLINE=1
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "error: hub.push=true but the Hub is off (HF_HUB_OFFLINE=1)" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/sft"))  # no stage started


def test_card_of_a_chain_names_base_stages_data_and_command(tmp_path):
    """A model trained from another stage's model: the card names the first base model and every stage."""
    cfg = _cfg(tmp_path)
    cfg.stage, cfg.model.path, cfg.data.path = "sft", "Qwen/Qwen2.5-0.5B", None
    sft = tmp_path / "sft" / "model"
    sft.mkdir(parents=True)
    (sft / LINEAGE).write_text(json.dumps(stage_lineage(cfg, "sft", "Qwen/Qwen2.5-0.5B")), encoding="utf-8")
    cfg.stage, cfg.model.path, cfg.data.path = "dpo", str(tmp_path / "sft"), "data/中文偏好.jsonl"
    lineage = stage_lineage(cfg, "dpo", str(sft))
    assert lineage["base_model"] == "Qwen/Qwen2.5-0.5B" and lineage["start_model_path"] == str(sft.resolve())
    assert [(s["stage"], s["data"]) for s in lineage["stages"]] == [
        ("sft", "embedded"),
        ("dpo", "data/中文偏好.jsonl"),
    ]
    dpo = tmp_path / "dpo" / "model"
    dpo.mkdir(parents=True)
    (dpo / LINEAGE).write_text(json.dumps(lineage, ensure_ascii=False), encoding="utf-8")
    (card,) = write_cards(tmp_path / "dpo", {"eval_rewards/accuracies": 0.75}, None)
    text = card.read_text(encoding="utf-8")
    assert "from **Qwen/Qwen2.5-0.5B**, through sft → dpo." in text
    assert "| dpo | dpo | data/中文偏好.jsonl | step sft |" in text and "| eval_rewards/accuracies | 0.75 |" in text
    assert "python -m alignment" in text and "[None]" not in text


ARGS = [
    "pipeline=dpo",
    "pipeline.compare=false",
    "peft=lora",
    "model.path=models/tiny-base",  # relative to where the command runs, as a user types it
    "trainer.max_steps=2",
    "trainer.save_steps=1",  # checkpoints, where TRL would draft its card
    "data.max_train_rows=32",
    "data.max_eval_rows=8",
    "oracle_eval.enabled=false",
    "evaluate_before=false",
]


@pytest.mark.slow
def test_saved_models_carry_their_card_and_a_portable_adapter(tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(DATA_DIR / "tiny-base", work / "models" / "tiny-base")
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", *ARGS, "output_dir=run"],
        cwd=work,
        env=cli_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = work / "run"
    for step in ("sft", "dpo"):
        assert not (run / step / "README.md").exists(), "TRL's card (base model [None]) is not written"
        assert (run / step / "model" / "README.md").stat().st_mtime <= (run / step / "metrics.json").stat().st_mtime
    adapter_config = json.loads((run / "sft" / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter_config["base_model_name_or_path"] == "models/tiny-base"
    assert read_lineage(run / "sft" / "adapter")["start_model_path"] == str((work / "models" / "tiny-base").resolve())

    metrics = read_metrics(run / "dpo")
    card = (run / "dpo" / "model" / "README.md").read_text(encoding="utf-8")
    assert "from **models/tiny-base**, through sft → dpo." in card
    assert "| sft | sft | embedded | models/tiny-base |" in card and "| dpo | dpo | embedded | step sft |" in card
    assert f"| global_step | {metrics['global_step']} |" in card
    assert f"| eval_loss | {metrics['eval_loss']:.6g} |" in card
    assert "python -m alignment pipeline=dpo pipeline.compare=false peft=lora model.path=models/tiny-base" in card
    assert "base_model:" not in card and "datasets:" not in card  # local paths and embedded data are not Hub ids
    sft_card = (run / "sft" / "adapter" / "README.md").read_text(encoding="utf-8")
    assert "library_name: peft" in sft_card and "The adapter's base model: `models/tiny-base`" in sft_card

    # The adapter loads from another working dir (its base path as given is relative): the lineage's path is used.
    monkeypatch.chdir(tmp_path)
    from alignment.models import load_causal_lm

    model_cfg = OmegaConf.structured(ModelConfig)
    merged = load_causal_lm(str(run / "sft" / "model"), model_cfg).eval()
    from_adapter = load_causal_lm(str(run / "sft" / "adapter"), model_cfg).eval()
    ids = torch.tensor([[3, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, from_adapter(input_ids=ids).logits, atol=1e-4)


def test_hub_settings_keep_the_run_dir_and_config_hash(monkeypatch, tmp_path):
    """Adding hub.push to a finished run's command finds that run (same dir, same hash): it only pushes."""
    from alignment.stages.stage_dir import stage_config_hash
    from alignment.sweep import default_output_dir

    command = ["alignment", "stage=dpo", "trainer.beta=0.2"]
    monkeypatch.setattr(sys, "argv", command)
    plain = default_output_dir()
    monkeypatch.setattr(sys, "argv", [*command, "hub.push=true", "hub.model_id=me/tiny-dpo"])
    assert default_output_dir() == plain != "outputs/dpo"
    cfg = _cfg(tmp_path)
    cfg.resume = "auto"
    pushed = stage_config_hash(cfg)[0]
    cfg.hub.push, cfg.hub.model_id = False, None
    assert stage_config_hash(cfg)[0] == pushed
    cfg.data.path = "trl-lib/other"  # what the stage computes does change it
    assert stage_config_hash(cfg)[0] != pushed

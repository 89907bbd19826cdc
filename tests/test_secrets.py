"""Secrets (HF_TOKEN, WANDB_API_KEY, any *_TOKEN / *_KEY) never reach saved configs, logs or reports."""

from __future__ import annotations

import logging

import pytest

from alignment.secrets import MASK, SecretFilter, is_secret_name, scrub, scrub_text
from tests.conftest import cli_env, run_cli

SECRETS = {"HF_TOKEN": "hf_FAKEsecret1234", "WANDB_API_KEY": "wandbFAKE987654", "MY_SERVICE_KEY": "svcFAKE-5555"}


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "hub_token", "OPENAI_API_KEY", "db_password"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["pad_token", "eos_token", "max_new_tokens", "max_tokens", "model", "keys"])
def test_not_secret_names(name):
    assert not is_secret_name(name)


def test_scrub_masks_secret_keys_and_values_anywhere():
    cfg = {"hub_token": "abc", "tracking": {"run_name": "x-hf_FAKEsecret1234-y"}, "tags": ["hf_FAKEsecret1234"]}
    clean = scrub(cfg, ["hf_FAKEsecret1234"])
    assert clean == {"hub_token": MASK, "tracking": {"run_name": f"x-{MASK}-y"}, "tags": [MASK]}
    assert cfg["hub_token"] == "abc"  # a copy: the run itself still has its token


def test_scrub_text_masks_assignments_and_values():
    text = "- hub_token=abc123\napi_key: 'zzz'\npad_token: <|endoftext|>\nrun=svcFAKE-5555"
    clean = scrub_text(text, ["svcFAKE-5555"])
    assert "abc123" not in clean and "zzz" not in clean and "svcFAKE-5555" not in clean
    assert "pad_token: <|endoftext|>" in clean


def test_log_filter_masks_secrets(monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    logger = logging.getLogger("test_secrets")
    caplog.handler.addFilter(SecretFilter())
    with caplog.at_level(logging.INFO, logger="test_secrets"):
        logger.info("token is %s", SECRETS["HF_TOKEN"])
    assert SECRETS["HF_TOKEN"] not in caplog.text and MASK in caplog.text


@pytest.mark.slow
def test_a_run_never_writes_a_secret(tmp_path):
    out = tmp_path / "run"
    run_cli(
        "stage=sft",
        f"output_dir={out}",
        f"tracking.run_name=run-{SECRETS['HF_TOKEN']}",  # a config value holding a secret, on the command line
        "data.max_train_rows=16",
        "data.max_eval_rows=8",
        "data.max_length=128",
        "oracle_eval.enabled=false",
        "trainer.max_steps=2",
        "trainer.save_steps=1",
        "trainer.logging_steps=1",
        "trainer.per_device_train_batch_size=4",
        env=cli_env(OMP_NUM_THREADS="1", **SECRETS),
    )
    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "sft" / "metrics.json") in files and (out / ".hydra" / "overrides.yaml") in files
    leaks = [f"{p}: {name}" for p in files for name, value in SECRETS.items() if value.encode() in p.read_bytes()]
    assert not leaks
    assert f"run-{MASK}" in (out / "sft" / "config.yaml").read_text(encoding="utf-8")  # it was there, masked
    # Safe by default: model weights are saved as safetensors only, in checkpoints too. (HF's optimizer/scheduler/RNG
    # .pt files are read back with weights_only=True; training_args.bin is never read by a resume.)
    weights = [p for p in files if p.name.startswith(("model", "pytorch_model", "adapter_model"))]
    assert weights and all(p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json") for p in weights)
    assert {p.parent.name for p in weights} >= {"model", "checkpoint-2"}


# -- safe by default: no remote code unless asked, no pickle loads ------------------------------------------------
def test_trust_remote_code_is_off_unless_set_and_reaches_every_load(monkeypatch, tmp_path):
    import transformers
    from omegaconf import OmegaConf

    from alignment.config import ModelConfig
    from alignment.models import load_causal_lm, load_sequence_classifier, load_tokenizer

    seen = []

    def record(name):
        def from_pretrained(*args, **kwargs):
            seen.append((name, kwargs.get("trust_remote_code")))
            raise OSError("stop here")  # the loaders turn it into an AlignmentError

        return from_pretrained

    for cls in ("AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, cls), "from_pretrained", record(cls))
    for trust in (None, True):
        cfg = OmegaConf.structured(ModelConfig)
        if trust:
            cfg.trust_remote_code = True
        for load in (load_tokenizer, load_causal_lm, load_sequence_classifier):
            with pytest.raises(Exception, match="stop here"):
                load(str(tmp_path), cfg)
    names = ["AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"]
    assert seen == [(n, False) for n in names] + [(n, True) for n in names]


def test_every_torch_load_in_the_package_is_weights_only():
    import re
    from pathlib import Path

    import alignment

    calls = []
    for path in Path(alignment.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(", text):
            depth, end = 0, m.end() - 1
            for end in range(m.end() - 1, len(text)):  # the call's full argument list
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append((path.name, text[m.start() : end + 1]))
    # PPO checkpoints load through accelerate's load_state now (its custom states are pickled: docs/errors.md says to
    # resume only your own runs); any torch.load the package itself makes must stay weights-only.
    assert all("weights_only=True" in call for _, call in calls), calls

"""Every row of docs/errors.md: the CLI exits non-zero with a short message naming the problem, no traceback, and
leaves nothing finished-looking (no metrics.json, no model/) behind.

Each case runs the real entry point (``alignment.__main__.main``, Hydra and all) with its own ``sys.argv``. To keep
the suite fast they run one after another inside ONE Python process, each with its stdout/stderr captured and its
``SystemExit`` code recorded; one case also runs as a separate process to check the real exit status. Out of disk
uses a real 2 MiB tmpfs when the tests run as root and may mount one; otherwise the runner makes the model writer
raise ENOSPC (the same OSError the kernel gives).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, cli_in_one_process

pytestmark = pytest.mark.slow

TINY = [
    "data.max_train_rows=16",
    "data.max_eval_rows=4",
    "data.max_length=64",
    "oracle_eval.enabled=false",
    "trainer.max_steps=3",
    "trainer.per_device_train_batch_size=2",
]
GOOD = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "hi"}]}


def _jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0:
        return False
    target.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)]).returncode == 0


def _cases(tmp: Path, full_disk: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (CLI args, substrings the message must contain)."""
    data = {
        "malformed": ['{"messages": [', "line 2", "malformed JSON"],
        "role": [{"messages": [{"role": "wizard", "content": "hi"}]}, "line 2", "unknown role 'wizard'"],
        "field": [{"prompt_text": "hi"}, "line 2", "missing"],
        "no_assistant": [{"messages": [{"role": "user", "content": "hi"}]}, "line 2", "no assistant turn"],
        "tool_call": [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"arguments": {}}]},
                ]
            },
            "line 2",
            "tool_calls[0] has no function name",
        ],
    }
    cases = {}
    for name, (bad, *expect) in data.items():
        path = _jsonl(tmp / f"{name}.jsonl", [GOOD, bad, GOOD])
        cases[name] = (["stage=sft", f"data.path={path}", "data.eval_split=null", *TINY], [f"{name}.jsonl", *expect])
    cases |= {
        "converter": (
            ["stage=sft", "data.converter=no_such_module:to_row", *TINY],
            ["data.converter", "cannot import"],
        ),
        "missing_file": (["stage=sft", f"data.path={tmp / 'nope.jsonl'}", *TINY], ["nope.jsonl", "not found"]),
        "unknown_key": (["stage=sft", "trainer.learning_rat=0.1", *TINY], ["learning_rat"]),
        "negative_lr": (["stage=sft", "trainer.learning_rate=-0.001", *TINY], ["learning_rate", "positive"]),
        "lora_r0": (["stage=sft", "peft=lora", "peft.r=0", *TINY], ["peft.r", "positive"]),
        "missing_model": (["stage=sft", f"model.path={tmp / 'no-model'}", *TINY], ["no-model", "does not exist"]),
        "qlora_no_cuda": (["stage=sft", "peft=qlora", *TINY], ["qlora", "CUDA"]),
        "peft_for_stage": (["stage=rm", "peft=prompt_tuning", *TINY], ["prompt_tuning", "stage=rm"]),
        "out_of_disk": (["stage=sft", *TINY, "trainer.save_steps=100"], ["out of disk"]),
        # A huge learning rate blows the weights up after step 1; the guard stops at the first non-finite step.
        "nan_loss": (
            ["stage=sft", *TINY, "trainer.learning_rate=1e30", "trainer.warmup_steps=0", "trainer.save_steps=1"],
            ["NaN/inf at step 2", "checkpoint-1"],
        ),
    }
    # A later stage pointed at a stage that was cut short (model/ there, but no metrics.json).
    unfinished = tmp / "cut" / "sft"
    (unfinished / "model").mkdir(parents=True)
    (unfinished / "model" / "config.json").write_text("{}", encoding="utf-8")
    (unfinished / "run_state.json").write_text("{}", encoding="utf-8")
    cases["unfinished_input"] = (["stage=dpo", f"model.path={unfinished}", *TINY], ["has not finished", "cut/sft"])
    # Resuming a dir whose run was made under another config: a finished run (SETUP) then the same dir, new lr.
    cases["config_changed"] = (
        ["stage=sft", *TINY, "trainer.learning_rate=0.001"],
        ["different config", "resume=fresh"],
    )
    for name, (args, _) in cases.items():
        out = full_disk if name == "out_of_disk" else tmp / "out" / name
        args.append(f"output_dir={out}")
    return cases


def _setup_runs(tmp: Path) -> dict[str, list[str]]:
    """Runs that must succeed before a case (its output dir holds a finished run)."""
    return {"config_changed": ["stage=sft", *TINY, f"output_dir={tmp / 'out' / 'config_changed'}"]}


def _finished_looking(out: Path) -> list[str]:
    if not out.exists():
        return []
    return [str(p) for p in out.rglob("*") if p.name == "metrics.json" or (p.is_dir() and p.name == "model")]


def test_every_error_case_is_short_clean_and_leaves_nothing_finished(tmp_path):
    full_disk = tmp_path / "full"
    mounted = _can_mount_tmpfs(full_disk)
    try:
        cases = _cases(tmp_path, full_disk)
        if _cuda():
            cases.pop("qlora_no_cuda")  # only an error without a GPU
        env = cli_env(OMP_NUM_THREADS="1", **({} if mounted else {"FAKE_ENOSPC": "1"}))
        # One case as a real process too, beside the in-process runner: the real exit status.
        real = subprocess.Popen(
            [sys.executable, "-m", "alignment", *cases["negative_lr"][0][:-1], f"output_dir={tmp_path / 'real'}"],
            cwd=REPO,
            env=cli_env(OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        debug_args = [*cases["negative_lr"][0][:-1], f"output_dir={tmp_path / 'out' / 'debug'}", "debug=true"]
        setups = _setup_runs(tmp_path)
        argvs = [*setups.values()] + [args for args, _ in cases.values()] + [debug_args]
        results = cli_in_one_process(argvs, env)
        for res in results[: len(setups)]:
            assert res["code"] == 0, res["stderr"][-3000:]
        results = results[len(setups) :]
        failures = []
        for (name, (args, expect)), res in zip(cases.items(), results, strict=False):
            text = res["stderr"] + res["stdout"]
            out = Path(args[-1].removeprefix("output_dir="))
            problems = [f"exit code {res['code']}"] if res["code"] in (0, 99) else []
            problems += [f"no '{e}' in the message" for e in expect if e not in text]
            problems += ["traceback shown"] if "Traceback" in text else []
            if name == "config_changed":  # the earlier finished run is left as it was
                problems += (
                    [] if "learning_rate: 0.001" not in (out / "sft" / "config.yaml").read_text() else ["rewritten"]
                )
                problems += [] if (out / "sft" / "metrics.json").exists() else ["earlier run removed"]
            else:
                problems += [f"left {p}" for p in _finished_looking(out)]
            if name == "nan_loss" and not (out / "sft" / "checkpoint-1" / "trainer_state.json").exists():
                problems.append("the last good checkpoint was not kept")
            if problems:
                failures.append(f"{name}: {problems}\n{text[-1500:]}")
        assert not failures, "\n".join(failures)
        assert results[-1]["code"] == 2 and "Traceback" in results[-1]["stderr"]  # debug=true shows it
        stdout, stderr = real.communicate(timeout=600)
        assert real.returncode == 2, stderr[-2000:]
        assert "trainer.learning_rate must be positive" in stderr and "Traceback" not in stderr + stdout
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(full_disk)])


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

"""One stage's TRL config class is imported alone, so start-up does not load the other stages' TRL modules."""

from __future__ import annotations

import subprocess
import sys

from alignment.paths import REPO_DIR


def test_trl_config_class_imports_only_that_stage():
    code = (
        "import sys\n"
        "from alignment.trainer.schema import trl_config_class, trl_config_classes\n"
        "assert trl_config_class('sft').__name__ == 'SFTConfig'\n"
        "assert trl_config_class('ppo') is None and trl_config_class('eval') is None\n"
        "print('orpo loaded:', 'trl.experimental.orpo' in sys.modules)\n"
        "assert trl_config_class('orpo').__name__ == 'ORPOConfig'\n"
        "print('classes:', sorted((k, v.__name__) for k, v in trl_config_classes().items()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Libraries may print their own lines (wandb does under WANDB_MODE=offline): read only ours.
    out = [line for line in out if line.startswith(("orpo loaded:", "classes:"))]
    assert out[0] == "orpo loaded: False"
    assert out[1] == "classes: " + str(
        sorted(
            [
                ("dpo", "DPOConfig"),
                ("grpo", "GRPOConfig"),
                ("kto", "KTOConfig"),
                ("orpo", "ORPOConfig"),
                ("rloo", "RLOOConfig"),
                ("rm", "RewardConfig"),
                ("sft", "SFTConfig"),
            ]
        )
    )

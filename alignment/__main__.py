"""``python -m alignment stage=<name> | pipeline=<name> [key=value ...]``: the Hydra entry point.

Errors a user can fix are printed as one short message without a traceback (``debug=true`` shows it) and the
process exits non-zero.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

# Quiet, offline-friendly defaults before heavy imports read them.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from alignment.config import register_configs  # noqa: E402
from alignment.errors import AlignmentError  # noqa: E402
from alignment.paths import CONF_DIR  # noqa: E402
from alignment.secrets import install_log_filter, scrub_files  # noqa: E402

log = logging.getLogger("alignment")
register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    debug = bool(cfg.get("debug", False))
    hydra_cfg = HydraConfig.get()
    install_log_filter()
    if hydra_cfg.output_subdir:  # Hydra saved the raw command line (maybe with a token) before we ran
        scrub_files(sorted((Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml")))
    try:
        with open_dict(cfg):
            cfg.output_dir = HydraConfig.get().runtime.output_dir
        from alignment.launch import maybe_launch

        if maybe_launch(cfg, list(HydraConfig.get().overrides.task)):
            return  # the launched processes did the work (or distributed.dry_run printed their command)
        if cfg.get("pipeline"):
            from alignment.pipeline import run_pipeline

            overrides = list(HydraConfig.get().overrides.task)
            run_pipeline(cfg, overrides)
        else:
            from alignment.stages import run_stage
            from alignment.stages.run_state import finished_metrics

            if finished_metrics(cfg) is not None:
                # Same command again after it finished: nothing to do (resume=fresh trains again).
                name = cfg.get("step") or cfg.stage
                print(
                    f"[stage] {name}: finished earlier with the same config and inputs; skipped (resume=fresh reruns)"
                )
                return
            run_stage(cfg)
    except AlignmentError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _run()


if __name__ == "__main__":
    main()

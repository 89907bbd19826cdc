"""``python -m alignment stage=<name> | pipeline=<name> [key=value ...]``: the Hydra entry point; ``-m`` sweeps.

Errors a user can fix are printed as one short message without a traceback (``debug=true`` shows it) and the
process exits non-zero (130 after Ctrl-C). The command line and the paths it names are checked before any heavy
library is imported (``alignment.preflight``). In a sweep (``-m``) a failed job is recorded in its dir
(``failed.json``) and the sweep goes on; each job returns ``sweep.metric`` for Hydra's sweepers (Optuna).
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
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from alignment.command_line import check_command_line  # noqa: E402
from alignment.config import register_configs, translate_old_spellings  # noqa: E402
from alignment.errors import AlignmentError  # noqa: E402
from alignment.paths import CONF_DIR  # noqa: E402
from alignment.preflight import check_config  # noqa: E402
from alignment.publish import check_hub, push_model  # noqa: E402
from alignment.run_lock import run_lock  # noqa: E402
from alignment.secrets import install_log_filter, scrub_files  # noqa: E402
from alignment.sweep import job_objective, record_failure, start_job  # noqa: E402

log = logging.getLogger("alignment")
register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> float | None:
    debug = bool(cfg.get("debug", False))
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    install_log_filter()
    if hydra_cfg.output_subdir:  # Hydra saved the raw command line (maybe with a token) before we ran
        scrub_files(sorted((Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml")))
    overrides = list(hydra_cfg.overrides.task)
    try:
        with open_dict(cfg):
            cfg.output_dir = hydra_cfg.runtime.output_dir
        check_config(cfg)  # before any heavy import or model load
        check_hub(cfg, multirun)  # hub.push: repo id and token now, not after training
        with run_lock(cfg.output_dir):  # one run per output dir (alignment/run_lock.py)
            start_job(cfg, overrides, multirun)
            _work(cfg, overrides, multirun)
            push_model(cfg)  # hub.push: the finished model to the Hub (alignment/publish.py)
            return job_objective(cfg)
    except KeyboardInterrupt as err:  # outside training (loading, evaluation): nothing new was kept
        _exit(err, debug, 130, f"interrupted; nothing new was kept in {cfg.output_dir}. Run the same command to go on")
    except AlignmentError as err:
        if multirun:
            record_failure(cfg, overrides, err)
        if multirun and getattr(err, "exit_code", 2) != 130:
            return None  # the sweep goes on; the report lists this job as failed
        _exit(err, debug, getattr(err, "exit_code", 2))
    except Exception as err:
        if not multirun:
            raise
        record_failure(cfg, overrides, err)
        if debug:
            traceback.print_exc()
        return None
    return None


def _work(cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    from alignment.launch import maybe_launch

    if maybe_launch(cfg, overrides):
        return  # the launched processes did the work (or distributed.dry_run printed their command)
    if cfg.get("pipeline"):
        from alignment.pipeline import run_pipeline

        run_pipeline(cfg, overrides, sweep_dir=Path(cfg.output_dir).parent if multirun else None)
        return
    from alignment.stages import run_stage
    from alignment.stages.stage_dir import finished_metrics

    if finished_metrics(cfg) is not None:
        # Same command again after it finished: nothing to do (resume=fresh trains again).
        name = cfg.get("step") or cfg.stage
        print(f"[stage] {name}: finished earlier with the same config and inputs; skipped (resume=fresh reruns)")
        return
    run_stage(cfg)


def _exit(err: BaseException, debug: bool, code: int, message: str | None = None) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {message or err}" if code != 130 else message or str(err), file=sys.stderr)
    sys.exit(code)


def main() -> None:
    try:
        sys.argv[1:] = translate_old_spellings(sys.argv[1:])  # before Hydra reads the command line
        check_command_line(sys.argv[1:])
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    _run()


if __name__ == "__main__":
    main()

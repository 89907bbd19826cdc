"""``hub.push=true hub.model_id=user/name``: upload the finished model to the Hugging Face Hub.

What goes up is the stage's ``model/`` dir (a pipeline's: that of its last step that saved one), with its card
(``model/README.md``, alignment/model_card.py), once the run has finished; never checkpoints, logs or the config.
The settings are checked before any training (``check_hub``), so a missing token or repo id fails in a second, not
after the run; a failed upload keeps the model where it is, and the same command pushes it again (the finished stage
is skipped).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from omegaconf import DictConfig

from alignment.errors import AlignmentError

log = logging.getLogger("alignment")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_hub(cfg: DictConfig, multirun: bool = False) -> None:
    """With ``hub.push``: a repo id, a token, the Hub reachable (not offline mode), and one model to push."""
    hub = cfg.get("hub")
    if hub is None or not hub.push:
        return
    if not hub.model_id or not _REPO_ID.match(str(hub.model_id)):
        given = f"'{hub.model_id}'" if hub.model_id else "unset"
        raise AlignmentError(f"hub.push=true needs hub.model_id=<user or org>/<name> (it is {given})")
    if multirun:
        raise AlignmentError(
            "hub.push=true in a sweep (-m) would push every job to one repo; run the chosen job again with hub.push=true"
        )
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise AlignmentError(
            "hub.push=true but the Hub is off (HF_HUB_OFFLINE=1); unset it to publish, or drop hub.push"
        )
    if not get_token():
        raise AlignmentError(
            "hub.push=true needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`"
        )


def final_model_dir(cfg: DictConfig) -> Path:
    """The model a finished run publishes: its stage's ``model/``, or that of its pipeline's last step that saved
    one (steps that write data or reports save none)."""
    run_dir = Path(cfg.output_dir)
    names = list(cfg.pipeline.steps) if cfg.get("pipeline") else [str(cfg.get("step") or cfg.stage)]
    saved = [run_dir / name / "model" for name in names if (run_dir / name / "model").is_dir()]
    if not saved:
        what = f"pipeline '{cfg.pipeline.name}'" if cfg.get("pipeline") else f"stage={cfg.stage}"
        raise AlignmentError(f"hub.push=true: {what} saved no model in {run_dir}; there is nothing to push")
    return saved[-1]


def push_model(cfg: DictConfig) -> str | None:
    """Upload the run's finished model to ``hub.model_id`` (created if need be); returns the commit's URL.

    Called once the run has finished, in the process the user started (not the launched ranks).
    """
    hub = cfg.get("hub")
    if hub is None or not hub.push:
        return None
    from alignment.distributed import is_launched

    if is_launched() or cfg.distributed.dry_run or int(cfg.distributed.machine_rank) != 0:
        return None
    model_dir = final_model_dir(cfg)
    metrics_path = model_dir.parent / "metrics.json"
    if not metrics_path.exists():
        raise AlignmentError(f"hub.push=true: {model_dir.parent} has not finished (no metrics.json); nothing pushed")
    from alignment.model_card import write_cards

    write_cards(model_dir.parent, json.loads(metrics_path.read_text(encoding="utf-8")), str(hub.model_id))
    import huggingface_hub

    repo_id = str(hub.model_id)
    print(f"[hub] pushing {model_dir} to https://huggingface.co/{repo_id}")
    try:
        huggingface_hub.create_repo(repo_id, private=bool(hub.private), exist_ok=True, repo_type="model")
        if hub.revision:
            huggingface_hub.create_branch(repo_id, branch=str(hub.revision), exist_ok=True)
        info = huggingface_hub.upload_folder(
            repo_id=repo_id,
            folder_path=model_dir,
            revision=hub.revision,
            commit_message=f"alignment: {model_dir.parent.name} ({model_dir.parent})",
            ignore_patterns=[".*"],
        )
    except Exception as err:  # HTTP status, offline, no connection (each HTTP client has its own error types)
        status = getattr(getattr(err, "response", None), "status_code", None)
        why = {
            401: "the token was refused: set HF_TOKEN or run `hf auth login`",
            403: f"the token may not write to '{repo_id}': use a write token, or a repo under your user or an org "
            "you belong to",
        }.get(status, str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise AlignmentError(
            f"could not push {model_dir} to hub.model_id={repo_id}: {why}. The model is kept there; run the same "
            "command again to push it (the finished stage is skipped)"
        ) from err
    url = str(getattr(info, "commit_url", None) or info)
    log.info("pushed %s to %s", model_dir, url)
    print(f"[hub] pushed: {url}")
    return url

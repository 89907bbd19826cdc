"""EleutherAI lm-eval on the model ``stage=eval`` loaded: ``lm_eval.simple_evaluate`` with an ``HFLM`` wrapped around
it, the shipped task dir (data/lm_eval) and ``eval.lm_eval.include_path`` searched for tasks. lm-eval is optional
(``pip install 'alignment[eval]'``): without it the tasks are skipped with a message, and the rest of the
evaluation runs."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from alignment.errors import AlignmentError
from alignment.paths import DATA_DIR

log = logging.getLogger("alignment")
TASK_DIR = DATA_DIR / "lm_eval"
MISSING = "eval.lm_eval.tasks: lm-eval is not installed, so {tasks} were skipped; pip install 'lm-eval>=0.4,<0.5'"


def lm_eval_scores(model, tokenizer, settings: DictConfig) -> dict[str, float]:
    """``lm_eval/<task>/<metric>`` for each task and metric lm-eval reports (``acc``, ``acc_norm``, ``..._stderr``);
    ``{"lm_eval_skipped": 1}`` when lm-eval is not installed."""
    tasks = [str(t) for t in settings.tasks]
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        message = MISSING.format(tasks=", ".join(tasks))
        log.warning(message)
        print(f"[eval] {message}")
        return {"lm_eval_skipped": 1}
    paths = [str(TASK_DIR)]
    for extra in settings.include_path:
        if not Path(str(extra)).expanduser().is_dir():
            raise AlignmentError(f"eval.lm_eval.include_path: {extra} is not a directory of lm-eval task yamls")
        paths.append(str(Path(str(extra)).expanduser().resolve()))
    manager = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise AlignmentError(
            f"eval.lm_eval.tasks: unknown task(s) {unknown}; the shipped ones are in {TASK_DIR} (e.g. aster_identity), "
            "others come with lm-eval or from eval.lm_eval.include_path"
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(settings.batch_size))
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        task_manager=manager,
        apply_chat_template=bool(settings.apply_chat_template),
        log_samples=False,
    )
    out: dict[str, float] = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"lm_eval/{task}/{key.split(',')[0]}"] = float(value)
    return out

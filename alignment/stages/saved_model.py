"""A stage's saved model: written to a temporary dir and renamed when complete, gathered whole under ZeRO-3 and
written by rank 0 alone; a PEFT model also keeps its adapter beside the merged model. The stage's model (and adapter)
carry their ``lineage.json`` (alignment/lineage.py) from the start."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from alignment.atomic import replace_dir
from alignment.distributed import barrier, full_state_dict, is_main_process, merge_adapter
from alignment.errors import AlignmentError
from alignment.lineage import write_lineage
from alignment.stages.stage_dir import is_out_of_disk, out_of_disk


def save_model(
    stage_dir: Path, model, tokenizer, subdir: str = "model", merge: bool = True, lineage: dict | None = None
) -> Path:
    """Save model and tokenizer to ``<stage_dir>/<subdir>/`` atomically (a temp dir renamed when complete).

    A PEFT model also saves its adapter to ``adapter/`` (with the base model's id); with ``merge`` (``peft.merge``)
    ``<subdir>/`` then holds the merged plain HF model, else (or for prompt learning, which cannot merge) the
    adapter, which ``load_causal_lm`` loads on its base. With ``lineage`` each dir written gets its ``lineage.json``,
    and an adapter records its base as the user gave it.
    """
    if hasattr(model, "peft_config"):
        from alignment.adapters import can_merge

        adapter_dir = stage_dir / ("adapter" if subdir == "model" else f"{subdir}_adapter")
        _save_dir(stage_dir, adapter_dir, model, tokenizer, lineage=lineage)
        if not merge or not can_merge(model):
            return _save_dir(stage_dir, stage_dir / subdir, model, tokenizer, lineage=lineage)
        model, state = merge_adapter(model)  # under ZeRO-3 the merge gathers the weights and returns them
        return _save_dir(stage_dir, stage_dir / subdir, model, tokenizer, state, lineage)
    return _save_dir(stage_dir, stage_dir / subdir, model, tokenizer, lineage=lineage)


def _save_dir(
    stage_dir: Path, target: Path, model, tokenizer, state: dict | None = None, lineage: dict | None = None
) -> Path:
    # Under ZeRO-3 every rank takes part in gathering the whole weights onto rank 0, which alone writes them.
    state = full_state_dict(model) if state is None else state
    if not is_main_process():
        barrier()  # wait for rank 0's files: the next stage reads them
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=stage_dir))
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if lineage is not None:
            (tmp / "README.md").unlink(
                missing_ok=True
            )  # peft's draft card (its base a local path); the stage writes one
            write_lineage(tmp, lineage)
        replace_dir(tmp, target)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_out_of_disk(err, stage_dir):
            raise out_of_disk(target, err) from err
        if isinstance(err, OSError):
            raise AlignmentError(f"could not save the model to {target}: {err}") from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    return target

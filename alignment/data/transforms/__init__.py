"""The preference-data lab: seeded, recorded changes to the preference train rows (``data.transforms``).

Each transform maps canonical preference rows (``prompt``, ``chosen``, ``rejected`` and any extra columns) to new
rows and says which rows it changed and which it dropped. Rows are named by their row id: their index in the loaded
train rows before any transform. Transform ``i`` draws from its own random stream, seeded by ``(seed, i)``: a run
is reproducible, and two transforms never share a stream. Held-out rows are never transformed.

    data.transforms=[{name: flip, p: 0.2}]
    data.transforms=[{name: subsample, n: 2000},{name: dedupe}]

The package: ``rows`` (row ids, context, results, row helpers), ``catalog`` (the transforms and their parameters),
``validation`` (checking ``data.transforms``), ``record`` (applying them, ``transforms.json``, the stage entry point).
"""

from alignment.data.transforms.catalog import REQUIRED, TRANSFORMS, Spec, margins
from alignment.data.transforms.record import (
    RECORD_FILE,
    apply_transforms,
    metrics_of,
    oracle_eval_prompts,
    transform_train_rows,
    write_record,
)
from alignment.data.transforms.rows import (
    ROW_ID,
    Context,
    Result,
    prompt_key,
    reply_text,
    side_columns,
    swap_sides,
    transform_rng,
)
from alignment.data.transforms.validation import validate_transforms

__all__ = [
    "RECORD_FILE",
    "REQUIRED",
    "ROW_ID",
    "TRANSFORMS",
    "Context",
    "Result",
    "Spec",
    "apply_transforms",
    "margins",
    "metrics_of",
    "oracle_eval_prompts",
    "prompt_key",
    "reply_text",
    "side_columns",
    "swap_sides",
    "transform_rng",
    "transform_train_rows",
    "validate_transforms",
    "write_record",
]

"""Keep secrets (API keys, tokens) out of saved configs, logs and reports."""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(_TOKEN|_KEY|_SECRET|PASSWORD)$", re.IGNORECASE)
_TOKENIZER_FIELD = re.compile(r"^(pad|eos|bos|unk|sep|cls|mask|max_new|max)_tokens?$", re.IGNORECASE)
MASK = "***"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _TOKENIZER_FIELD.match(name)


def secret_values() -> list[str]:
    """Values of environment variables whose names look like secrets (WANDB_API_KEY, HF_TOKEN, *_TOKEN, *_KEY)."""
    return [v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 6]


def scrub(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a config/log structure with secret-named keys and secret values masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_name(str(k)) and v else scrub(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(scrub(v, secrets) for v in obj)
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, MASK)
    return obj

"""Keep secrets (API keys, tokens) out of saved configs, logs and reports."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
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


_ASSIGNMENT = re.compile(r"""(?P<key>[\w.\-]+)(?P<sep>\s*[:=]\s*)(?P<value>["']?[^\s,'"}\]]+["']?)""")


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """Text with secret env values masked, and the values of ``*_token=...`` / ``api_key: ...`` assignments too."""
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, MASK)

    def mask(m: re.Match) -> str:
        name = m.group("key").rsplit(".", 1)[-1]
        return f"{m.group('key')}{m.group('sep')}{MASK}" if is_secret_name(name) else m.group(0)

    return _ASSIGNMENT.sub(mask, text)


def scrub_files(paths: list[Path]) -> None:
    """Rewrite text files (Hydra's ``.hydra/*.yaml`` records the raw command line) with secrets masked."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        clean = scrub_text(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


class SecretFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes (attach it to file and console handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_filter() -> None:
    """Mask secrets in everything the root logger's handlers write (Hydra's train.log, the console, ours)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())

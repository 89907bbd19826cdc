"""Rule-based processing around a chat model (``chat.rules.*``): input normalisation, blocked inputs answered with a
canned reply, stop strings, and a banned-phrase filter on replies that also holds while a reply streams."""

from __future__ import annotations

import re
import unicodedata

from omegaconf import DictConfig

from alignment.errors import AlignmentError

_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


class ChatRules:
    """The rules of ``chat.rules``: ``normalize`` and ``blocked`` on input, ``clean`` on the reply."""

    def __init__(self, rules: DictConfig) -> None:
        self.form = rules.unicode_form
        if self.form is not None and self.form not in _FORMS:
            raise AlignmentError(f"chat.rules.unicode_form={self.form} must be one of {', '.join(_FORMS)} or null")
        self.collapse = bool(rules.collapse_whitespace)
        self.blocked_reply = str(rules.blocked_reply)
        self.stop_strings = [str(s) for s in rules.stop_strings if str(s)]
        self.banned = [str(p) for p in rules.banned_phrases if str(p).strip()]
        self.replacement = str(rules.banned_replacement)
        self._blocked = []
        for i, pattern in enumerate(rules.blocked_patterns):
            try:
                self._blocked.append(re.compile(str(pattern), re.IGNORECASE))
            except re.error as err:
                raise AlignmentError(f"chat.rules.blocked_patterns.{i}={pattern!r} is not a regex: {err}") from None
        alternatives = "|".join(re.escape(p) for p in sorted(self.banned, key=len, reverse=True))
        self._banned = re.compile(alternatives, re.IGNORECASE) if self.banned else None

    @property
    def holdback(self) -> int:
        """Characters a stream keeps back: the most a stop string or banned phrase can be cut short at its end."""
        return max([len(s) - 1 for s in self.stop_strings + self.banned] or [0])

    def normalize(self, text: str) -> str:
        if self.form:
            text = unicodedata.normalize(self.form, text)
        if self.collapse:
            text = re.sub(r"[ \t\u3000]+", " ", text).strip()
        return text

    def blocked(self, text: str) -> bool:
        return any(p.search(text) for p in self._blocked)

    def clean(self, reply: str) -> str:
        """The reply cut at its first stop string, with each banned phrase replaced."""
        cut = min([i for s in self.stop_strings if (i := reply.find(s)) >= 0] or [len(reply)])
        reply = reply[:cut]
        return self._banned.sub(self.replacement, reply) if self._banned else reply


class StreamFilter:
    """Feed it the decoded text as it grows; it returns what may be shown now, so that what was shown is always the
    start of the cleaned final reply (a banned phrase split across chunks is never half shown)."""

    def __init__(self, rules: ChatRules) -> None:
        self.rules = rules
        self.text = ""
        self.shown = 0

    def feed(self, chunk: str) -> str:
        self.text += chunk
        cleaned = self.rules.clean(self.text).lstrip()
        safe = cleaned[: max(0, len(cleaned) - self.rules.holdback)].rstrip()
        new, self.shown = safe[self.shown :], max(self.shown, len(safe))
        return new

    def finish(self) -> tuple[str, str]:
        """(what is left to show, the whole cleaned reply)."""
        final = self.rules.clean(self.text).strip()
        return final[self.shown :], final

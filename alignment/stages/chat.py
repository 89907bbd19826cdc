"""Chat with a model in the terminal: ``python -m alignment stage=chat model.path=RUN/sft``.

Each turn is encoded by the data layer (``encode_prompt``: the model's chat template, as in training), the reply
streams as it is generated (transformers' ``TextIteratorStreamer``) and stops at the template's end of turn.
Commands: ``/reset`` (forget the conversation), ``/system <text>`` (set the system prompt; empty clears it),
``/save <file>`` (the conversation as JSON), ``/exit``. ``chat.rules.*`` normalise the input, answer blocked inputs
with a canned reply, cut replies at stop strings and filter banned phrases (alignment/chat_rules.py). Works through
a pipe too: one user turn per line. Nothing is written to the run dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from threading import Thread
from typing import TextIO

from omegaconf import DictConfig

from alignment.chat_rules import ChatRules, StreamFilter
from alignment.errors import AlignmentError

COMMANDS = "/reset, /system <text>, /save <file>, /exit"


class ChatSession:
    """A conversation with one model: its history, system prompt and rules; replies are written to ``out``."""

    def __init__(self, model, tokenizer, settings: DictConfig, out: TextIO | None = None) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.settings = settings
        self.rules = ChatRules(settings.rules)
        self.out = out or sys.stdout
        self.system: str | None = settings.system
        self.history: list[dict] = []
        self.last_prompt_ids: list[int] = []

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def respond(self, text: str) -> str:
        """Answer one user turn (normalised; a blocked one gets the canned reply and stays out of the history)."""
        text = self.rules.normalize(text)
        if not text:
            return ""
        if self.rules.blocked(text):
            self._write(self.rules.blocked_reply + "\n")
            return self.rules.blocked_reply
        from alignment.data import encode_prompt

        self.history.append({"role": "user", "content": text})
        self.last_prompt_ids = encode_prompt(self.tokenizer, self.messages())
        reply = self._generate(self.last_prompt_ids)
        self.history.append({"role": "assistant", "content": reply})
        return reply

    def _generate(self, ids: list[int]) -> str:
        import torch
        from transformers import TextIteratorStreamer

        from alignment.generation import stop_token_ids

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        temperature = float(self.settings.temperature)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {}
        if not sampling:
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if self.rules.stop_strings:
            sampling |= {"stop_strings": self.rules.stop_strings, "tokenizer": self.tokenizer}
        input_ids = torch.tensor([ids], device=self.model.device)
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=int(self.settings.max_new_tokens),
            eos_token_id=stop_token_ids(self.tokenizer, self.model),
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
            **sampling,
        )
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as err:  # shown in the main thread
                errors.append(err)
                streamer.end()

        thread = Thread(target=generate, daemon=True)
        thread.start()
        shown = StreamFilter(self.rules)
        for chunk in streamer:
            if self.settings.stream:
                self._write(shown.feed(chunk))
            else:
                shown.feed(chunk)
        thread.join()
        if errors:
            raise errors[0]
        rest, reply = shown.finish()
        self._write((rest if self.settings.stream else reply) + "\n")
        return reply

    def command(self, line: str) -> bool:
        """Run a /command; False for /exit."""
        name, _, arg = line.strip().partition(" ")
        if name == "/exit":
            return False
        if name == "/reset":
            self.history = []
            self._note("conversation cleared")
        elif name == "/system":
            self.system = arg.strip() or None
            self._note(f"system prompt {'set' if self.system else 'cleared'}")
        elif name == "/save":
            if not arg.strip():
                self._note("usage: /save <file>")
            else:
                path = Path(arg.strip()).expanduser()
                data = {"system": self.system, "messages": self.messages()}
                path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
                self._note(f"saved {len(self.history)} messages to {path}")
        else:
            self._note(f"unknown command {name}; commands: {COMMANDS}")
        return True

    def loop(self, lines) -> None:
        """Answer each line (or run it, if it is a /command) until /exit or the end of input."""
        for line in lines:
            line = line.rstrip("\n")
            if line.startswith("/"):
                if not self.command(line):
                    return
            elif line.strip():
                self.respond(line)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _note(self, text: str) -> None:
        print(f"[chat] {text}", file=sys.stderr, flush=True)


def terminal_lines():
    """Lines typed at a ``> `` prompt (a terminal), or stdin's lines (a pipe)."""
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            return


def open_session(cfg: DictConfig) -> ChatSession:
    """Load ``model.path`` and its tokenizer (which must have a chat template) into a session."""
    from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

    if int(cfg.chat.max_new_tokens) < 1:
        raise AlignmentError(f"chat.max_new_tokens={cfg.chat.max_new_tokens} must be at least 1")
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path, cfg.model)
    return ChatSession(load_causal_lm(path, cfg.model, tokenizer=tokenizer), tokenizer, cfg.chat)


def run(cfg: DictConfig) -> dict:
    session = open_session(cfg)
    print(f"[chat] {cfg.model.path or 'the tiny model'}; commands: {COMMANDS}", file=sys.stderr, flush=True)
    try:
        session.loop(terminal_lines())
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return {"turns": len(session.history) // 2}

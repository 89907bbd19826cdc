"""Talk to a trained model: ``python -m alignment.chat RUN/sft "Who are you?"`` (no prompt: interactive).

A shortcut onto ``stage=chat`` (alignment/stages/chat.py, the one implementation): each prompt given here gets its
own fresh conversation; with none, the chat goes on turn by turn (a terminal or a pipe), with its /commands.
Decoding is greedy unless ``--temperature`` is given, and stops at the template's end-of-turn token.
"""

from __future__ import annotations

import argparse
import io
import sys

from alignment.errors import AlignmentError


def chat_config(model: str, system: str | None = None, max_new_tokens: int = 64, temperature: float = 0.0):
    """The config ``stage=chat`` would run with: ``model.path`` and ``chat.*`` from the structured defaults."""
    from omegaconf import OmegaConf

    from alignment.config import ChatConfig, DataConfig, ModelConfig

    chat = ChatConfig(system=system, max_new_tokens=max_new_tokens, temperature=temperature)
    return OmegaConf.create(
        {
            "model": OmegaConf.structured(ModelConfig(name="hf", path=model)),
            "data": OmegaConf.structured(DataConfig()),
            "chat": OmegaConf.structured(chat),
        }
    )


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 64, temperature: float = 0.0) -> str:
    """One assistant reply to a conversation that ends with a user turn (no streaming, no rules)."""
    from omegaconf import OmegaConf

    from alignment.stages.chat import ChatSession

    settings = chat_config("", None, max_new_tokens, temperature).chat
    settings.stream = False
    settings.rules = OmegaConf.merge(settings.rules, {"unicode_form": None, "collapse_whitespace": False})
    session = ChatSession(model, tokenizer, settings, out=io.StringIO())
    session.system, session.history = None, list(messages[:-1])
    return session.respond(messages[-1]["content"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignment.chat", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model dir, a stage dir (RUN/sft) or a Hub id")
    parser.add_argument("prompts", nargs="*", help="questions to ask, one reply each; none = interactive")
    parser.add_argument("--system", default=None, help="a system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = parser.parse_args(argv)
    try:
        from alignment.stages.chat import open_session, terminal_lines

        cfg = chat_config(args.model, args.system, args.max_new_tokens, args.temperature)
        session = open_session(cfg)
        if not args.prompts:
            session.loop(terminal_lines())
            return 0
        for prompt in args.prompts:
            session.history, session.out = [], io.StringIO()
            answer = session.respond(prompt)
            print(f"> {prompt}\n{answer}", flush=True)
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

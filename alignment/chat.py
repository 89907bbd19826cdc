"""Talk to a trained model: ``python -m alignment.chat RUN/sft "Who are you?"`` (no prompt: interactive).

Prompts are encoded by the shared data layer, so the model sees exactly the tokens it was trained on; decoding is
greedy unless ``--temperature`` is given, and stops at the template's end-of-turn token.
"""

from __future__ import annotations

import argparse
import sys

from alignment.errors import AlignmentError


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 64, temperature: float = 0.0) -> str:
    """One assistant reply to a conversation that ends with a user turn."""
    import torch

    from alignment.data import encode_prompt, turn_end_token_ids

    ids = torch.tensor([encode_prompt(tokenizer, messages)], device=model.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            eos_token_id=turn_end_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignment.chat", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model dir, a stage dir (RUN/sft) or a Hub id")
    parser.add_argument("prompts", nargs="*", help="questions to ask, one reply each; none = interactive")
    parser.add_argument("--system", default=None, help="a system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = parser.parse_args(argv)
    try:
        from omegaconf import OmegaConf

        from alignment.models import load_causal_lm, load_tokenizer, resolve_model_path

        model_cfg = OmegaConf.create({"name": "hf", "path": args.model, "dtype": "auto", "trust_remote_code": False})
        path = resolve_model_path(model_cfg)
        tokenizer = load_tokenizer(path, model_cfg)
        model = load_causal_lm(path, model_cfg).eval()
        system = [{"role": "system", "content": args.system}] if args.system else []
        if args.prompts:
            for prompt in args.prompts:
                answer = reply(
                    model,
                    tokenizer,
                    system + [{"role": "user", "content": prompt}],
                    args.max_new_tokens,
                    args.temperature,
                )
                print(f"> {prompt}\n{answer}")
            return 0
        history = list(system)
        for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("> "), None):
            history.append({"role": "user", "content": line.strip()})
            answer = reply(model, tokenizer, history, args.max_new_tokens, args.temperature)
            history.append({"role": "assistant", "content": answer})
            print(answer, flush=True)
    except AlignmentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

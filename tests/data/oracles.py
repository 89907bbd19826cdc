"""Independent oracles for the chat-encoding tests: how each template in ``templates.py`` renders an assistant turn,
what ends it, what header precedes it, and what its model stops on. Written from the templates by hand, never from
the encoder.
"""

from __future__ import annotations

import json

from alignment.data.encode import IGNORE_INDEX

try:
    from tests.data.templates import TEMPLATES
except ImportError:
    from templates import TEMPLATES


def _qwen3_turn(content: str, final: bool) -> str:
    reasoning = ""
    if "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        content = content.split("</think>")[-1].lstrip("\n")
    if final:  # the turn after the last user query keeps (or gets an empty) think block
        return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
    return content


def _split_think(content: str) -> tuple[str, str]:
    """GLM's (and Qwen3's) split of a reply into reasoning and answer at ``</think>``."""
    if "</think>" not in content:
        return "", content
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, content.split("</think>")[-1].lstrip("\n")


def _glm_turn(content: str, final: bool) -> str:
    reasoning, content = _split_think(content)
    think = "\n<think>" + reasoning.strip() + "</think>" if final and reasoning else "\n<think></think>"
    return think + ("\n" + content.strip() if content.strip() else "")


RENDER = {
    "qwen2.5": lambda c, final: c,
    "qwen3": _qwen3_turn,
    "llama3.1": lambda c, final: c.strip(),
    "mistral-nemo": lambda c, final: c,
    "mixtral": lambda c, final: c,
    "gemma2": lambda c, final: c.strip(),
    "gemma3": lambda c, final: c.strip(),
    "phi3.5": lambda c, final: c,
    "zephyr": lambda c, final: c,
    "deepseek-v3": lambda c, final: c,
    "glm4.5": _glm_turn,
    "gpt-oss": lambda c, final: "<|channel|>final<|message|>" + c,
}
# What closes a history turn; FINAL_END where the final turn ends differently. GLM-4 writes nothing after a reply:
# the next role token closes it, and after the final reply the encoder appends it (APPENDED).
TURN_END = {
    "qwen2.5": "<|im_end|>",
    "qwen3": "<|im_end|>",
    "llama3.1": "<|eot_id|>",
    "mistral-nemo": "</s>",
    "mixtral": "</s>",
    "gemma2": "<end_of_turn>",
    "gemma3": "<end_of_turn>",
    "phi3.5": "<|end|>",
    "zephyr": "</s>",
    "deepseek-v3": "<｜end▁of▁sentence｜>",
    "glm4.5": "<|user|>",
    "gpt-oss": "<|end|>",
}
FINAL_END = {**TURN_END, "gpt-oss": "<|return|>"}
APPENDED = {"glm4.5": "<|user|>"}
HEADER = {
    "qwen2.5": "<|im_start|>assistant\n",
    "qwen3": "<|im_start|>assistant\n",
    "llama3.1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-nemo": "[/INST]",
    "mixtral": " [/INST]",
    "gemma2": "<start_of_turn>model\n",
    "gemma3": "<start_of_turn>model\n",
    "phi3.5": "<|assistant|>\n",
    "zephyr": "<|assistant|>\n",
    "deepseek-v3": "<｜Assistant｜>",
    "glm4.5": "<|assistant|>",
    "gpt-oss": "<|start|>assistant",
}
# What the real models stop on: the end-of-turn token, then eos when it is a different token.
STOP_TOKENS = {
    "qwen2.5": ["<|im_end|>"],
    "qwen3": ["<|im_end|>"],
    "llama3.1": ["<|eot_id|>", "<|end_of_text|>"],
    "mistral-nemo": ["</s>"],
    "mixtral": ["</s>"],
    "gemma2": ["<end_of_turn>", "<eos>"],
    "gemma3": ["<end_of_turn>", "<eos>"],
    "phi3.5": ["<|end|>", "<|endoftext|>"],
    "zephyr": ["</s>"],
    "deepseek-v3": ["<｜end▁of▁sentence｜>"],
    # GLM's generation config stops on <|user|> and <|observation|>; <|system|> is the third role token
    "glm4.5": ["<|user|>", "<|observation|>", "<|system|>", "<|endoftext|>"],
    "gpt-oss": ["<|return|>", "<|end|>", "<|call|>"],
}


def rendered_ids(tok, name: str, messages: list[dict], **kwargs) -> list[int]:
    """The template's tokens for a conversation ending with an assistant reply, with the stop token appended where
    the template leaves the final reply open."""
    ids = tok.apply_chat_template(messages, **kwargs)["input_ids"]
    return ids + ([tok.convert_tokens_to_ids(APPENDED[name])] if name in APPENDED else [])


def expected_turns(name: str, messages: list[dict]) -> list[str]:
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [
        RENDER[name](m["content"], i > last_user) + (FINAL_END if i == len(messages) - 1 else TURN_END)[name]
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]


def trained_runs(input_ids: list[int], labels: list[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) token ranges whose labels are set."""
    runs, start = [], None
    for k, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = k
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, k))
            start = None
    return runs


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def rejects_system(name: str) -> bool:
    return TEMPLATES[name]["system"] == "rejects"


# ---------------------------------------------------------------------------------------------------------------
# Tool calls: what each template that renders them writes for an assistant turn calling ``calls`` (a list of
# (name, arguments dict, id)) with ``content``, from the end of the generation prompt (or header) up to its end


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # transformers' tojson


def _qwen25_call(content: str, calls: list) -> str:
    text = ("\n" + content if content else "") + "".join(
        f'\n<tool_call>\n{{"name": "{name}", "arguments": {_json(args)}}}\n</tool_call>' for name, args, _ in calls
    )
    return text[1:]  # the generation prompt ends with that first newline


def _glm_call(content: str, calls: list) -> str:
    text = _glm_turn(content, True)
    for name, args, _ in calls:
        pairs = "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{v if isinstance(v, str) else _json(v)}</arg_value>\n"
            for k, v in args.items()
        )
        text += f"\n<tool_call>{name}\n{pairs}</tool_call>"
    return text


def _mistral_call(content: str, calls: list) -> str:
    items = [_json({"name": name, "arguments": args})[:-1] + f', "id": "{id_}"}}' for name, args, id_ in calls]
    return "[TOOL_CALLS][" + ", ".join(items) + "]"


CALL_RENDER = {
    "qwen2.5": _qwen25_call,
    # Llama 3.1 writes one call as bare JSON with "parameters", and no content
    "llama3.1": lambda content, calls: _json({"name": calls[0][0], "parameters": calls[0][1]}),
    "mistral-nemo": _mistral_call,
    "glm4.5": _glm_call,
    # gpt-oss: one call, on the commentary channel; the content is dropped once a final answer follows
    "gpt-oss": lambda content, calls: (
        f" to=functions.{calls[0][0]}<|channel|>commentary json<|message|>{_json(calls[0][1])}"
    ),
}
CALL_END = {
    "qwen2.5": "<|im_end|>",
    "llama3.1": "<|eot_id|>",
    "mistral-nemo": "</s>",
    "glm4.5": "<|observation|>",
    "gpt-oss": "<|call|>",
}
# How many calls one assistant message may make under the template
MAX_CALLS = {"qwen2.5": 2, "llama3.1": 1, "mistral-nemo": 2, "glm4.5": 2, "gpt-oss": 1}

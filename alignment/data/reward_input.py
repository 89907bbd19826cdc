"""What a reward model reads: the prompt, then the reply through its end-of-turn token, and nothing after.

Reward-model training (the rm stage's rows), its evaluation and every RL reward from a reward model build their input
here, from ``encode_preference``'s own encoding, so the score is read at the same token everywhere: the last real
token, which is the reply's end-of-turn. A sampled reply scored as tokens keeps the tokens the policy produced: cut
at its first end-of-turn, and given none when it was cut short.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from alignment.data.encode import Messages, Tools, encode_preference


def reward_pair(encoded: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """The reward model's two inputs for an ``encode_preference`` row: the prompt followed by each reply."""
    return {
        "chosen_ids": list(encoded["prompt_ids"]) + list(encoded["chosen_ids"]),
        "rejected_ids": list(encoded["prompt_ids"]) + list(encoded["rejected_ids"]),
    }


def encode_reward_input(
    tokenizer, prompt: Messages, reply: Messages, max_length: int | None = None, tools: Tools = None
) -> list[int]:
    """The reward model's input for one reply: exactly the chosen side of a preference pair with that reply.

    ``max_length`` cuts as ``encode_preference`` does: the prompt from the left first, then the reply from the right.
    """
    return reward_pair(encode_preference(tokenizer, prompt, reply, reply, max_length, tools))["chosen_ids"]


def sampled_reward_input(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], stop_ids: Collection[int], max_length: int | None = None
) -> list[int]:
    """The reward model's input for a sampled reply given as token ids of the reward model's own tokenizer.

    The completion is cut at and including its first stop (end-of-turn) id; one that never reached a stop id is
    scored as it is, with no end-of-turn added. ``max_length`` cuts like :func:`encode_reward_input`.
    """
    reply = list(completion_ids)
    stop = next((i for i, t in enumerate(reply) if t in stop_ids), None)
    if stop is not None:
        reply = reply[: stop + 1]
    prompt = list(prompt_ids)
    if max_length is not None and len(prompt) + len(reply) > max_length:
        keep = max(max_length - len(reply), 0)
        prompt = prompt[len(prompt) - keep :] if keep else []
        reply = reply[: max_length - len(prompt)]
    return prompt + reply

"""Reward sources for online RL (PPO, GRPO, RLOO): reward models, task oracles and user functions, weighted.

``build_reward_fn(spec)`` turns a list like ``[{"type": "model", "path": "runs/rm", "weight": 1.0},
{"type": "oracle", "weight": 0.5}]`` into one callable ``reward_fn(prompts, responses, oracle) -> list[float]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from alignment.data.encode import turn_end_token_ids
from alignment.data.reward_input import encode_reward_input, sampled_reward_input
from alignment.errors import AlignmentError
from alignment.models import locate_model
from alignment.oracle import score_batch
from alignment.user_code import load_function

log = logging.getLogger(__name__)
SOURCE_TYPES = ("model", "oracle", "function")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_KEYS = {"type", "path", "name", "weight", "batch_size", "max_length", "group_by_length"}
Scorer = Callable[[list | None, list[str], list], list[float]]


class RewardFunction:
    """Weighted sum of reward sources; ``last_scores`` keeps each source's raw scores from the latest call."""

    def __init__(self, sources: Sequence[tuple[str, float, Scorer]]) -> None:
        self.sources = list(sources)
        self.last_scores: dict[str, list[float]] = {}

    def __call__(
        self,
        prompts: list | None,
        responses: list[str],
        oracle: list | None = None,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """Score each response: ``sum(weight * source(prompts, responses, oracle))``.

        ``prompt_ids`` and ``completion_ids``, the policy's tokens, reach the reward models, which score those tokens
        themselves when they share the policy's tokenizer (:meth:`ModelReward.__call__`).
        """
        n = len(responses)
        oracle = list(oracle) if oracle is not None else [None] * n
        total = [0.0] * n
        self.last_scores = {}
        for name, weight, source in self.sources:
            if isinstance(source, ModelReward):
                raw = source(prompts, responses, oracle, prompt_ids=prompt_ids, completion_ids=completion_ids)
            else:
                raw = source(prompts, responses, oracle)
            scores = [float(x) for x in raw]
            if len(scores) != n:
                raise AlignmentError(f"reward source {name!r} returned {len(scores)} scores for {n} responses")
            self.last_scores[name] = scores
            total = [t + weight * x for t, x in zip(total, scores, strict=True)]
        return total


def build_reward_fn(
    spec, tokenizer=None, device: str | torch.device | None = None, trust_remote_code: bool = False
) -> RewardFunction:
    """Build the weighted reward callable from a list of ``{"type", "path"|"name", "weight"}`` entries.

    ``tokenizer`` is only a fallback for a reward model folder without its own tokenizer; ``device`` is where reward
    models run (default: CUDA if available, else CPU); ``trust_remote_code`` (off unless the user sets it) is passed to
    every reward model load.
    """
    entries = [spec] if isinstance(spec, Mapping) else list(spec or [])
    if not entries:
        raise AlignmentError("no reward source given: set e.g. `reward: [{type: model, path: <reward model dir>}]`")
    sources: list[tuple[str, float, Scorer]] = []
    for i, entry in enumerate(entries):
        where = f"reward source #{i} ({dict(entry) if isinstance(entry, Mapping) else entry!r})"
        if not isinstance(entry, Mapping):
            raise AlignmentError(f"{where}: each reward source must be a mapping with a `type` key")
        entry = dict(entry)
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise AlignmentError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(_KEYS)}")
        kind = entry.get("type")
        target = entry.get("path") or entry.get("name")
        try:
            weight = float(entry.get("weight", 1.0))
        except (TypeError, ValueError):
            raise AlignmentError(f"{where}: `weight` must be a number") from None
        if kind == "model":
            if not target:
                raise AlignmentError(f"{where}: a model source needs `path`, the reward model folder")
            if not isinstance(entry.get("group_by_length", True), bool):
                raise AlignmentError(f"{where}: `group_by_length` must be true or false")
            scorer: Scorer = ModelReward(
                locate_model(target, f"reward.sources.{i}.path"),  # a stage dir (RUN/rm) names its model/
                tokenizer,
                device,
                batch_size=entry.get("batch_size", 8),
                max_length=entry.get("max_length"),
                trust_remote_code=trust_remote_code,
                group_by_length=entry.get("group_by_length", True),
            )
            name = f"model:{Path(str(target)).name}"
        elif kind == "oracle":
            scorer, name = oracle_reward, "oracle"
        elif kind == "function":
            if not target:
                raise AlignmentError(f"{where}: a function source needs `name`: 'package.module:function'")
            key = f"reward.sources.{i}.{'path' if entry.get('path') else 'name'}"
            scorer, name = function_reward(str(target), key), f"function:{target}"
        else:
            raise AlignmentError(f"{where}: unknown `type` {kind!r}; use one of {', '.join(SOURCE_TYPES)}")
        taken = {s[0] for s in sources}
        unique, k = name, 2
        while unique in taken:
            unique, k = f"{name}#{k}", k + 1
        sources.append((unique, weight, scorer))
    return RewardFunction(sources)


def oracle_reward(prompts: list | None, responses: list[str], oracle: list) -> list[float]:
    """Score responses with the task oracle of each row (:func:`alignment.oracle.score_batch`)."""
    scores = score_batch(list(oracle), list(responses))
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise AlignmentError(
            f"the oracle reward cannot score rows {missing[:5]}: they have no (or an unknown) `oracle`; use a "
            "prompt dataset with an `oracle` column, or another reward source"
        )
    return [float(s) for s in scores]


def function_reward(target: str, key: str) -> Scorer:
    """Load ``'package.module:function'`` or ``'path/to/file.py:function'`` (:func:`alignment.user_code.load_function`)
    and wrap it as a scorer; each error names the config ``key`` that holds ``target``."""
    fn = load_function(target, key, example="my_rewards:length")

    def scorer(prompts: list | None, responses: list[str], oracle: list) -> list[float]:
        return list(fn(prompts=prompts, responses=responses, oracle=oracle))

    return scorer


class ModelReward:
    """A sequence-classification reward model scoring ``prompt + response``, read at the reply's end-of-turn token.

    Its input is what the rm stage trains on (:mod:`alignment.data.reward_input`): rendered with the reward model's
    own chat template, or, when it shares the policy's tokenizer and the caller passes them, the sampled tokens.

    With ``group_by_length`` (the default) rows are sorted by length and cut into forwards of at most ``batch_size``
    rows that waste little padding (:func:`alignment.rl.padding.length_groups`), instead of ``batch_size`` rows in
    the given order padded to the longest; the scores are the same, in the given order.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer=None,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        group_by_length: bool = True,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from alignment.models import match_tokenizer, set_pad_token

        path = Path(path)
        if not path.is_dir():
            raise AlignmentError(f"reward model folder {str(path)!r} does not exist; train one with stage=rm first")
        # Check the files: transformers 5 happily builds an empty tokenizer from config.json alone.
        if any((path / name).is_file() for name in _TOKENIZER_FILES):
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        elif tokenizer is not None:
            self.tokenizer = tokenizer
        else:
            raise AlignmentError(f"reward model folder {str(path)!r} has no tokenizer files and none was passed")
        if not getattr(self.tokenizer, "chat_template", None):
            raise AlignmentError(f"the tokenizer of reward model {str(path)!r} has no chat template to render prompts")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = self.model.to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise AlignmentError(f"reward model {str(path)!r} has num_labels={self.model.config.num_labels}; need 1")
        set_pad_token(self.tokenizer, str(path))  # the pad policy the rm stage trained it under
        match_tokenizer(self.model, self.tokenizer)
        self.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = int(batch_size), max_length
        self.group_by_length = group_by_length
        self.stop_ids = set(turn_end_token_ids(self.tokenizer))
        # Sampled tokens mean the same to this model only under the same vocabulary and chat template.
        self.reads_policy_tokens = tokenizer is not None and (
            tokenizer is self.tokenizer
            or (
                tokenizer.get_vocab() == self.tokenizer.get_vocab()
                and tokenizer.chat_template == self.tokenizer.chat_template
            )
        )
        if tokenizer is not None:
            how = "shares the policy's tokenizer: sampled tokens given as ids are scored as they are"
            if not self.reads_policy_tokens:
                how = "has its own tokenizer: replies are scored as text under its chat template"
            log.info("Reward model %s %s.", path, how)

    def encode(self, prompt: list | str, response: str) -> list[int]:
        """The token ids this model scores for a text reply: the rm stage's input for it."""
        return encode_reward_input(self.tokenizer, prompt, response, max_length=self.max_length)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list | None,
        responses: list[str],
        oracle: list | None = None,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        """Score each ``(prompt messages, response)`` pair, ``batch_size`` at a time.

        Given the policy's ``prompt_ids`` and ``completion_ids`` and sharing its tokenizer, it scores those tokens
        (:func:`~alignment.data.reward_input.sampled_reward_input`): a reply cut short is scored without an
        end-of-turn it never produced. Otherwise it renders the text with its own chat template.
        """
        from alignment.rl.padding import length_groups

        if prompt_ids is not None and completion_ids is not None and self.reads_policy_tokens:
            if not len(prompt_ids) == len(completion_ids) == len(responses):
                raise AlignmentError(
                    f"got {len(prompt_ids)} prompts and {len(completion_ids)} completions as tokens for "
                    f"{len(responses)} responses; they must pair up"
                )
            pairs = zip(prompt_ids, completion_ids, strict=True)
            rows = [sampled_reward_input(p, c, self.stop_ids, self.max_length) for p, c in pairs]
        else:
            if prompts is None:
                raise AlignmentError(
                    "a reward model needs the prompts: give the dataset a `prompt` column of messages"
                )
            if len(prompts) != len(responses):
                raise AlignmentError(f"got {len(prompts)} prompts for {len(responses)} responses; they must pair up")
            rows = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        if self.group_by_length:
            groups = length_groups([len(r) for r in rows], max_size=self.batch_size)
        else:
            groups = [
                list(range(i, min(i + self.batch_size, len(rows)))) for i in range(0, len(rows), self.batch_size)
            ]
        scores = [0.0] * len(rows)
        for group in groups:
            for i, score in zip(group, self._score([rows[i] for i in group]), strict=True):
                scores[i] = score
        return scores

    def _score(self, chunk: list[list[int]]) -> list[float]:
        """Scores of token rows in one forward, right-padded to the longest of them."""
        from trl.trainer.utils import pad

        from alignment.rl.ops import last_token_index
        from alignment.rl.rollout import token_scores

        # Right padding: the score is read at each row's last real token.
        rows = [torch.tensor(row, dtype=torch.long) for row in chunk]
        ids = pad(rows, padding_value=self.pad_token_id, padding_side="right")
        mask = pad([torch.ones_like(row) for row in rows], padding_value=0, padding_side="right")
        ids, mask = ids.to(self.device), mask.to(self.device)
        try:
            per_token = token_scores(self.model, ids, mask)
            picked = per_token[torch.arange(len(chunk), device=self.device), last_token_index(mask)]
        except AlignmentError:  # no `score` head: trust the model's own pooling
            self.model.config.pad_token_id = self.pad_token_id
            picked = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        return picked.tolist()

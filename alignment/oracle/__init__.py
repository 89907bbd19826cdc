"""The rule-based oracle of the embedded tasks: it scores a reply in [0, 1], standing in for human judgement.

* ``rules.py``: what a good reply to each task does, and the scoring of one reply (pure Python, cached);
* ``evaluate.py``: sample the policy's replies to the held-out prompts and score them (``oracle_reward`` in
  ``metrics.json``, set by ``oracle_eval.*``);
* ``cache.py``: identical evaluations (same weights, tokenizer, prompts and settings) read back instead of sampled.

The reward source ``{type: oracle}`` (:func:`alignment.rewards.oracle_reward`) scores RL rollouts with ``rules``.
"""

from __future__ import annotations

from alignment.oracle.rules import (
    CAPITALS,
    CHAT_RULES,
    LEXICON,
    MAKER,
    NAME,
    TASKS,
    answer_of,
    capitals_named,
    clean_reply,
    countries_named,
    has_keyword,
    language_share,
    parse,
    score,
    score_batch,
    sentiment_counts,
    task_of,
    units,
)

__all__ = [
    "CAPITALS",
    "CHAT_RULES",
    "LEXICON",
    "MAKER",
    "NAME",
    "TASKS",
    "answer_of",
    "capitals_named",
    "clean_reply",
    "countries_named",
    "has_keyword",
    "language_share",
    "parse",
    "score",
    "score_batch",
    "sentiment_counts",
    "task_of",
    "units",
]

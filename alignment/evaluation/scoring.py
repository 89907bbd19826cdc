"""Scores of replies and a win rate between two models, with its interval and a length-controlled variant.

Length control: the win rate is regressed on the reply-length difference (ordinary least squares, outcome =
a + b * (tokens_A - tokens_B)); the intercept ``a`` is the win rate the model would have against replies of the same
length. A regression uses every pair, where bucketing pairs of similar length leaves few pairs per bucket on a small
held-out set; a linear model (not logistic) has no fitting failure when outcomes separate perfectly on a few prompts.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from alignment.oracle import score_batch


def oracle_scores(oracles: list, replies: list[str]) -> list[float | None]:
    """The oracle's score of each reply, None where its prompt has no oracle."""
    return score_batch([o if o else None for o in oracles], replies)


def mean(values) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def outcome(a: float, b: float) -> float:
    """1 when A's score is higher, 0.5 on a tie, 0 when lower."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


@dataclass
class WinRate:
    """A's win rate over B (ties count half), its Student-t 95% interval over prompts, and the length-controlled
    win rate with the fitted slope (win rate per token of length advantage)."""

    rate: float
    low: float
    high: float
    prompts: int
    pairs: int
    length_controlled: float
    length_slope: float

    def metrics(self, prefix: str = "win_rate") -> dict[str, float]:
        out = {prefix: self.rate, f"{prefix}_lc": self.length_controlled, f"{prefix}_lc_slope": self.length_slope}
        out |= {f"{prefix}_pairs": self.pairs, f"{prefix}_prompts": self.prompts}
        if math.isfinite(self.low):
            out |= {f"{prefix}_low": self.low, f"{prefix}_high": self.high}
        return out


def win_rate(
    scores_a: list[float], scores_b: list[float], tokens_a: list[int], tokens_b: list[int], per_prompt: int
) -> WinRate:
    """Pair reply ``i`` of A with reply ``i`` of B (``per_prompt`` replies per prompt, prompt-major); the interval
    is over the prompts' mean outcomes, since replies to one prompt are not independent."""
    from alignment.report.stats import summarize

    outcomes = [outcome(a, b) for a, b in zip(scores_a, scores_b, strict=True)]
    by_prompt = [statistics.fmean(outcomes[i : i + per_prompt]) for i in range(0, len(outcomes), per_prompt)]
    summary = summarize(by_prompt)
    diffs = [float(a - b) for a, b in zip(tokens_a, tokens_b, strict=True)]
    try:
        slope, intercept = statistics.linear_regression(diffs, outcomes)
    except statistics.StatisticsError:  # every pair has the same length difference: nothing to control for
        slope, intercept = 0.0, summary.mean
        if diffs and diffs[0] != 0:
            intercept = math.nan
    return WinRate(
        rate=summary.mean,
        low=max(0.0, summary.low) if math.isfinite(summary.low) else math.nan,
        high=min(1.0, summary.high) if math.isfinite(summary.high) else math.nan,
        prompts=len(by_prompt),
        pairs=len(outcomes),
        length_controlled=min(1.0, max(0.0, intercept)) if math.isfinite(intercept) else math.nan,
        length_slope=slope,
    )

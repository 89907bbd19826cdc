"""Seed statistics: runs that differ only in ``seed`` grouped, each metric as mean, std, a Student-t 95% CI and n.

For n values x_1..x_n: mean m, sample standard deviation s (ddof=1), and the interval m +- t(0.975, n-1) * s / sqrt(n),
with the t quantile from ``scipy.stats.t``. One seed gives a value and n=1, with no spread.
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from dataclasses import dataclass, field

from alignment.report.runs import Run

SEED = "seed"
# Shown in the sweep table (after the objective and sweep.report_metrics) when the runs recorded them.
DEFAULT_METRICS = [
    "eval_loss",
    "eval_accuracy",
    "eval_rewards/accuracies",
    "win_rate",
    "oracle_reward",
    "kl",
]


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # nan when n == 1
    low: float  # the 95% CI; nan when n == 1
    high: float
    n: int


def summarize(values: list[float]) -> Summary:
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Summary(mean, math.nan, math.nan, math.nan, n)
    from scipy import stats

    std = statistics.stdev(values)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, mean - half, mean + half, n)


@dataclass
class Group:
    """Runs with the same settings but for ``seed``; ``params`` are the settings (override key -> value as typed)."""

    params: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r.metrics[key] for r in self.runs if key in r.metrics and math.isfinite(r.metrics[key])]

    def summary(self, key: str) -> Summary | None:
        values = self.values(key)
        return summarize(values) if values else None

    @property
    def seeds(self) -> list[str]:
        return [r.overrides.get(SEED, "") for r in self.runs]


def group_runs(runs: list[Run]) -> list[Group]:
    """Finished runs grouped by their overrides less ``seed``; a run without recorded overrides is its own group."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.status != "done":
            continue
        params = {k: v for k, v in run.overrides.items() if k != SEED}
        key = tuple(sorted(params.items())) if run.has_overrides else ("run", run.name)
        groups.setdefault(key, Group(params)).runs.append(run)
    return list(groups.values())


def varying_params(runs: list[Run]) -> list[str]:
    """Override keys (not ``seed``) whose value differs between runs, in the order they were typed."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys and k != SEED]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def choose_objective(settings: dict, runs: list[Run]) -> tuple[str | None, str, str]:
    """(metric, direction, why): ``sweep.metric`` and ``sweep.direction``, else eval_loss minimised if recorded."""
    metric = settings.get("metric")
    direction = str(settings.get("direction") or "minimize")
    if direction not in ("minimize", "maximize"):
        direction = "minimize"
    if metric:
        return str(metric), direction, "sweep.metric"
    if any("eval_loss" in r.metrics for r in runs):
        return "eval_loss", "minimize", "sweep.metric unset: eval_loss, minimised"
    return None, direction, "sweep.metric unset and no run recorded eval_loss: runs in name order"


def sort_groups(groups: list[Group], metric: str | None, direction: str) -> list[Group]:
    """Best first by the objective's mean; groups without it last."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(group: Group) -> tuple:
        s = group.summary(metric) if metric else None
        return (s is None, sign * s.mean if s else 0.0, group.runs[0].name)

    return sorted(groups, key=key)


def expand_patterns(patterns: list[str], runs: list[Run]) -> list[str]:
    """Metric keys matching ``sweep.report_metrics`` (names or glob patterns), in pattern order."""
    keys = sorted({k for r in runs for k in r.metrics})
    out: list[str] = []
    for pattern in patterns:
        out += [k for k in keys if fnmatch.fnmatchcase(k, str(pattern)) and k not in out]
    return out


def shown_metrics(objective: str | None, extra: list[str], runs: list[Run]) -> list[str]:
    present = {k for r in runs for k in r.metrics}
    shown = [objective] if objective else []
    for key in extra + DEFAULT_METRICS:
        if key in present and key not in shown:
            shown.append(key)
    return shown


_RATE = re.compile(
    r"^(?P<step>(?:(?!eval_rewards/)[^/]+/)?)"
    r"(?P<base>eval_rewards/accuracies|[^/]*(?:accuracy|win_rate|oracle_reward)[^/]*)(?:/(?P<task>.+))?$"
)


def count_key(metric: str) -> str | None:
    """The metrics key holding how many samples a rate was measured on: held-out rows (``eval_rows``) for an
    accuracy, scored replies (``oracle_samples``) for the oracle reward or a win rate. A per-task rate
    (``eval_accuracy/chat``) uses its task's count, a pipeline step's (``dpo/...``) its step's."""
    match = _RATE.match(metric.removesuffix("_before"))
    if not match:
        return None
    count = "eval_rows" if "accura" in match["base"] else "oracle_samples"
    return f"{match['step']}{count}" + (f"/{match['task']}" if match["task"] else "")


def sample_count(metric: str, metrics: dict[str, float]) -> int | None:
    """How many rows or replies ``metric`` was measured on, when the stage recorded it."""
    key = count_key(metric)
    return int(metrics[key]) if key and key in metrics else None

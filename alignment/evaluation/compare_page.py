"""The pages ``stage=compare`` writes: ``compare.md`` (a table), ``compare.html`` (self-contained: answers side by
side, scores colour-coded, the per-model means as an inline SVG chart) and the same table printed with rich."""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Comparison:
    """Prompts as rows, models as columns; ``scores[scorer][label][i]`` is prompt ``i``'s score (None: unscored)."""

    labels: list[str]
    prompts: list[list[dict]]
    replies: dict[str, list[str]]
    scores: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    title: str = "Model comparison"
    note: str = ""

    def means(self, scorer: str) -> dict[str, float | None]:
        from alignment.evaluation.scoring import mean

        return {label: mean(self.scores[scorer][label]) for label in self.labels}

    def range_of(self, scorer: str) -> tuple[float, float]:
        """The span colours are scaled to: [0, 1] for the oracle, the observed range for a reward model."""
        if scorer == "oracle":
            return 0.0, 1.0
        values = [v for per in self.scores[scorer].values() for v in per if v is not None]
        return (min(values), max(values)) if values else (0.0, 1.0)


def last_user_turn(messages: list[dict]) -> str:
    """What a reader needs in a row: the last user turn (earlier turns and the system prompt are in compare.jsonl)."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return str(users[-1] if users else messages[-1]["content"])


def _score_text(comp: Comparison, label: str, i: int) -> list[str]:
    return [f"{name} {per[label][i]:.2f}" for name, per in comp.scores.items() if per[label][i] is not None]


# -- markdown -----------------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or " "


def markdown(comp: Comparison) -> str:
    """A markdown table: one row per prompt, one column per model, each answer with its scores; the means last."""
    lines = [f"# {comp.title}", ""]
    if comp.note:
        lines += [comp.note, ""]
    lines += ["| prompt | " + " | ".join(comp.labels) + " |", "|---" * (len(comp.labels) + 1) + "|"]
    for i, prompt in enumerate(comp.prompts):
        cells = [_md_cell(last_user_turn(prompt))]
        for label in comp.labels:
            scores = _score_text(comp, label, i)
            cells.append(_md_cell(comp.replies[label][i]) + (f"<br>*{', '.join(scores)}*" if scores else ""))
        lines.append("| " + " | ".join(cells) + " |")
    for scorer in comp.scores:
        means = comp.means(scorer)
        cells = [f"**mean {scorer}**"] + [f"**{m:.3f}**" if m is not None else "-" for m in means.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- html ---------------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", "PingFang SC",
       "Microsoft YaHei", sans-serif; margin: 24px; color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
p.note { color: #59636e; margin: 0 0 16px; font-size: 13px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 14px; }
th, td { border: 1px solid #d1d9e0; padding: 8px; vertical-align: top; text-align: left; }
th { background: #f6f8fa; }
td.prompt { background: #f6f8fa; font-weight: 600; width: 18%; }
.reply { white-space: pre-wrap; overflow-wrap: anywhere; }
.scores { margin-top: 6px; }
.score { display: inline-block; border-radius: 10px; padding: 1px 8px; margin: 2px 4px 0 0; font-size: 12px;
         font-variant-numeric: tabular-nums; border: 1px solid rgba(0,0,0,.12); }
tfoot td { font-weight: 600; background: #f6f8fa; }
.chart { margin: 8px 0 20px; }
.chart text { font-family: inherit; font-size: 12px; fill: #1f2328; }
"""


def _colour(value: float, low: float, high: float) -> str:
    """Red (worst) through yellow to green (best) over [low, high]."""
    share = 0.5 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    return f"hsl({round(120 * share)}, 70%, 85%)"


def _badge(name: str, value: float | None, span: tuple[float, float]) -> str:
    if value is None:
        return ""
    style = f"background:{_colour(value, *span)}"
    return f'<span class="score" style="{style}" title="{html.escape(name)}">{html.escape(name)} {value:.2f}</span>'


def chart_svg(comp: Comparison, scorer: str) -> str:
    """Horizontal bars of each model's mean ``scorer`` score, as inline SVG (no script, no network)."""
    means = comp.means(scorer)
    low, high = comp.range_of(scorer)
    low = min(low, 0.0)
    width, bar_h, left, right = 520, 22, 120, 60
    span = width - left - right
    axis_y = 28 + bar_h * len(means)
    height = axis_y + 18
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>Mean {html.escape(scorer)} score per model</title>',
        f'<text x="0" y="14" font-weight="600">Mean {html.escape(scorer)} score per model</text>',
    ]
    for row, (label, value) in enumerate(means.items()):
        y = 24 + row * bar_h
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{left}" y="{y + 15}">no score</text>')
            continue
        share = 0.0 if high <= low else (value - low) / (high - low)
        length = max(1.0, share * span)
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{bar_h - 6}" rx="3" '
            f'fill="{_colour(value, *comp.range_of(scorer))}" stroke="#8c959f"/>'
        )
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 15}">{value:.3f}</text>')
    # The scale's ends, so that a bar reads as a value (a reward model's scale is its observed range, not [0, 1]).
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + span}" y2="{axis_y}" stroke="#8c959f"/>')
    parts.append(f'<text x="{left}" y="{axis_y + 14}" text-anchor="middle">{low:.2f}</text>')
    parts.append(f'<text x="{left + span}" y="{axis_y + 14}" text-anchor="middle">{high:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(comp: Comparison) -> str:
    """The whole page as one string: inline CSS and SVG, every text escaped, UTF-8 (Chinese renders as is)."""
    spans = {scorer: comp.range_of(scorer) for scorer in comp.scores}
    head = "".join(f"<th>{html.escape(label)}</th>" for label in comp.labels)
    rows = []
    for i, prompt in enumerate(comp.prompts):
        cells = [f'<td class="prompt">{html.escape(last_user_turn(prompt))}</td>']
        for label in comp.labels:
            badges = "".join(_badge(s, per[label][i], spans[s]) for s, per in comp.scores.items())
            reply = html.escape(comp.replies[label][i]) or "<em>(empty)</em>"
            cells.append(f'<td><div class="reply">{reply}</div><div class="scores">{badges}</div></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    foot = []
    for scorer in comp.scores:
        means = comp.means(scorer)
        cells = "".join(f"<td>{_badge(scorer, m, spans[scorer]) or '-'}</td>" for m in means.values())
        foot.append(f"<tr><td>mean {html.escape(scorer)}</td>{cells}</tr>")
    charts = "".join(chart_svg(comp, scorer) for scorer in comp.scores)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(comp.title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(comp.title)}</h1><p class="note">{html.escape(comp.note)}</p>{charts}'
        f'<table><thead><tr><th style="width:18%">prompt</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody><tfoot>{''.join(foot)}</tfoot></table></body></html>\n"
    )


def print_table(comp: Comparison, width: int = 160) -> None:
    """The comparison as a rich table on stdout (answers cut to a few lines)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=comp.title, show_lines=True)
    table.add_column("prompt", style="bold", max_width=28)
    for label in comp.labels:
        table.add_column(label, overflow="fold")
    for i, prompt in enumerate(comp.prompts):
        cells = [escape(last_user_turn(prompt))]
        for label in comp.labels:
            reply = comp.replies[label][i]
            reply = reply if len(reply) <= 200 else reply[:200] + "…"
            scores = _score_text(comp, label, i)
            cells.append(escape(reply) + (f"\n[dim]{', '.join(scores)}[/dim]" if scores else ""))
        table.add_row(*cells)
    for scorer in comp.scores:
        table.add_row(f"mean {scorer}", *[f"{m:.3f}" if m is not None else "-" for m in comp.means(scorer).values()])
    Console(width=width, soft_wrap=False).print(table)

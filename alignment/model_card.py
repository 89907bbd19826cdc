"""The model card a finished stage writes inside its saved model (``model/README.md``, and ``adapter/README.md``
beside a PEFT model): the base model as the user gave it, the stages the model went through, their data, the final
metrics and the command that trained it. It is what the Hub shows when the folder is published (``hub.push``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from alignment.lineage import read_lineage

# A Hub repo id (``user/name`` or ``name``), as opposed to a local path: only those go into the card's metadata.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TINY = "the tiny base model built from alignment's embedded data (it has no Hub id)"


def is_hub_id(value: str | None) -> bool:
    """Whether ``value`` names a Hub repo rather than a path on this machine."""
    return bool(value) and bool(_HUB_ID.match(value)) and not Path(value).expanduser().exists() and ".." not in value


def render_card(
    lineage: dict[str, Any], metrics: dict[str, Any], hub_id: str | None = None, adapter: bool = False
) -> str:
    """The card's text: Hub metadata (base model, library, tags, datasets) and a body a reader can act on."""
    from huggingface_hub import ModelCardData

    base = lineage.get("base_model")
    stages = lineage["stages"]
    data = sorted({s["data"] for s in stages if "/" in s["data"] and is_hub_id(s["data"])})  # datasets: user/name
    card_data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        library_name="peft" if adapter else "transformers",
        tags=["alignment", "trl", *dict.fromkeys(s["stage"] for s in stages)],
        datasets=data or None,
        pipeline_tag="text-classification" if stages[-1]["stage"] == "rm" else "text-generation",
    )
    chain = " → ".join(s["stage"] for s in stages)
    what = "A PEFT adapter" if adapter else "A model"
    lines = [
        f"# {hub_id or stages[-1]['name']}",
        "",
        f"{what} trained with alignment (on TRL) from **{base or _TINY}**, through {chain}.",
        "",
        "| step | stage | data | started from |",
        "| --- | --- | --- | --- |",
    ]
    start = base or "tiny base model"
    for step in stages:
        lines.append(f"| {step['name']} | {step['stage']} | {step['data']} | {start} |")
        start = f"step {step['name']}"
    if adapter:
        lines += ["", f"The adapter's base model: `{lineage.get('start_model') or lineage.get('start_model_path')}`."]
    lines += ["", f"## Metrics of the last step ({stages[-1]['name']})", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_number(value)} |" for key, value in sorted(metrics.items())]
    lines += ["", "## Command", "", "```bash", stages[-1].get("command", ""), "```", "", "## Use", "", "```python"]
    where = hub_id or "<this folder>"
    lines.append("from transformers import AutoTokenizer")
    if adapter:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{where}")',
        ]
    elif stages[-1]["stage"] == "rm":
        lines += [
            "from transformers import AutoModelForSequenceClassification",
            f'model = AutoModelForSequenceClassification.from_pretrained("{where}")  # one score per sequence',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
        ]
    lines += [f'tokenizer = AutoTokenizer.from_pretrained("{where}")', "```"]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value)


def write_cards(stage_dir: Path, metrics: dict[str, Any], hub_id: str | None = None) -> list[Path]:
    """Write ``README.md`` into the stage's saved model (and adapter) dirs that carry a lineage, unless it already
    reads so (publishing a finished model rewrites it only when the repo id is new); returns the cards."""
    from alignment.atomic import write_atomic

    written = []
    for name in ("model", "adapter"):
        folder = stage_dir / name
        lineage = read_lineage(folder)
        if not lineage.get("stages"):
            continue
        adapter = (folder / "adapter_config.json").exists()
        card = folder / "README.md"
        text = render_card(lineage, metrics, hub_id, adapter=adapter)
        if not card.exists() or card.read_text(encoding="utf-8") != text:
            write_atomic(card, text)
        written.append(card)
    return written

"""``python -m alignment.trainer STAGE [WORD ...]``: every ``trainer.*`` option of a stage, with its help and default.

Hydra's ``--help`` prints the composed config without any help text, so this lists the options instead: TRL's own
help sentence and default for a TRL stage (read from the cached schema, so TRL is not imported), the stage's own
value where ``conf/stage/<stage>.yaml`` sets another, and our settings' help for ppo, generate and label. Words
after the stage keep only the options whose name contains one of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from typing import Any

from omegaconf import OmegaConf

from alignment.trainer.schema import FieldSpec, field_default, field_help, own_settings, trainer_specs

# Keys the run sets from elsewhere in the config (trainer/schema.py leaves them out of every trainer schema).
RUN_MANAGED = (
    "output_dir (from output_dir), seed (seed), max_length (data.max_length), report_to and run_name (tracking.*), "
    "push_to_hub, hub_model_id and hub_token (hub.*)"
)


def _dataclass_specs(cls: type) -> list[FieldSpec]:
    specs = []
    for f in dataclasses.fields(cls):
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        specs.append((f.name, type_name, field_default(f), field_help(f)))
    return specs


def stage_values(stage: str) -> dict[str, Any]:
    """``trainer.*`` of ``stage`` as the run composes it: the schema's defaults, then the stage's YAML (with the shared
    files its defaults list pulls in)."""
    from alignment.command_line import compose
    from alignment.config import register_configs

    register_configs()
    return OmegaConf.to_container(compose([f"stage={stage}"]).trainer, resolve=False)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def describe(stage: str, words: list[str] | None = None) -> str:
    """The option list ``python -m alignment.trainer STAGE`` prints."""
    trl = trainer_specs()
    own = own_settings()
    if stage in trl:
        cls_name, specs = trl[stage]
        source, default_label = f"TRL's {cls_name}", "TRL default"
    elif stage in own:
        cls_name, specs = own[stage].__name__, _dataclass_specs(own[stage])
        source, default_label = f"{cls_name} (alignment)", "default"
    else:
        known = ", ".join(sorted([*trl, *own]))
        raise SystemExit(f"error: stage {stage!r} has no trainer.* options; stages with options: {known}")
    values = stage_values(stage)
    lines = [
        f"trainer.* options of stage={stage} ({source}); set one with "
        f"`python -m alignment stage={stage} trainer.<name>=<value>`.",
        f"Each line: name (type, {default_label}; and the value conf/stage/{stage}.yaml sets, where it sets one).",
        "",
    ]
    shown = 0
    for name, type_name, default, help_text in specs:
        if words and not any(w.lower() in name.lower() for w in words):
            continue
        head = f"{name} ({type_name}, {default_label} {_show(default)}"
        if name in values and values[name] != default:
            head += f"; stage={stage} sets {_show(values[name])}"
        lines.append(head + ")")
        text = help_text or "(no help text)"
        lines.extend(textwrap.wrap(text, width=116, initial_indent="    ", subsequent_indent="    "))
        shown += 1
    if words and not shown:
        lines.append(f"no option of stage={stage} has a name containing: {', '.join(words)}")
    if stage in trl:
        note = f"Set by the run, not under trainer.*: {RUN_MANAGED}."
        lines += ["", *textwrap.wrap(note, width=120)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignment.trainer", description=__doc__.splitlines()[0])
    parser.add_argument("stage", help="sft, rm, dpo, kto, orpo, grpo, rloo, ppo, generate or label")
    parser.add_argument("words", nargs="*", help="only options whose name contains one of these")
    args = parser.parse_args(argv)
    print(describe(args.stage, args.words))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The command line, checked the way a run will compose it, before any heavy import: a misspelt key, a bad value or
an unknown choice is one line naming the key, with the closest real key or the choices (Hydra's own hint,
``+key=value``, would add the misspelt key).
"""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from alignment.errors import AlignmentError
from alignment.paths import CONF_DIR

# Command-line flags that make Hydra print something instead of running: left to Hydra as they are.
_RUN_FLAGS = ("-m", "--multirun")


def check_command_line(argv: list[str]) -> None:
    """Compose the config the way a run will and turn a composition error into one actionable line.

    Sweep values (``a=1,2``) are checked with their first value; Hydra's own settings (``hydra.*``) are left to it.
    """
    if any(arg.startswith("-") and arg not in _RUN_FLAGS for arg in argv):
        return  # --help, --cfg, --info, ...: Hydra's business
    overrides = _first_values([a for a in argv if a not in _RUN_FLAGS])
    if overrides is None:
        return
    cfg = compose(overrides)
    _check_added_keys(cfg, overrides)


def _first_values(argv: list[str]) -> list[str] | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except Exception as err:  # Hydra's grammar errors: it reports them better than we could
        return None if "hydra" in str(err) else _raise_syntax(err)
    out = []
    for o in parsed:
        key = o.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if o.is_sweep_override():
            if o.is_interval_sweep():
                continue
            first = next(iter(o.sweep_string_iterator()), None)
            if first is None:
                continue
            out.append(f"{key}={first}")
        else:
            out.append(o.input_line)
    return out


def _raise_syntax(err: Exception) -> None:
    raise AlignmentError(f"cannot parse the command line: {str(err).splitlines()[0]}") from err


def compose(overrides: list[str]) -> DictConfig:
    """The config ``python -m alignment <overrides>`` runs with (configs registered first), or one actionable
    AlignmentError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=overrides)
        except MissingConfigException as err:
            raise _unknown_choice(err) from err
        except Exception as err:
            cause = err.__cause__ or err
            key = getattr(cause, "full_key", None)
            if key is None:
                raise AlignmentError(f"invalid config: {first_line(err)}") from err
            if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
                rest = [o for o in overrides if _key_of(o) != key]
                raise _unknown_key(key, _keys_beside(key, rest)) from err
            value = next((o.split("=", 1)[1] for o in overrides if _key_of(o) == key), None)
            raise AlignmentError(f"{key}={value}: {first_line(cause)}") from err


def _keys_beside(full_key: str, overrides: list[str]) -> list[str]:
    """The real keys next to ``full_key`` (same parent), composed without the bad override."""
    from hydra import compose

    parent = full_key.rpartition(".")[0]
    try:
        cfg = compose(config_name="config", overrides=overrides)
    except Exception:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return []
    return [f"{parent}.{k}" if parent else str(k) for k in node.keys()]


def _unknown_key(key: str, known: list[str]) -> AlignmentError:
    if key.startswith("trainer.") and key.split(".", 1)[1] in ("push_to_hub", "hub_model_id", "hub_token"):
        return AlignmentError(
            f"unknown config key '{key}': publishing is hub.push=true hub.model_id=<user>/<name>, which uploads the "
            "finished model/ with its card (token from HF_TOKEN or `hf auth login`; docs/publishing.md)"
        )
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return AlignmentError(
        f"unknown config key '{key}': {hint}(`python -m alignment --cfg job` prints every key of the config; "
        "keys under trainer. are the stage's TRL settings)"
    )


def _unknown_choice(err) -> AlignmentError:
    missing = getattr(err, "missing_cfg_file", None) or ""
    group, _, name = str(missing).rpartition("/")
    options = sorted(getattr(err, "options", None) or _group_options(group))
    if group and options:
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
        hint = f" (did you mean {group}={close[0]}?)" if close else ""
        return AlignmentError(f"{group}={name}: no such {group}{hint}; choose one of: {', '.join(options)}")
    return AlignmentError(f"invalid config: {first_line(err)}")


def _group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return [p.stem for p in folder.glob("*.yaml")] if group and folder.is_dir() else []


def _check_added_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """``+trainer.learnig_rate=...`` composes (``trainer`` is open for the stage's schema): refuse keys the stage's
    TRL settings do not have, as a plain typo is refused."""
    from hydra.core.config_store import ConfigStore

    stage = cfg.get("stage")
    try:
        schema = ConfigStore.instance().load(f"schema/trainer/{stage}.yaml").node
    except Exception:
        return
    known = set(schema.keys())
    for o in overrides:
        key = _key_of(o)
        if key.startswith("trainer.") and key.count(".") == 1 and key.split(".")[1] not in known:
            raise _unknown_key(key, [f"trainer.{k}" for k in known])


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

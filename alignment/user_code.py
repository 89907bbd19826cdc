"""Functions the user names in a config, ``module:function`` or ``path/to/file.py:function``: ``data.converter``
and the function reward sources (``reward.sources.N.name``/``path``) load them here, so both read the same spellings
and fail the same way, each error naming the config key that holds the bad value."""

from __future__ import annotations

# importlib, not hydra.utils.get_method: get_method cannot load a path/to/file.py, and its errors cannot name our key.
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from alignment.errors import AlignmentError


def load_function(spec: str, key: str, example: str) -> Callable:
    """The function ``spec`` names: ``package.module:function`` (imported from ``sys.path``) or
    ``path/to/file.py:function`` (the file run as a module of its own, not added to ``sys.modules``); the part after
    the colon may be dotted (``module:Class.method``). Every failure is an ``AlignmentError`` that starts with
    ``key=spec`` and says what to fix; ``example`` is a good value of ``key`` shown when the spelling is wrong."""
    spec = str(spec)
    where, sep, name = spec.rpartition(":")
    from_file = where.endswith(".py") or "/" in where
    if not sep or not where or not all(name.split(".")) or (not from_file and not all(where.split("."))):
        raise AlignmentError(
            f"{key}={spec!r}: must be module:function or path/to/file.py:function, e.g. {key}={example}"
        )
    try:
        module = _module_from_file(where) if from_file else importlib.import_module(where)
    except AlignmentError as e:
        raise AlignmentError(f"{key}={spec!r}: cannot import '{where}': {e}") from None
    except Exception as e:  # a missing module, or the user's module failing at import
        hint = (
            "; is it on PYTHONPATH (or give path/to/file.py:function)?" if isinstance(e, ModuleNotFoundError) else ""
        )
        raise AlignmentError(f"{key}={spec!r}: cannot import '{where}' ({type(e).__name__}: {e}){hint}") from e
    function = module
    for part in name.split("."):
        function = getattr(function, part, _MISSING)
        if function is _MISSING:
            raise AlignmentError(f"{key}={spec!r}: cannot import it: '{where}' has no function '{name}'")
    if not callable(function):
        raise AlignmentError(
            f"{key}={spec!r}: '{where}' has no function '{name}' ({name} is not callable: {type(function).__name__})"
        )
    return function


_MISSING = object()


def _module_from_file(where: str):
    path = Path(where).expanduser()
    if not path.is_file():
        raise AlignmentError(f"no file {path} (resolved to {path.absolute()})")
    module_spec = importlib.util.spec_from_file_location(f"alignment_user_code_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise AlignmentError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module

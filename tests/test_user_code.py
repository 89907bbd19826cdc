"""One loader for the functions a config names: data.converter and function reward sources read the same spellings
and fail the same way, each naming its own key."""

from __future__ import annotations

import re
import sys

import pytest

from alignment.data.formats.custom import load_converter
from alignment.errors import AlignmentError
from alignment.rewards import build_reward_fn
from alignment.user_code import load_function

MODULE = """
def double(x):
    return 2 * x

class Scale:
    @staticmethod
    def triple(x):
        return 3 * x

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    path = tmp_path / "h9_user_funcs.py"
    path.write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_module_file_and_dotted_attribute_paths_load_the_same_function(user_file):
    assert load_function("h9_user_funcs:double", "k", "m:f")(4) == 8
    assert load_function(f"{user_file}:double", "k", "m:f")(4) == 8
    assert load_function("h9_user_funcs:Scale.triple", "k", "m:f")(4) == 12
    # A file is run as a module of its own: loading it leaves sys.modules as it was.
    assert not any(name.startswith("alignment_user_code_") for name in sys.modules)


def test_a_module_failing_at_import_names_the_error(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no config here')\n", encoding="utf-8")
    with pytest.raises(AlignmentError, match=r"^k='.*broken.py:f': cannot import .*RuntimeError: no config here"):
        load_function(f"{tmp_path / 'broken.py'}:f", "k", "m:f")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("h9_user_funcs", r"must be module:function or path/to/file.py:function, e.g. KEY=ex:ample"),
        ("h9_user_funcs:", "must be module:function"),
        ("h9_user_funcs:Scale..triple", "must be module:function"),
        (":double", "must be module:function"),
        ("h9_user_funcs:nope", "cannot import it: 'h9_user_funcs' has no function 'nope'"),
        (
            "h9_user_funcs:NOT_CALLABLE",
            "'h9_user_funcs' has no function 'NOT_CALLABLE' \\(NOT_CALLABLE is not callable: int\\)",
        ),
        ("no_such_module_h9:f", r"cannot import 'no_such_module_h9' \(ModuleNotFoundError: .*PYTHONPATH"),
        ("nowhere/h9.py:f", "cannot import 'nowhere/h9.py': no file nowhere/h9.py"),
    ],
)
def test_each_failure_starts_with_the_key_and_says_what_is_wrong(user_file, spec, message):
    with pytest.raises(AlignmentError, match=f"^{re.escape(f'KEY={spec!r}: ')}{message}"):
        load_function(spec, "KEY", "ex:ample")


def test_both_callers_name_their_own_key(user_file):
    assert load_converter("h9_user_funcs:double")(5) == 10
    with pytest.raises(AlignmentError, match=r"^data\.converter='h9_user_funcs:NOT_CALLABLE': .*not callable"):
        load_converter("h9_user_funcs:NOT_CALLABLE")
    with pytest.raises(AlignmentError, match=r"^reward\.sources\.1\.path='h9_user_funcs:nope': .*no function 'nope'"):
        build_reward_fn([{"type": "oracle"}, {"type": "function", "path": "h9_user_funcs:nope"}])
    with pytest.raises(AlignmentError, match=r"e\.g\. data\.converter=my_rows:to_messages"):
        load_converter("h9_user_funcs")
    with pytest.raises(AlignmentError, match=r"e\.g\. reward\.sources\.0\.name=my_rewards:length"):
        build_reward_fn({"type": "function", "name": "h9_user_funcs"})

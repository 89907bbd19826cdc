"""Loading files, split directories and Hub ids, with row-precise errors and counted skips."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignment.data.loading import MissingSplitError, load_dataset, load_dataset_with_report
from alignment.errors import AlignmentError

SAMPLES = Path(__file__).parent / "samples"
GOOD = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}]}


def _write_jsonl(path: Path, lines: list) -> Path:
    """Write rows (dicts) or raw strings, one per line."""
    text = "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_jsonl_sample_into_dataset() -> None:
    ds = load_dataset(SAMPLES / "messages.jsonl")
    assert len(ds) == 2
    assert ds.column_names == ["messages", "id", "task"]
    assert ds[1]["messages"][0] == {"role": "user", "content": "把“早上好”翻译成英文。"}


def test_json_array_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    as_lines = _write_jsonl(tmp_path / "lines.json", [GOOD, GOOD])
    assert len(load_dataset(as_lines)) == 2
    ds = load_dataset(SAMPLES / "sharegpt.json")
    assert ds[0]["messages"][-1]["content"] == "根据我的计算，你今天34岁了。"


def test_parquet_file(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (SAMPLES / "ultrafeedback.jsonl").read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prefs.parquet")
    ds = load_dataset(tmp_path / "prefs.parquet", kind="preference")
    assert ds[1]["prompt"] == [{"role": "user", "content": "解释一下什么是递归。"}]
    assert ds[1]["rejected"] == [{"role": "assistant", "content": "递归就是循环。"}]


def test_directory_with_train_and_test_splits(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, GOOD])
    _write_jsonl(tmp_path / "test.jsonl", [{**GOOD, "oracle": "x"}])
    assert len(load_dataset(tmp_path, split="train")) == 3
    test = load_dataset(str(tmp_path), split="test")
    assert len(test) == 1 and test[0]["oracle"] == "x"


def test_missing_split_lists_existing_splits(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "train.jsonl", [GOOD])
    _write_jsonl(tmp_path / "validation.jsonl", [GOOD])
    with pytest.raises(MissingSplitError, match=r"no 'test' split.*splits found: \['train', 'validation'\]") as err:
        load_dataset(tmp_path, split="test")
    assert err.value.available == ["train", "validation"]


def test_single_file_is_the_train_split_or_the_split_it_is_named_after(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "test.jsonl", [GOOD])
    assert len(load_dataset(path, split="test")) == 1
    assert len(load_dataset(path, split="train")) == 1
    with pytest.raises(MissingSplitError, match="single file holds only the 'train' split"):
        load_dataset(path, split="validation")


def test_missing_local_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AlignmentError, match=r"data file not found: .*nope\.jsonl"):
        load_dataset(tmp_path / "nope.jsonl")


def test_hub_id_unreachable_offline_says_so() -> None:
    # A subprocess so HF_HUB_OFFLINE is read fresh by huggingface_hub; it never touches the network.
    code = (
        "from alignment.data.loading import load_dataset\n"
        "from alignment.errors import AlignmentError\n"
        "try:\n    load_dataset('tatsu-lab/alpaca')\n"
        "except AlignmentError as e:\n    print('ALIGNMENT_ERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ALIGNMENT_ERROR could not reach the Hub for 'tatsu-lab/alpaca'" in result.stdout, result.stderr[-2000:]
    assert "use a local" in result.stdout.lower()


def test_hub_missing_split_lists_the_hub_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_load(name: str, split: str) -> None:  # what datasets raises for a split the Hub dataset lacks
        raise ValueError(f"Unknown split \"{split}\". Should be one of ['train_prefs', 'test_prefs'].")

    import datasets  # loading imports it where it reads the Hub, so the module's attribute is what it calls

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with pytest.raises(MissingSplitError, match="has no split 'test'") as err:
        load_dataset("HuggingFaceH4/ultrafeedback_binarized", split="test")
    assert err.value.available == ["train_prefs", "test_prefs"]


def test_windows_line_endings_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "win.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD, ensure_ascii=False).encode("utf-8") + b"\r\n\r\n")
    assert load_dataset(path)[0] == GOOD


def test_empty_file_and_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(AlignmentError, match="empty"):
        load_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "data.tsv").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(
        AlignmentError, match=r"unsupported file type '.tsv'; use one of .jsonl, .json, .parquet, .csv"
    ):
        load_dataset(tmp_path / "data.tsv")


BAD_LINES = [
    ('{"messages": [{"role": "user", "content": "hi"}', "malformed JSON"),
    (
        {"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "unknown role 'narrator'",
    ),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "has no 'content'"),
    ({"messages": []}, "conversation is empty"),
    ({"messages": [{"role": "user", "content": "只有问题"}]}, "no assistant turn"),
    ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "y"}]}, "must be a string"),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_LINES)
def test_each_bad_row_kind_raises_with_file_and_line(tmp_path: Path, bad: object, expected: str) -> None:
    path = _write_jsonl(tmp_path / "sft.jsonl", [GOOD, "", GOOD, bad, GOOD])  # blank line 2 still counts
    with pytest.raises(AlignmentError) as err:
        load_dataset(path)
    message = str(err.value)
    assert f"{path}, line 4: " in message
    assert expected in message
    assert "on_error=skip" in message


def test_preference_bad_rows_name_their_line(tmp_path: Path) -> None:
    good = {"prompt": "问", "chosen": "好答案", "rejected": "坏答案"}
    path = _write_jsonl(tmp_path / "p.jsonl", [good, {**good, "rejected": "好答案"}])
    with pytest.raises(AlignmentError, match=r"p\.jsonl, line 2: chosen and rejected are identical"):
        load_dataset(path, kind="preference")
    ending = {
        "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "chosen": [],
        "rejected": [],
    }
    path = _write_jsonl(tmp_path / "conv.jsonl", [ending])
    with pytest.raises(AlignmentError, match=r"conv\.jsonl, line 1: the prompt must end with a user turn"):
        load_dataset(path, kind="prompt", format="prompt_only")


def test_json_array_and_parquet_errors_name_the_row(tmp_path: Path) -> None:
    rows = [GOOD, {"messages": [{"role": "user", "content": "q"}]}]
    (tmp_path / "arr.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(AlignmentError, match=r"arr\.json, row 2 of the JSON array: .*no assistant turn"):
        load_dataset(tmp_path / "arr.json")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    with pytest.raises(AlignmentError, match=r"t\.parquet, row 2: .*no assistant turn"):
        load_dataset(tmp_path / "t.parquet")


def test_broken_json_array_reports_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('[\n  {"messages": []},\n  {"messages": [}\n]', encoding="utf-8")
    with pytest.raises(AlignmentError, match=r"broken\.json: malformed JSON array at line 3"):
        load_dataset(tmp_path / "broken.json", on_error="skip")


def test_skip_drops_every_bad_row_and_counts_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [GOOD, *[bad for bad, _ in BAD_LINES], GOOD, b"\xff\xfe not utf-8"]
    path = tmp_path / "mixed.jsonl"
    with open(path, "wb") as f:
        for x in lines:
            f.write(x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode("utf-8"))
            f.write(b"\n")
    with caplog.at_level(logging.WARNING, logger="alignment.data"):
        ds, report = load_dataset_with_report(path, on_error="skip")
    assert len(ds) == 2 and all(row == GOOD for row in ds)
    assert report["rows_read"] == 9 and report["rows_out"] == 2 and report["skipped"] == 7
    assert report["reasons"] == {
        "malformed_json": 2,
        "unknown_role": 1,
        "missing_field": 1,
        "empty_conversation": 1,
        "no_assistant_turn": 1,
        "wrong_type": 1,
    }
    assert report["first_errors"][0].startswith(f"{path}, line 2: malformed JSON")
    assert "Skipped 7 of 9 rows" in caplog.text and "2 malformed_json" in caplog.text


def test_skip_with_nothing_usable_raises(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"messages": []}])
    with pytest.raises(AlignmentError, match=r"no usable rows \(1 skipped"):
        load_dataset(path, on_error="skip")


def test_extra_column_with_mixed_types_is_a_row_error(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ids.jsonl", [{**GOOD, "id": 1}, {**GOOD, "id": 2.5}, {**GOOD, "id": "three"}])
    with pytest.raises(AlignmentError, match=r"line 3: column 'id' is a str here but a number at line 1"):
        load_dataset(path)
    ds = load_dataset(path, on_error="skip")
    assert ds["id"] == [1.0, 2.5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_error": "ignore"}, "unknown data.on_error 'ignore'"),
        ({"format": "csv"}, "unknown data.format 'csv'; use auto or one of: messages, sharegpt"),
        ({"kind": "rlhf"}, "unknown data kind 'rlhf'"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(AlignmentError, match=match):
        load_dataset(SAMPLES / "messages.jsonl", **kwargs)


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    # A prompt/completion row named as kto is missing its label: the named format is used, not detection.
    path = _write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(AlignmentError, match=r"line 1: missing field 'label'"):
        load_dataset(path, kind="kto", format="kto")


def test_kto_from_pairs_is_balanced_and_seed_shuffles(tmp_path: Path) -> None:
    pairs = [{"prompt": f"问题{i}", "chosen": f"好{i}", "rejected": f"坏{i}", "id": i} for i in range(20)]
    path = _write_jsonl(tmp_path / "pairs.jsonl", pairs)
    first = load_dataset(path, kind="kto", seed=0)
    again = load_dataset(path, kind="kto", seed=0)
    other = load_dataset(path, kind="kto", seed=1)
    assert len(first) == 40 and sum(first["label"]) == 20
    assert first["id"] == again["id"] and first["id"] != other["id"]
    by_id = {(r["id"], r["label"]): r["completion"][0]["content"] for r in first}
    assert by_id[(7, True)] == "好7" and by_id[(7, False)] == "坏7"


def test_prompt_kind_from_embedded_style_directory(tmp_path: Path) -> None:
    row = {"prompt": [{"role": "user", "content": "Compute 2 + 2."}], "task": "arithmetic", "oracle": "4"}
    _write_jsonl(tmp_path / "train.jsonl", [row])
    ds = load_dataset(tmp_path, kind="prompt")
    assert ds[0] == row


def test_csv_file_loads_typed_with_margin() -> None:
    ds, report = load_dataset_with_report(SAMPLES / "preference.csv", kind="preference")
    assert report["format"] == "preference_strings" and len(ds) == 2
    assert ds[0]["prompt"] == [{"role": "user", "content": "Name a fruit, please."}]  # the quoted comma stays
    assert ds[1]["chosen"] == [{"role": "assistant", "content": "长城是中国古代修建的防御工程，绵延上万里。"}]
    assert ds["margin"] == [6.5, 5.0]
    assert ds["source"] == ["synthetic", None]  # an empty cell is missing, not ''


def test_saved_dataset_and_dataset_dict_dirs_load_with_their_splits(tmp_path: Path) -> None:
    import datasets

    rows = [GOOD, {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert load_dataset(tmp_path / "one")[1]["messages"][1]["content"] == "4"
    with pytest.raises(MissingSplitError, match="holds only the 'train' split"):
        load_dataset(tmp_path / "one", split="test")

    pairs = [json.loads(line) for line in (SAMPLES / "pku_saferlhf.jsonl").read_text(encoding="utf-8").splitlines()]
    splits = {"train": datasets.Dataset.from_list(pairs), "validation": datasets.Dataset.from_list(pairs[1:])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dict"))
    train, report = load_dataset_with_report(tmp_path / "dict", kind="preference")
    assert report["format"] == "pku_saferlhf" and len(train) == 2
    held_out = load_dataset(tmp_path / "dict", kind="preference", split="validation")
    assert held_out[0]["rejected"] == [{"role": "assistant", "content": "连续一周不吃饭。"}]
    with pytest.raises(MissingSplitError, match=r"no 'test' split; splits: \['train', 'validation'\]") as err:
        load_dataset(tmp_path / "dict", split="test")
    assert err.value.available == ["train", "validation"]


def test_tool_call_rows_round_trip_through_a_dataset() -> None:
    ds = load_dataset(SAMPLES / "openai_tools.jsonl")
    call = ds[0]["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "北京"}'} and call["id"] == "call_1"
    assert ds[0]["messages"][3]["tool_call_id"] == "call_1"
    assert json.loads(ds[0]["tools"])[0]["function"]["parameters"]["required"] == ["city"]
    assert ds[2]["tools"] is None and ds[2]["messages"][1]["tool_calls"] is None


def test_column_mapping_renames_columns_before_detection(tmp_path: Path) -> None:
    rows = [{"question": "天空为什么是蓝的？", "good": "瑞利散射。", "bad": "因为海。", "id": 1}]
    path = _write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(AlignmentError, match=r"cannot tell the dataset format from its columns \['bad', 'good'"):
        load_dataset(path, kind="preference")
    ds = load_dataset(path, kind="preference", columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert ds[0] == {
        "prompt": [{"role": "user", "content": "天空为什么是蓝的？"}],
        "chosen": [{"role": "assistant", "content": "瑞利散射。"}],
        "rejected": [{"role": "assistant", "content": "因为海。"}],
        "id": 1,
    }
    with pytest.raises(AlignmentError, match=r"line 1: data.columns reads column\(s\) \['answer'\]"):
        load_dataset(path, kind="preference", columns={"prompt": "question", "chosen": "answer", "rejected": "bad"})


CONVERTER = """
def to_messages(row):
    if row["q"] == "skip me":
        return None
    if row["q"] == "boom":
        raise KeyError("a")
    return {"messages": [{"role": "user", "content": row["q"]}, {"role": "assistant", "content": row["a"]}]}
"""


def test_converter_from_a_file_maps_rows_and_may_leave_some_out(tmp_path: Path) -> None:
    (tmp_path / "conv.py").write_text(CONVERTER, encoding="utf-8")
    rows = [{"q": "你好", "a": "你好！"}, {"q": "skip me", "a": "x"}, {"q": "boom", "a": "y"}]
    path = _write_jsonl(tmp_path / "raw.jsonl", rows)
    spec = f"{tmp_path / 'conv.py'}:to_messages"
    with pytest.raises(AlignmentError, match=r"line 3: data.converter .*conv.py:to_messages failed: KeyError"):
        load_dataset(path, converter=spec)
    ds, report = load_dataset_with_report(path, converter=spec, on_error="skip")
    assert ds["messages"] == [[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]]
    assert report["left_out"] == {"converter": 1} and report["reasons"] == {"converter_error": 1}


def test_converter_from_a_module_and_bad_specs_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rows.py").write_text(CONVERTER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write_jsonl(tmp_path / "raw.jsonl", [{"q": "hi", "a": "hello"}])
    assert load_dataset(path, converter="my_rows:to_messages")[0]["messages"][1]["content"] == "hello"
    for spec, match in [
        ("my_rows", "must be module:function"),
        ("my_rows:nope", "'my_rows' has no function 'nope'"),
        ("no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("missing/dir/conv.py:f", "no file missing/dir/conv.py"),
    ]:
        with pytest.raises(AlignmentError, match=f"data.converter='{spec}'.*{match}"):
            load_dataset(path, converter=spec)


def test_ties_are_left_out_and_counted(tmp_path: Path) -> None:
    ds, report = load_dataset_with_report(SAMPLES / "chatbot_arena.jsonl", kind="preference")
    assert len(ds) == 1 and report["left_out"] == {"tie": 2, "multi_turn": 1} and report["skipped"] == 0
    kto, report = load_dataset_with_report(SAMPLES / "chatbot_arena.jsonl", kind="kto", ties="keep")
    assert len(kto) == 8 and sum(kto["label"]) == 4 and report["left_out"] == {}
    with pytest.raises(AlignmentError, match="unknown data.ties 'both'"):
        load_dataset(SAMPLES / "chatbot_arena.jsonl", ties="both")


def test_a_named_format_that_does_not_fit_names_the_columns_and_the_formats_that_do() -> None:
    with pytest.raises(AlignmentError) as err:
        load_dataset(SAMPLES / "shp.jsonl", kind="preference", format="pku_saferlhf")
    message = str(err.value)
    assert "shp.jsonl, line 1: missing field 'better_response_id' (columns here: ['c_root_id_A'" in message
    assert "these columns fit shp: set data.format=shp or auto" in message


def test_peek_rows_reads_csv_and_saved_datasets_cheaply_and_renames_columns(tmp_path: Path) -> None:
    import datasets

    from alignment.data.loading import peek_rows

    where, rows = peek_rows(SAMPLES / "preference.csv", n=1)
    assert where.endswith("preference.csv") and rows == [
        {
            "prompt": "Name a fruit, please.",
            "chosen": "An apple, for example.",
            "rejected": "A carrot.",
            "score_chosen": 9,
            "score_rejected": 2.5,
            "source": "synthetic",
        }
    ]
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"q": "问", "a": "答"}])}).save_to_disk(str(tmp_path))
    assert peek_rows(tmp_path, columns={"prompt": "q"}) == (str(tmp_path), [{"a": "答", "prompt": "问"}])
    assert peek_rows(tmp_path, split="test") is None  # the run reports the missing split

"""data.transforms: exact rows changed and dropped, seeded streams, parameter errors, the record file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from alignment.data.transforms import (
    RECORD_FILE,
    ROW_ID,
    Context,
    apply_transforms,
    transform_train_rows,
    validate_transforms,
)
from alignment.errors import AlignmentError


def msg(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def pairs(n: int, **extra_columns) -> Dataset:
    """``n`` distinct pairs: chosen ``c<i>``, rejected ``r<i>``, per-side scores and a margin."""
    rows = [
        {
            "prompt": msg("user", f"question {i}"),
            "chosen": msg("assistant", f"c{i}"),
            "rejected": msg("assistant", f"r{i}"),
            "score_chosen": float(i),
            "score_rejected": float(-i),
            "margin": 2.0 * i,
            **{k: v[i] for k, v in extra_columns.items()},
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def ids(ds: Dataset) -> list[int]:
    """Row ids of output rows, read back from the chosen text (c<i> or r<i>)."""
    return [int(row["chosen"][0]["content"][1:]) for row in ds]


# ---------------------------------------------------------------------------------------------------------------
# flip


def test_flip_rate_within_a_binomial_bound_and_exactly_the_recomputed_rows():
    n, p, seed = 20000, 0.2, 7
    out, [record] = apply_transforms(pairs(n), [{"name": "flip", "p": p}], Context(seed=seed))
    flipped = record["changed_ids"]
    # 5 standard deviations of Binomial(n, p): a wrong rate (or p applied twice) falls far outside.
    assert abs(len(flipped) - n * p) < 5 * math.sqrt(n * p * (1 - p))
    # The contract: transform i draws one uniform per row from default_rng([seed, i]) and flips where u < p.
    expected = np.flatnonzero(np.random.default_rng([seed, 0]).random(n) < p).tolist()
    assert flipped == expected
    assert record["rows_in"] == record["rows_out"] == n and record["dropped_ids"] == []
    flipped_set = set(flipped)
    for i, row in enumerate(out):
        if i in flipped_set:
            assert row["chosen"] == msg("assistant", f"r{i}") and row["rejected"] == msg("assistant", f"c{i}")
            assert (row["score_chosen"], row["score_rejected"], row["margin"]) == (-i, i, -2.0 * i)
        else:
            assert row["chosen"] == msg("assistant", f"c{i}") and row["margin"] == 2.0 * i
        assert row[ROW_ID] == i


def test_flip_is_reproducible_per_seed_and_each_position_has_its_own_stream():
    data = pairs(500)
    spec = [{"name": "flip", "p": 0.5}]
    a = apply_transforms(data, spec, Context(seed=1))[1][0]["changed_ids"]
    b = apply_transforms(data, spec, Context(seed=1))[1][0]["changed_ids"]
    c = apply_transforms(data, spec, Context(seed=2))[1][0]["changed_ids"]
    assert a == b and a != c
    # The same transform twice: the second draws from stream (seed, 1), not (seed, 0) again.
    two = apply_transforms(data, spec * 2, Context(seed=1))[1]
    assert two[0]["changed_ids"] == a
    expected_second = np.flatnonzero(np.random.default_rng([1, 1]).random(500) < 0.5).tolist()
    assert two[1]["changed_ids"] == expected_second != a


def test_flip_edge_probabilities():
    data = pairs(50)
    assert apply_transforms(data, [{"name": "flip", "p": 0.0}])[1][0]["changed"] == 0
    out, [rec] = apply_transforms(data, [{"name": "flip", "p": 1.0}])
    assert rec["changed_ids"] == list(range(50)) and [r["rejected"][0]["content"] for r in out][:2] == ["c0", "c1"]


# ---------------------------------------------------------------------------------------------------------------
# subsample


def test_subsample_by_rows_and_by_fraction():
    data = pairs(1000)
    out, [rec] = apply_transforms(data, [{"name": "subsample", "n": 123}], Context(seed=3))
    assert len(out) == 123 == rec["rows_out"] and rec["dropped"] == 877
    kept = ids(out)
    assert kept == sorted(kept)  # order preserved
    assert sorted(kept + rec["dropped_ids"]) == list(range(1000))
    expected = sorted(np.random.default_rng([3, 0]).choice(1000, size=123, replace=False).tolist())
    assert kept == expected
    out, [rec] = apply_transforms(data, [{"name": "subsample", "fraction": 0.25}], Context(seed=3))
    assert len(out) == 250 and rec["dropped"] == 750
    with pytest.raises(AlignmentError, match=r"data\.transforms\[0\] \(subsample\): n=2000 but only 1000 rows"):
        apply_transforms(data, [{"name": "subsample", "n": 2000}])


# ---------------------------------------------------------------------------------------------------------------
# margin_filter


def test_margin_filter_from_score_columns_and_a_margin_column():
    # score_chosen - score_rejected = 2i; the margin column is set apart so the two sources differ.
    data = pairs(10, margin_override=[5, -1, 3, 0, 9, 2, -4, 1, 7, 6])
    data = data.remove_columns("margin").rename_column("margin_override", "margin")
    out, [rec] = apply_transforms(data, [{"name": "margin_filter", "source": "column", "threshold": 2.5}])
    assert ids(out) == [0, 2, 4, 8, 9]  # margin column used when present: 5, 3, 9, 7, 6 > 2.5
    assert rec["dropped_ids"] == [1, 3, 5, 6, 7]
    no_margin = data.remove_columns("margin")
    out, _ = apply_transforms(no_margin, [{"name": "margin_filter", "source": "column", "threshold": 9}])
    assert ids(out) == [5, 6, 7, 8, 9]  # 2i > 9
    spec = {"name": "margin_filter", "source": "column", "column": "margin", "top_fraction": 0.3}
    out, _ = apply_transforms(data, [spec])
    assert ids(out) == [4, 8, 9]  # the three largest: 9, 7, 6
    with pytest.raises(AlignmentError, match=r"column 'nope' is not in the data"):
        apply_transforms(data, [{**spec, "column": "nope"}])
    gaps = data.map(lambda row, i: {"margin": None if i in (3, 7) else row["margin"]}, with_indices=True)
    with pytest.raises(AlignmentError, match=r"column 'margin' has no value in 2 of 10 rows \(first ids: \[3, 7\]\)"):
        apply_transforms(gaps, [spec])


def test_margin_filter_from_the_embedded_oracle():
    arithmetic = json.dumps({"task": "arithmetic", "answer": 12})
    capital = json.dumps({"task": "capital", "country": "Vietnam"})
    rows = [  # (oracle, chosen, rejected) -> margin
        (arithmetic, "7 + 5 = 12", "7 + 5 = 13"),  # +1
        (arithmetic, "= 13", "= 12"),  # -1: mislabelled
        (capital, "It is Hanoi.", "It is Hanoi, of course."),  # 0: a tie
        (capital, "It is Hanoi.", "It is Lisbon."),  # +1
    ]
    data = Dataset.from_list(
        [
            {
                "prompt": msg("user", f"q{i}"),
                "chosen": msg("assistant", c),
                "rejected": msg("assistant", r),
                "oracle": o,
            }
            for i, (o, c, r) in enumerate(rows)
        ]
    )
    _, [rec] = apply_transforms(data, [{"name": "margin_filter", "source": "oracle", "threshold": 0}])
    assert rec["dropped_ids"] == [1, 2] and rec["rows_out"] == 2
    _, [rec] = apply_transforms(data, [{"name": "margin_filter", "source": "oracle", "threshold": -0.5}])
    assert rec["dropped_ids"] == [1]
    no_oracle = data.remove_columns("oracle")
    with pytest.raises(AlignmentError, match=r"data\.transforms\[0\] \(margin_filter\): source: oracle needs"):
        apply_transforms(no_oracle, [{"name": "margin_filter", "source": "oracle", "threshold": 0}])


# ---------------------------------------------------------------------------------------------------------------
# length_bias, dedupe, decontaminate, mix


def test_length_bias_makes_the_longer_reply_chosen_with_probability_q():
    rows = [
        {"prompt": msg("user", f"q{i}"), "chosen": msg("assistant", "x" * a), "rejected": msg("assistant", "y" * b)}
        for i, (a, b) in enumerate([(1, 5), (5, 1), (3, 3), (2, 9)] * 50)
    ]
    data = Dataset.from_list(rows)
    out, [rec] = apply_transforms(data, [{"name": "length_bias", "q": 1.0}])
    assert rec["changed_ids"] == [i for i in range(200) if i % 4 in (0, 3)]
    assert all(len(r["chosen"][0]["content"]) >= len(r["rejected"][0]["content"]) for r in out)
    _, [rec] = apply_transforms(data, [{"name": "length_bias", "q": 0.5}], Context(seed=11))
    draws = np.random.default_rng([11, 0]).random(200)
    assert rec["changed_ids"] == [i for i in range(200) if i % 4 in (0, 3) and draws[i] < 0.5]


def test_dedupe_keeps_the_first_of_identical_pairs():
    base = pairs(4).to_list()
    same_pair_other_score = {**base[1], "score_chosen": 99.0}
    swapped = {**base[2], "chosen": base[2]["rejected"], "rejected": base[2]["chosen"]}  # not a repeat
    data = Dataset.from_list([*base, base[0], same_pair_other_score, swapped, base[0]])
    out, [rec] = apply_transforms(data, [{"name": "dedupe"}])
    assert rec["dropped_ids"] == [4, 5, 7] and len(out) == 5


def test_decontaminate_against_held_out_oracle_prompts_and_a_file(tmp_path):
    train = pairs(6)
    held = Dataset.from_list([{**train[1], "prompt": msg("user", "  QUESTION   1 ")}])  # case and spaces folded
    oracle = [msg("user", "question 3")]
    extra = tmp_path / "eval.jsonl"
    extra.write_text(json.dumps({"prompt": "question 5"}) + "\n", encoding="utf-8")
    out, [rec] = apply_transforms(
        train, [{"name": "decontaminate", "path": str(extra)}], Context(held_out=held, oracle_prompts=oracle)
    )
    assert rec["dropped_ids"] == [1, 3, 5] and ids(out) == [0, 2, 4]
    # A system turn makes another prompt unless only the last user turn is compared.
    with_system = train.map(lambda r: {"prompt": msg("system", "be brief") + r["prompt"]})
    _, [rec] = apply_transforms(with_system, [{"name": "decontaminate"}], Context(held_out=held))
    assert rec["dropped_ids"] == []
    _, [rec] = apply_transforms(with_system, [{"name": "decontaminate", "match": "last_user"}], Context(held_out=held))
    assert rec["dropped_ids"] == [1]


def test_mix_draws_rows_by_weight_and_records_the_added_ones(tmp_path):
    other = tmp_path / "other.jsonl"
    lines = [
        {"prompt": f"other {i}", "chosen": f"oc{i}", "rejected": f"or{i}", "source_tag": "other"} for i in range(50)
    ]
    other.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    base = pairs(100)
    spec = {"name": "mix", "datasets": [{"path": str(other), "weight": 1.0}], "base_weight": 2.0, "n": 90}
    out, [rec] = apply_transforms(base, [spec], Context(seed=5))
    tags = out["source_tag"]
    assert tags.count("other") == 30 and tags.count(None) == 60 and len(out) == 90
    assert rec["added"] == 30 and rec["added_ids"] == list(range(100, 130)) and rec["dropped"] == 40
    assert [s["rows_taken"] for s in rec["sources"]] == [60, 30]
    assert len(set(out["prompt"][i][0]["content"] for i in range(90))) == 90  # no repeats when there are enough rows
    # More rows than a source has: every row once per full pass, then a sample.
    spec = {"name": "mix", "datasets": [{"path": str(other), "weight": 3.0}], "base_weight": 1.0}
    out, [rec] = apply_transforms(base, [spec], Context(seed=5))
    assert out["source_tag"].count("other") == 75 and rec["dropped"] == 75
    counts = {}
    for row in out:
        if row["source_tag"] == "other":
            counts[row["prompt"][0]["content"]] = counts.get(row["prompt"][0]["content"], 0) + 1
    assert len(counts) == 50 and sorted(set(counts.values())) == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# errors and the record


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"name": "flip"}, r"data\.transforms must be a list"),
        (
            [{"name": "flip", "p": 0.1}, {"name": "flipp", "p": 0.1}],
            r"data\.transforms\[1\]: unknown transform 'flipp'",
        ),
        ([{"p": 0.1}], r"data\.transforms\[0\] must be a mapping with a name"),
        ([{"name": "flip"}], r"data\.transforms\[0\] \(flip\): missing p"),
        ([{"name": "flip", "p": 1.5}], r"p must be a probability in \[0, 1\], got 1\.5"),
        ([{"name": "flip", "p": 0.1, "q": 2}], r"unknown parameter\(s\) \['q'\]; flip takes: p"),
        ([{"name": "subsample"}], r"exactly one of n .* or fraction"),
        ([{"name": "subsample", "n": 5, "fraction": 0.5}], r"exactly one of n"),
        ([{"name": "subsample", "n": 0}], r"n must be >= 1"),
        ([{"name": "margin_filter", "source": "model", "threshold": 0}], r"source: model needs path"),
        ([{"name": "margin_filter", "source": "vibes", "threshold": 0}], r"source must be oracle, column or model"),
        ([{"name": "margin_filter", "source": "oracle"}], r"exactly one of threshold .* or top_fraction"),
        ([{"name": "margin_filter", "source": "oracle", "top_fraction": 2}], r"top_fraction must be a fraction"),
        ([{"name": "mix"}], r"data\.transforms\[0\] \(mix\): missing datasets"),
        ([{"name": "mix", "datasets": []}], r"\(mix\): datasets must be a non-empty list"),
        ([{"name": "mix", "datasets": [{"weight": 1}]}], r"datasets\[0\] must be a mapping with a path"),
        ([{"name": "mix", "datasets": [{"path": "x", "weight": -1}]}], r"datasets\[0\]\.weight must be"),
        ([{"name": "decontaminate", "match": "fuzzy"}], r"match must be prompt or last_user"),
    ],
)
def test_bad_specs_name_the_item_and_what_to_do(specs, message):
    with pytest.raises(AlignmentError, match=message):
        validate_transforms(specs)


def test_hydra_values_are_accepted_and_defaults_filled():
    cfg = OmegaConf.create({"t": [{"name": "subsample", "fraction": 0.5}, {"name": "dedupe"}]})
    assert validate_transforms(cfg.t) == [{"name": "subsample", "n": None, "fraction": 0.5}, {"name": "dedupe"}]
    assert validate_transforms([]) == [] and validate_transforms(None) == []


def test_an_emptied_train_set_names_the_transform():
    with pytest.raises(AlignmentError, match=r"data\.transforms\[1\] \(margin_filter\) left no training rows"):
        apply_transforms(
            pairs(5), [{"name": "dedupe"}, {"name": "margin_filter", "source": "column", "threshold": 99}]
        )


def _cfg(transforms: list) -> OmegaConf:
    return OmegaConf.create(
        {
            "seed": 4,
            "data": {"path": "x", "format": "auto", "on_error": "raise", "max_length": 64, "transforms": transforms},
            "oracle_eval": {"enabled": True, "path": None, "split": "test"},
        }
    )


def test_transform_train_rows_writes_the_record_and_returns_the_metrics(tmp_path):
    specs = [{"name": "flip", "p": 0.3}, {"name": "subsample", "n": 40}, {"name": "dedupe"}]
    train = pairs(60)
    rows, metrics = transform_train_rows(_cfg(specs), train, None, tmp_path)
    assert ROW_ID not in rows.column_names and len(rows) == 40
    doc = json.loads((tmp_path / RECORD_FILE).read_text(encoding="utf-8"))
    assert doc["seed"] == 4 and doc["rows_before"] == 60 and doc["rows_after"] == 40
    flip, sub, dedupe = doc["transforms"]
    assert flip["name"] == "flip" and flip["params"] == {"p": 0.3}
    assert flip["changed_ids"] == np.flatnonzero(np.random.default_rng([4, 0]).random(60) < 0.3).tolist()
    assert (sub["rows_in"], sub["rows_out"], len(sub["dropped_ids"])) == (60, 40, 20)
    assert dedupe["dropped_ids"] == [] and dedupe["rows_out"] == 40
    assert metrics == {
        "data_rows_after_transforms": 40,
        "data_transform_0_flip_changed": len(flip["changed_ids"]),
        "data_transform_0_flip_dropped": 0,
        "data_transform_1_subsample_changed": 0,
        "data_transform_1_subsample_dropped": 20,
        "data_transform_2_dedupe_changed": 0,
        "data_transform_2_dedupe_dropped": 0,
    }
    # The columns keep their types (the row id rides along only inside the transforms).
    assert rows.features == train.features


def test_no_transforms_write_nothing(tmp_path):
    train = pairs(5)
    rows, metrics = transform_train_rows(_cfg([]), train, None, tmp_path)
    assert rows is train and metrics == {} and not (tmp_path / RECORD_FILE).exists()


# ---------------------------------------------------------------------------------------------------------------
# Through the real CLI


@pytest.mark.slow
def test_dpo_cli_records_transforms_kl_and_trains_with_cdpo(sft_run, tmp_path):
    from tests.conftest import FAST, read_metrics, run_cli

    bad = run_cli("stage=dpo", f"output_dir={tmp_path / 'bad'}", "data.transforms=[{name: flipp}]", check=False)
    assert bad.returncode == 2 and "data.transforms[0]: unknown transform 'flipp'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad" / "dpo").exists()  # failed before the stage ran

    run_cli(
        "stage=dpo",
        f"model.path={sft_run / 'model'}",
        f"output_dir={tmp_path}",
        "data.transforms=[{name: flip, p: 0.25},{name: subsample, n: 64},{name: dedupe}]",
        "trainer.loss_type=[cdpo,sft]",
        "trainer.label_smoothing=0.1",
        "trainer.max_steps=3",
        "trainer.warmup_steps=0",
        "trainer.save_strategy=no",
        *FAST,
    )
    out = tmp_path / "dpo"
    doc = json.loads((out / RECORD_FILE).read_text(encoding="utf-8"))
    flip, sub, dedupe = doc["transforms"]
    assert doc["seed"] == 42 and doc["rows_before"] == 128 == flip["rows_in"]  # FAST: data.max_train_rows=128
    assert flip["changed_ids"] == np.flatnonzero(np.random.default_rng([42, 0]).random(128) < 0.25).tolist()
    assert (sub["rows_in"], sub["rows_out"], dedupe["rows_out"]) == (128, 64, 64)
    metrics = read_metrics(out)
    assert metrics["data_rows_after_transforms"] == 64 == metrics["data_kept"]
    assert metrics["data_transform_0_flip_changed"] == len(flip["changed_ids"]) > 0
    assert metrics["data_transform_1_subsample_dropped"] == 64
    assert metrics["data_transform_2_dedupe_dropped"] == 0
    assert metrics["global_step"] == 3
    # Before training the policy is its reference; after a few steps its own samples are likelier under it.
    assert metrics["kl_before"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["kl"] > 0


def test_margin_filter_from_a_reward_model_in_a_stage_dir(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignment.paths import DATA_DIR
    from alignment.rewards import ModelReward

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(DATA_DIR / "tiny-base", num_labels=1)
    model.config.pad_token_id = 0
    model.save_pretrained(tmp_path / "rm" / "model")  # an rm stage dir: model/ inside
    AutoTokenizer.from_pretrained(DATA_DIR / "tiny-base").save_pretrained(tmp_path / "rm" / "model")
    data = pairs(8)
    rm = ModelReward(tmp_path / "rm" / "model")
    chosen = rm([r["prompt"] for r in data], [r["chosen"][0]["content"] for r in data])
    rejected = rm([r["prompt"] for r in data], [r["rejected"][0]["content"] for r in data])
    margin = [c - r for c, r in zip(chosen, rejected, strict=True)]
    top = sorted(range(8), key=lambda i: -margin[i])[:4]
    spec = {"name": "margin_filter", "source": "model", "path": str(tmp_path / "rm"), "top_fraction": 0.5}
    out, [rec] = apply_transforms(data, [spec])
    assert ids(out) == sorted(top) and rec["dropped_ids"] == sorted(set(range(8)) - set(top))
    spec = {"name": "margin_filter", "source": "model", "path": str(tmp_path / "nowhere"), "threshold": 0}
    with pytest.raises(AlignmentError, match=r"\(margin_filter\): path .*nowhere' does not exist"):
        apply_transforms(data, [spec])

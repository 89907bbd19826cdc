"""Reward sources: user functions, the task oracle, a reward model folder, and their weighted sum."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from alignment.data.encode import turn_end_token_ids
from alignment.data.reward_input import encode_reward_input
from alignment.errors import AlignmentError
from alignment.rewards import build_reward_fn
from tests.families import tiny_qwen2, tiny_tokenizer

ARITH = '{"task": "arithmetic", "answer": 14}'
MODULE = """
def length(prompts, responses, oracle):
    return [float(len(r)) for r in responses]

def has_prompt(prompts, responses, oracle):
    return [1.0 if p else 0.0 for p in prompts]

NOT_CALLABLE = 3
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_rewards.py"


def test_weighted_sum_of_functions_and_oracle(user_module):
    reward_fn = build_reward_fn(
        [
            {"type": "function", "name": "my_rewards:length", "weight": 0.5},
            {"type": "function", "path": f"{user_module}:length", "weight": -0.25},
            {"type": "oracle", "weight": 2.0},
        ]
    )
    prompts = [[{"role": "user", "content": "6 + 8?"}], [{"role": "user", "content": "请算一下6 + 8。"}]]
    responses = ["The answer is 14.", "答案是15"]  # lengths 17 and 5; oracle scores 1 and 0
    scores = reward_fn(prompts, responses, [ARITH, ARITH])
    # 0.5 * len - 0.25 * len + 2 * oracle: 0.25 * 17 + 2 = 6.25; 0.25 * 5 + 0 = 1.25
    assert scores == pytest.approx([6.25, 1.25])
    assert reward_fn.last_scores == {
        "function:my_rewards:length": [17.0, 5.0],
        f"function:{user_module}:length": [17.0, 5.0],
        "oracle": [1.0, 0.0],
    }


def test_function_source_gets_keyword_arguments_and_a_single_mapping_spec_works(user_module):
    reward_fn = build_reward_fn({"type": "function", "name": "my_rewards:has_prompt"})
    assert reward_fn([[{"role": "user", "content": "hi"}], []], ["a", "b"], None) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "function", "name": "no_such_module_xyz:fn"}, "cannot import"),
        ({"type": "function", "name": "my_rewards:missing"}, "cannot import"),
        ({"type": "function", "name": "my_rewards:NOT_CALLABLE"}, "not callable"),
        ({"type": "function", "name": "just_a_name"}, "module:function"),
        ({"type": "function", "name": "/nowhere/file.py:fn"}, "cannot import"),
        ({"type": "function"}, "needs `name`"),
        ({"type": "model"}, "needs `path`"),
        ({"type": "model", "path": "/nowhere/rm"}, "does not exist"),
        ({"type": "judge", "name": "x"}, "unknown `type`"),
        ({"type": "oracle", "wieght": 1.0}, "unknown key"),
        ({"type": "oracle", "weight": "heavy"}, "weight"),
        ([], "no reward source"),
    ],
)
def test_spec_errors_say_what_to_fix(user_module, spec, message):
    with pytest.raises(AlignmentError, match=message):
        build_reward_fn(spec)


def test_function_errors_name_the_config_key_that_holds_the_bad_path(user_module):
    with pytest.raises(AlignmentError, match=r"^reward\.sources\.1\.name='my_rewards:missing': cannot import"):
        build_reward_fn([{"type": "oracle"}, {"type": "function", "name": "my_rewards:missing"}])
    with pytest.raises(AlignmentError, match=r"^reward\.sources\.0\.path='my_rewards:NOT_CALLABLE': .*not callable"):
        build_reward_fn({"type": "function", "path": "my_rewards:NOT_CALLABLE"})
    with pytest.raises(AlignmentError, match=r"^reward\.sources\.0\.path='my_rewards\.\.x:f': .*module:function"):
        build_reward_fn({"type": "function", "path": "my_rewards..x:f"})


def test_a_function_in_a_package_module_is_found_by_its_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_pkg" / "sub").mkdir(parents=True)
    (tmp_path / "my_pkg" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "my_pkg" / "sub" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "my_pkg" / "sub" / "scores.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward_fn = build_reward_fn({"type": "function", "name": "my_pkg.sub.scores:length"})
    assert reward_fn(None, ["abc", ""], None) == [3.0, 0.0]


def test_oracle_without_an_oracle_column_is_an_error():
    reward_fn = build_reward_fn([{"type": "oracle"}])
    with pytest.raises(AlignmentError, match="oracle"):
        reward_fn(None, ["14", "14"], [ARITH, None])


def test_source_returning_the_wrong_number_of_scores_is_an_error(user_module):
    reward_fn = build_reward_fn([{"type": "function", "name": "my_rewards:has_prompt"}])
    with pytest.raises(AlignmentError, match="1 scores for 2"):
        reward_fn([[{"role": "user", "content": "x"}]], ["a", "b"], None)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    tok = tiny_tokenizer(["hello world", "the answer is 14", "你好世界，答案是十四"])
    # Qwen2's own defaults for positions and eos (the shared tiny config sets 128 and the tokenizer's eos)
    model = tiny_qwen2(tok, score=True, max_position_embeddings=32768, eos_token_id=None)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), tok


def test_model_source_scores_each_pair_as_the_model_does_unbatched(reward_model_dir):
    path, model, _ = reward_model_dir
    reward_fn = build_reward_fn([{"type": "model", "path": str(path), "weight": 3.0, "batch_size": 2}], device="cpu")
    prompts = [
        [{"role": "user", "content": "6 + 8?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}],
        [{"role": "user", "content": "hello"}],
    ]
    responses = ["The answer is 14, of course.", "你好世界", ""]
    scores = reward_fn(prompts, responses, [None] * 3)
    # The folder's own tokenizer as transformers loads it (next to a qwen2 config.json that is Qwen2Tokenizer, whose
    # pre-tokenizer differs from the in-memory one built above).
    rm_tok = AutoTokenizer.from_pretrained(path)
    expected = []
    with torch.no_grad():  # one row at a time, no padding at all
        for p, r in zip(prompts, responses, strict=True):
            ids = encode_reward_input(rm_tok, p, r)  # the rm stage's row: it ends at the end-of-turn token
            assert ids[-1] == rm_tok.convert_tokens_to_ids("<|im_end|>")
            expected.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    assert reward_fn.last_scores[f"model:{path.name}"] == pytest.approx(expected, abs=1e-5)
    assert scores == pytest.approx([3.0 * x for x in expected], abs=1e-5)
    assert len(set(expected)) == 3  # the rows really differ, so a mix-up of rows would show
    with pytest.raises(AlignmentError, match="prompt"):
        reward_fn(None, responses, [None] * 3)


def test_model_source_grouped_by_length_scores_like_the_dense_batches(reward_model_dir, monkeypatch):
    from alignment.rl import padding

    monkeypatch.setattr(padding, "FORWARD_OVERHEAD_TOKENS", 0)  # free forwards: as many groups as save padding
    path, _, _ = reward_model_dir
    texts = [
        "",
        "hello",
        "the answer is 14 " * 6,
        "你好",
        "the answer is 14",
        "hello world " * 3,
        "你好世界，答案是十四",
    ]
    prompts = [[{"role": "user", "content": "hi " * (i % 3 * 5 + 1)}] for i in range(len(texts))]
    scorers = {}
    for group in (True, False):
        spec = {"type": "model", "path": str(path), "batch_size": 3, "group_by_length": group}
        scorers[group] = build_reward_fn([spec], device="cpu").sources[0][2]
    widths = []
    score = scorers[True]._score
    monkeypatch.setattr(scorers[True], "_score", lambda chunk: widths.append([len(r) for r in chunk]) or score(chunk))
    grouped, dense = scorers[True](prompts, texts), scorers[False](prompts, texts)
    assert grouped == pytest.approx(dense, abs=1e-5) and len(set(dense)) == len(texts)
    lengths = [len(scorers[True].encode(p, t)) for p, t in zip(prompts, texts, strict=True)]
    assert sorted(length for chunk in widths for length in chunk) == sorted(lengths)  # every row scored once
    assert all(len(chunk) <= 3 for chunk in widths)
    in_order = [lengths[i : i + 3] for i in range(0, len(lengths), 3)]  # the dense batches: 3 rows in given order
    assert sum(len(c) * max(c) for c in widths) < sum(len(c) * max(c) for c in in_order)
    with pytest.raises(AlignmentError, match="group_by_length"):
        build_reward_fn([{"type": "model", "path": str(path), "group_by_length": "no"}], device="cpu")


def test_model_folder_without_tokenizer_uses_the_one_passed(reward_model_dir, tmp_path):
    path, model, tok = reward_model_dir
    model.save_pretrained(tmp_path)
    with pytest.raises(AlignmentError, match="no tokenizer"):
        build_reward_fn([{"type": "model", "path": str(tmp_path)}], device="cpu")
    reward_fn = build_reward_fn([{"type": "model", "path": str(tmp_path)}], tokenizer=tok, device="cpu")
    assert len(reward_fn([[{"role": "user", "content": "hi"}]], ["hello"], [None])) == 1


@pytest.mark.parametrize("trust", [True, False])
def test_online_stages_load_reward_models_with_the_runs_trust_remote_code(monkeypatch, trust):
    from omegaconf import OmegaConf

    from alignment.stages import online

    seen = {}
    monkeypatch.setattr(online, "build_reward_fn", lambda sources, **kwargs: seen.update(sources=sources, **kwargs))
    cfg = OmegaConf.create(
        {
            "model": {"trust_remote_code": trust},
            "reward": {"sources": [{"type": "model", "path": "rm", "weight": 1.0}]},
        }
    )
    online.reward_function(cfg, tokenizer="tok")
    assert seen == {
        "sources": [{"type": "model", "path": "rm", "weight": 1.0}],
        "tokenizer": "tok",
        "trust_remote_code": trust,
    }


def test_model_source_scores_the_policys_sampled_tokens_and_adds_no_end_of_turn(reward_model_dir, monkeypatch):
    from alignment.data import encode_prompt

    path, _, _ = reward_model_dir
    policy_tok = AutoTokenizer.from_pretrained(path)  # the policy shares the reward model's tokenizer
    reward_fn = build_reward_fn([{"type": "model", "path": str(path)}], tokenizer=policy_tok, device="cpu")
    scorer = reward_fn.sources[0][2]
    assert scorer.reads_policy_tokens
    seen = []
    score = scorer._score
    monkeypatch.setattr(scorer, "_score", lambda chunk: seen.extend(chunk) or score(chunk))
    end = policy_tok.convert_tokens_to_ids("<|im_end|>")
    assert turn_end_token_ids(policy_tok) == [end]

    prompts = [[{"role": "user", "content": "你好"}], [{"role": "user", "content": "6 + 8?"}]]
    replies = ["你好世界", "the answer is 14"]
    prompt_ids = [encode_prompt(policy_tok, p) for p in prompts]
    full = [encode_reward_input(policy_tok, p, r) for p, r in zip(prompts, replies, strict=True)]
    assert all(f[: len(p)] == p for f, p in zip(full, prompt_ids, strict=True))
    finished = full[0][len(prompt_ids[0]) :]
    truncated = full[1][len(prompt_ids[1]) : -3]  # cut short by max_new_tokens: no end-of-turn
    texts = policy_tok.batch_decode([finished, truncated], skip_special_tokens=True)
    finished = finished + policy_tok.encode("\n") + [policy_tok.pad_token_id]  # what a sampler may give past its end
    assert texts[1] != replies[1]

    by_tokens = reward_fn(prompts, texts, prompt_ids=prompt_ids, completion_ids=[finished, truncated])
    assert sorted(seen) == sorted([full[0], prompt_ids[1] + truncated])  # cut at the end-of-turn; none added
    seen.clear()
    by_text = reward_fn(prompts, texts)
    assert by_tokens[0] == pytest.approx(by_text[0], abs=1e-5)  # a finished reply: the same score either way
    # The text path renders the cut reply as a finished turn, with an end-of-turn it never produced.
    assert prompt_ids[1] + truncated + [end] in seen and by_tokens[1] != pytest.approx(by_text[1], abs=1e-4)


def test_model_source_with_another_tokenizer_renders_the_text(reward_model_dir, monkeypatch):
    path, _, _ = reward_model_dir
    other = tiny_tokenizer(["quite another corpus", "其他的文字"], vocab_size=280)
    reward_fn = build_reward_fn([{"type": "model", "path": str(path)}], tokenizer=other, device="cpu")
    scorer = reward_fn.sources[0][2]
    assert not scorer.reads_policy_tokens
    prompts, texts = [[{"role": "user", "content": "hello"}]], ["hello world"]
    ids = [other.encode("hello")], [other.encode("hello world")]
    assert reward_fn(prompts, texts, prompt_ids=ids[0], completion_ids=ids[1]) == reward_fn(prompts, texts)

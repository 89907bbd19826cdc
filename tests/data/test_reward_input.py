"""One reward position: the rm stage's RewardTrainer and every RL reward read a reward model at the same token.

For the same (prompt, reply), the score TRL's RewardTrainer computes on the rm stage's row (the model's own pooling:
the last token that is not padding) equals the score ``ModelReward`` returns, and both are read at the reply's
end-of-turn token. Checked under a Llama-3-style tokenizer (no pad token, eos is the end-of-turn ``<|eot_id|>``) and
under the shipped tiny model's ChatML template.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

from alignment.data.encode import encode_preference, turn_end_token_ids
from alignment.data.reward_input import encode_reward_input, sampled_reward_input
from alignment.data.tokenize import tokenize_preference
from alignment.models import load_sequence_classifier, load_tokenizer
from alignment.rewards import ModelReward
from alignment.rl.rollout import token_scores
from alignment.stages.rm import reward_rows
from tests.families import LAYERS

try:
    from tests.data.conftest import _corpus
    from tests.data.templates import LLAMA31
except ImportError:
    from conftest import _corpus
    from templates import LLAMA31

MODEL_CFG = OmegaConf.create({"name": "test", "path": None, "dtype": "float32"})
PROMPTS = [
    [{"role": "user", "content": "What is the answer?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好，请问世界上有什么？"}],
    [{"role": "user", "content": "hello"}],
]
CHOSEN = ["The answer is 14 🙂", "世界很大。谢谢！", "hello world"]
REJECTED = ["I think the model is the question.", "不知道", "hello hello hello hello world assistant"]


pytestmark = pytest.mark.usefixtures("one_thread")


def llama3_tokenizer(extra_specials: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A Llama-3-style stand-in: byte-level BPE, Llama 3.1's template, eos = ``<|eot_id|>``, no pad token."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=[*specials, *extra_specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA31
    )


def load_tokenizer_from(tok):
    """``load_tokenizer`` on a saved copy of ``tok`` (pad policy applied)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return load_tokenizer(d, MODEL_CFG)


@pytest.fixture(scope="module")
def llama_rm_dir(tmp_path_factory):
    """A tiny random Llama reward model saved as a Llama 3 checkpoint is: no pad token, config pad = eos."""
    tok = llama3_tokenizer()
    assert tok.pad_token is None
    config = LlamaConfig(
        vocab_size=len(tok),
        **LAYERS,
        num_labels=1,
        pad_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama-rm")
    LlamaForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory):
    """The shipped tiny model (ChatML) as a reward model: a fresh score head on its pretrained body."""
    from alignment.tiny_model import tiny_model_dir

    base = str(tiny_model_dir())
    tok = load_tokenizer(base, MODEL_CFG)
    torch.manual_seed(0)
    model = load_sequence_classifier(base, MODEL_CFG, tok)
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def reward_trainer_scores(path, tmp_path) -> tuple[list[float], torch.Tensor, object, object]:
    """Chosen scores as the rm stage's RewardTrainer computes them in evaluation, with its batch and model."""
    from trl import RewardConfig, RewardTrainer

    tok = load_tokenizer(str(path), MODEL_CFG)
    model = load_sequence_classifier(str(path), MODEL_CFG, tok)
    pairs = Dataset.from_dict({"prompt": PROMPTS, "chosen": CHOSEN, "rejected": REJECTED})
    rows = reward_rows(tokenize_preference(pairs, tok)[0]).select_columns(["chosen_ids", "rejected_ids"])
    args = RewardConfig(
        output_dir=str(tmp_path), report_to="none", bf16=False, per_device_eval_batch_size=len(PROMPTS)
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows, processing_class=tok)
    batch = trainer._prepare_inputs(next(iter(trainer.get_eval_dataloader())))
    model.eval()
    with torch.no_grad():
        _, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    return outputs.logits[: len(PROMPTS), 0].tolist(), batch, model, tok


@pytest.mark.parametrize("which", ["llama3", "tiny_chatml"])
def test_reward_trainer_and_model_reward_read_the_same_score_at_the_end_of_turn(
    which, llama_rm_dir, tiny_rm_dir, tmp_path
):
    path = llama_rm_dir if which == "llama3" else tiny_rm_dir
    trained, batch, model, tok = reward_trainer_scores(path, tmp_path / "trainer")
    end_of_turn = turn_end_token_ids(tok)[0]
    assert tok.pad_token_id not in turn_end_token_ids(tok)

    # The RL reward, from the folder as PPO/GRPO/RLOO load it.
    reward = ModelReward(path, device="cpu", batch_size=2)
    assert reward(PROMPTS, CHOSEN) == pytest.approx(trained, abs=1e-5)

    # Both are read at the end-of-turn token: each row's last real token, where the per-token score is the score.
    ids, mask = batch["input_ids"][: len(PROMPTS)], batch["attention_mask"][: len(PROMPTS)]
    with torch.no_grad():
        per_token = token_scores(model, ids, mask)
    for i, prompt in enumerate(PROMPTS):
        row = encode_reward_input(tok, prompt, CHOSEN[i])
        assert ids[i, : len(row)].tolist() == row and int(mask[i].sum()) == len(row)
        assert row[-1] == end_of_turn
        assert per_token[i, len(row) - 1].item() == pytest.approx(trained[i], abs=1e-5)
        assert per_token[i, len(row) - 2].item() != pytest.approx(trained[i], abs=1e-3)  # one before would differ


def test_reward_input_is_the_chosen_side_of_a_preference_pair():
    tok = load_tokenizer_from(llama3_tokenizer())
    for prompt, chosen, rejected in zip(PROMPTS, CHOSEN, REJECTED, strict=True):
        pair = encode_preference(tok, prompt, chosen, rejected)
        assert encode_reward_input(tok, prompt, chosen) == pair["prompt_ids"] + pair["chosen_ids"]
        # max_length cuts the prompt from the left and keeps the reply whole, through its end-of-turn
        cut = encode_reward_input(tok, prompt, chosen, max_length=len(pair["chosen_ids"]) + 3)
        assert cut == pair["prompt_ids"][-3:] + pair["chosen_ids"]


def test_sampled_reward_input_cuts_at_the_first_end_of_turn_and_adds_none():
    assert sampled_reward_input([1, 2], [5, 6, 9, 7, 9], {9}) == [1, 2, 5, 6, 9]
    assert sampled_reward_input([1, 2], [5, 6, 7], {9}) == [1, 2, 5, 6, 7]  # cut short: no end-of-turn added
    assert sampled_reward_input([1, 2, 3, 4], [5, 6, 9], {9}, max_length=4) == [4, 5, 6, 9]
    assert sampled_reward_input([1, 2], [5, 6, 7, 8, 9], {9}, max_length=3) == [5, 6, 7]

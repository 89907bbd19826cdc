"""The offline default model: a byte-level BPE tokenizer and a small Qwen2-style base LM pretrained on embedded text.

No hub is reachable on CI or on a laptop without network, so the project builds its own base model, deterministically,
from the embedded data (``data/``): a tokenizer trained on its text, then a few million parameters pretrained
on the plain-text documents of ``data/pretrain/`` (capitals, reviews, everyday questions and answers), so that it
comes to SFT as a base model does, knowing things, and able to copy a name from its context. A random-init model of
this size learns only the templates in a CPU budget of SFT (docs/stages.md).

The built model ships in ``data/tiny-base/`` (``python -m alignment.tiny_model`` rebuilds it there); its
``build.json`` records a digest of the files it was built from. When those files change (``scripts/make_data.py``
with other settings) or ``model.rebuild=true`` is given, it is built again under ``$ALIGNMENT_CACHE`` (default
``~/.cache/alignment``), which takes a few minutes on a laptop CPU, once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from alignment.paths import DATA_DIR, cache_root

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A few million parameters: pretrains and learns the embedded tasks in minutes on a laptop CPU.
TINY_ARCH = {
    "vocab_size": 4096,
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rope_theta": 10000.0,
}
SEED = 1234
# Plain next-token training over the documents, packed into rows of seq_len tokens (documents separated by
# <|endoftext|>): 1000 steps of 8 x 256 tokens (about 2M tokens, 1.5 passes over the 1.38M of data/pretrain).
# Copying a name from the context appears between 500 and 750 steps, capital lookup by 500 (measured:
# docs/stages.md).
PRETRAIN = {"steps": 1000, "seq_len": 256, "batch_size": 8, "learning_rate": 2e-3, "warmup_steps": 50}
SHIPPED_DIR = DATA_DIR / "tiny-base"
# The files the tokenizer is trained on (both) and the base model is pretrained on (the first). The other embedded
# files are made from the same templates, so changing them (more preference pairs, say) needs no new base model.
CORPUS_FILES = ("pretrain/train.jsonl", "sft/train.jsonl")


def _corpus_file(rel: str) -> Path:
    path = DATA_DIR / rel
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python scripts/make_data.py to generate the embedded data")
    return path


def _read_jsonl(rel: str) -> list[dict]:
    with _corpus_file(rel).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def embedded_corpus() -> list[str]:
    """Every text of the tokenizer's corpus (pretraining documents, SFT conversations), in file order."""
    texts: list[str] = []
    for rel in CORPUS_FILES:
        for row in _read_jsonl(rel):
            texts.extend(_strings(row))
    return texts


def pretrain_texts() -> list[str]:
    return [row["text"] for row in _read_jsonl(CORPUS_FILES[0])]


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key != "oracle":
                yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def build_digest() -> str:
    """What the built model depends on: the corpus files' bytes, the architecture, tokenizer and pretraining."""
    h = hashlib.sha256(json.dumps([TINY_ARCH, SPECIAL_TOKENS, CHATML_TEMPLATE, SEED, PRETRAIN]).encode())
    for rel in CORPUS_FILES:
        h.update(_corpus_file(rel).read_bytes())
    return h.hexdigest()[:16]


def build_tokenizer(texts: Iterable[str], vocab_size: int = TINY_ARCH["vocab_size"]):
    """Train a byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=TINY_ARCH["max_position_embeddings"],
    )


def build_model(vocab_size: int, eos_token_id: int, pad_token_id: int):
    """The tiny Qwen2 causal LM with random weights (fixed seed)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    arch = dict(TINY_ARCH, vocab_size=vocab_size)
    config = Qwen2Config(**arch, eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None)
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    return model


def pack(token_lists: Iterable[list[int]], separator: int, seq_len: int):
    """Documents joined by ``separator`` and cut into rows of ``seq_len`` tokens (the last partial row dropped)."""
    import torch

    flat: list[int] = []
    for ids in token_lists:
        flat.extend(ids)
        flat.append(separator)
    rows = len(flat) // seq_len
    if rows == 0:
        raise ValueError(f"the pretraining corpus has {len(flat)} tokens, fewer than one row of {seq_len}")
    return torch.tensor(flat[: rows * seq_len], dtype=torch.long).view(rows, seq_len)


def pretrain(model, tokenizer, texts: list[str], settings: dict | None = None) -> dict:
    """Next-token training on ``texts`` (AdamW, warmup then cosine decay; ``PRETRAIN`` settings unless given);
    returns losses and timings."""
    import torch
    from tqdm.auto import tqdm

    settings = settings or PRETRAIN

    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows = pack(ids, tokenizer.pad_token_id, settings["seq_len"])
    steps, batch, warmup = settings["steps"], settings["batch_size"], settings["warmup_steps"]
    generator = torch.Generator().manual_seed(SEED)
    order = torch.cat(
        [torch.randperm(len(rows), generator=generator) for _ in range(math.ceil(steps * batch / len(rows)))]
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["learning_rate"], betas=(0.9, 0.95), weight_decay=0.0
    )

    def lr_factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="pretraining the tiny base model")
    for step in bar:
        batch_rows = rows[order[step * batch : (step + 1) * batch]]
        loss = model(input_ids=batch_rows, labels=batch_rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    tail = losses[-min(50, max(1, steps // 5)) :]  # the last 50 steps (a fifth of a short run)
    return {
        "tokens": int(rows.numel()),
        "steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "seconds": round(time.perf_counter() - start, 1),
    }


def build(target: Path) -> Path:
    """Build tokenizer and pretrained model into ``target`` atomically (a temp dir renamed when complete)."""
    digest = build_digest()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        tokenizer = build_tokenizer(embedded_corpus())
        model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        stats = pretrain(model, tokenizer, pretrain_texts())
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        info = {"digest": digest, "arch": TINY_ARCH, "pretrain": PRETRAIN, **stats}
        (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp made it private; the model is meant to be read by whoever runs a stage
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def shipped_is_current() -> bool:
    """Whether ``data/tiny-base`` was built from the current embedded data and settings."""
    info = SHIPPED_DIR / "build.json"
    if not info.exists():
        return False
    return json.loads(info.read_text(encoding="utf-8")).get("digest") == build_digest()


def tiny_model_dir(rebuild: bool = False) -> Path:
    """The tiny base model's folder: a rebuilt one in the cache, else the shipped one if current, else build it."""
    cached = cache_root() / f"tiny-{build_digest()}"
    if not rebuild:
        if cached.exists():
            return cached
        if shipped_is_current():
            return SHIPPED_DIR
    log.info(
        "building the tiny base model into %s: tokenizer, then %d pretraining steps (a few minutes on a laptop "
        "CPU, once)",
        cached,
        PRETRAIN["steps"],
    )
    return build(cached)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny base model from the embedded data.")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help=f"target folder (default {SHIPPED_DIR})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    path = build(args.out)
    print(json.dumps(json.loads((path / "build.json").read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

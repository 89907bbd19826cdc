"""Build a random-init Qwen2 model of ~80M parameters (the tiny model's tokenizer) for memory benchmarks.

Large enough that parameters, gradients and optimiser states dominate a rank's memory, so ZeRO-3's sharding shows;
random weights are fine because only memory and speed are measured.

    python scripts/make_bench_model.py /tmp/bench-80m [--layers 12 --hidden 768 --intermediate 2048]
    python -m alignment stage=sft model.path=/tmp/bench-80m distributed=zero3 distributed.num_processes=2 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build(out: Path, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, seed: int) -> int:
    """Write the model and tokenizer to ``out``; return the parameter count."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from alignment.tiny_model import tiny_model_dir

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = build(args.out, args.layers, args.hidden, args.intermediate, args.heads, args.kv_heads, args.seed)
    print(f"{args.out}: {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()

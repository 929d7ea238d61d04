"""Speed of batched caption generation, as ratios measured side by side in one run.

    python benchmarks/caption_generation.py [--preset mini] [--tokens 30] [--repeats 3]

Prints JSON: generated tokens per second of the caption head (SmolLM2-135M +
LoRA for ``mini``, soft prompt of 32 queries + instruction) with and without
the KV cache at batch 16, and at batch 1 vs batch 16 with the cache; and the
ratios. It runs the caption head's own decoding loop
(:meth:`Captioner.decode_loop`, where the cache is explicit); every row
generates exactly ``--tokens`` new tokens (the loop does not stop at the end
token), so the counts are equal whatever the weights say.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from unifashion.config import get_preset
from unifashion.models.captioner import Captioner, Decoding
from unifashion.utils.hardware import autocast, cpu_has_bf16, quiet_libraries


def tokens_per_second(
    captioner: Captioner, batch: int, tokens: int, use_cache: bool, repeats: int, bf16: bool
) -> float:
    shape = (batch, captioner_queries(captioner), captioner.query_dim)
    queries = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    decoding = Decoding("greedy", tokens, use_cache=use_cache)
    times = []
    for _ in range(repeats):
        with torch.no_grad(), autocast(bf16):
            embeds = captioner.prompt_embeddings(captioner.text_adapter(queries), "description")
            t0 = time.perf_counter()
            out = captioner.decode_loop(embeds, decoding, stop_at_end=False)
            times.append(time.perf_counter() - t0)
        assert len(out) == batch and all(len(row) == tokens for row in out)
    return batch * tokens / statistics.median(times)


def captioner_queries(captioner: Captioner) -> int:
    return 32 if captioner.query_dim >= 384 else 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_libraries()
    config = get_preset(args.preset)
    torch.manual_seed(0)
    captioner = Captioner.build(config.llm, config.qformer.hidden_size).eval()
    bf16 = cpu_has_bf16()
    tokens_per_second(captioner, 2, 4, True, 1, bf16)  # warm-up
    cached16 = tokens_per_second(captioner, 16, args.tokens, True, args.repeats, bf16)
    uncached16 = tokens_per_second(captioner, 16, args.tokens, False, args.repeats, bf16)
    cached1 = tokens_per_second(captioner, 1, args.tokens, True, args.repeats, bf16)
    result = {
        "preset": args.preset,
        "new_tokens_per_row": args.tokens,
        "bf16_autocast": bf16,
        "threads": torch.get_num_threads(),
        "tokens_per_second": {
            "batch16_kv_cache": round(cached16, 1),
            "batch16_no_cache": round(uncached16, 1),
            "batch1_kv_cache": round(cached1, 1),
        },
        "kv_cache_speedup_batch16": round(cached16 / uncached16, 2),
        "batch16_over_batch1_speedup": round(cached16 / cached1, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

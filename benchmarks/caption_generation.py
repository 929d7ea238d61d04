"""Speed of batched caption generation, as ratios measured side by side in one run.

    python benchmarks/caption_generation.py [--preset mini] [--tokens 30] [--repeats 3]

Prints JSON: generated tokens per second of the caption head (SmolLM2-135M +
LoRA for ``mini``, soft prompt of 32 queries + instruction) with and without
the KV cache at batch 16, and at batch 1 vs batch 16 with the cache; and the
ratios. It runs the caption head's own decoding loop
(:meth:`Captioner.decode_loop`, where the cache is explicit); every row
generates exactly ``--tokens`` new tokens (the loop does not stop at the end
token), so the counts are equal whatever the weights say.

    python benchmarks/caption_generation.py --model MODEL --data DIR [--max-items 128]
        [--batch-sizes 32,64,128] [--lora-folded]

measures the evaluation's own path instead (:func:`generate_captions` on the
first ``--max-items`` products of ``val``, description style, greedy, stopping
at the end token as ``eval captioning`` does), for a trained caption head: per
batch size, seconds per caption with the rows that have written their end token
kept in the batch until the longest row is done, and pruned from it
(``Decoding.prune``, the default); with ``--lora-folded`` also pruned with the
LoRA update folded into the weights (:meth:`Captioner.lora_merged`); and the
share of captions that come out the same as the first row (bf16 rounding can
flip a greedy token).
"""

from __future__ import annotations

import argparse
import contextlib
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


def evaluation_path(args: argparse.Namespace) -> dict:
    """Seconds per caption of the evaluation's own generation under each batch size, LoRA apart or folded."""
    from unifashion.backbones.feature_cache import FeatureCache
    from unifashion.data.formats import read_split
    from unifashion.pipelines.captioning import generate_captions, load_captioning_model
    from unifashion.pipelines.retrieval import image_queries

    model, captioner = load_captioning_model(args.model)
    products = list(read_split(args.data, "val").products)[: args.max_items]
    refs = [p.images[0] for p in products]
    table = image_queries(model, refs, FeatureCache(model.vision), progress=False)
    queries = table.batch(table.rows(tuple(refs)))
    bf16 = cpu_has_bf16()
    generate_captions(captioner, queries[:2], "description", Decoding(max_new_tokens=4), progress=False)  # warm-up
    rows, reference = [], None
    variants = [("kept", "apart"), ("pruned", "apart")] + ([("pruned", "folded")] if args.lora_folded else [])
    for batch in args.batch_sizes:
        for rows_done, lora in variants:
            decoding = Decoding(prune=rows_done == "pruned")
            t0 = time.perf_counter()
            with torch.no_grad(), captioner.lora_merged() if lora == "folded" else contextlib.nullcontext():
                captions = generate_captions(
                    captioner, queries, "description", decoding, batch_size=batch, bf16=bf16, progress=False
                )
            seconds = time.perf_counter() - t0
            reference = reference or captions
            same = sum(a == b for a, b in zip(captions, reference, strict=True)) / len(captions)
            rows.append(
                {
                    "batch_size": batch,
                    "finished_rows": rows_done,
                    "lora": lora,
                    "seconds_per_caption": round(seconds / len(captions), 4),
                    "same_as_first_row": round(same, 3),
                }
            )
    first = rows[0]["seconds_per_caption"]
    for row in rows:
        row["speedup_over_first_row"] = round(first / row["seconds_per_caption"], 2)
    return {
        "model": args.model,
        "captions": len(products),
        "bf16_autocast": bf16,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mini", choices=("tiny", "mini"))
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a trained caption head: measure the evaluation's own path on --data")
    parser.add_argument("--data", help="dataset folder with a val split (with --model)")
    parser.add_argument("--max-items", type=int, default=128)
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    parser.add_argument("--lora-folded", action="store_true", help="also time pruned rows with the LoRA folded in")
    args = parser.parse_args()
    quiet_libraries()
    if args.model:
        if not args.data:
            parser.error("--model needs --data")
        print(json.dumps(evaluation_path(args), indent=2))
        return
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

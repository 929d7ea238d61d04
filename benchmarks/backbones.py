"""Speed of the frozen backbones, as ratios measured side by side in one run.

    python benchmarks/backbones.py [--batch 32] [--repeats 5]

Prints JSON: EfficientNet-Lite0 images/s in fp32 and with bf16 autocast, and
their ratio; SmolLM2 load time from the GGUF (dequantising) vs from the
safetensors cache, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from unifashion.backbones import llm, vision
from unifashion.config import VisionConfig
from unifashion.utils.hardware import cpu_has_bf16, quiet_libraries


def images_per_second(encoder, pixels, repeats: int) -> float:
    encoder(pixels[:2])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder(pixels)
        times.append(time.perf_counter() - t0)
    return pixels.shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quiet_libraries()
    torch.manual_seed(0)
    result: dict = {"threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16()}

    enc = vision.load_vision_encoder(VisionConfig(kind="efficientnet_lite0", image_size=224))
    pixels = torch.randn(args.batch, 3, 224, 224)
    enc.use_bf16 = False
    fp32 = images_per_second(enc, pixels, args.repeats)
    entry = {"batch": args.batch, "fp32_images_per_s": round(fp32, 1)}
    if cpu_has_bf16():
        enc.use_bf16 = True
        bf16 = images_per_second(enc, pixels, args.repeats)
        entry.update(bf16_images_per_s=round(bf16, 1), bf16_speedup=round(bf16 / fp32, 2))
    result["efficientnet_lite0_224px"] = entry

    with tempfile.TemporaryDirectory() as home:
        os.environ["UNIFASHION_HOME"] = home
        t0 = time.perf_counter()
        llm.load_smollm2()
        from_gguf = time.perf_counter() - t0
        t0 = time.perf_counter()
        llm.load_smollm2()
        from_cache = time.perf_counter() - t0
    result["smollm2_load"] = {
        "from_gguf_s": round(from_gguf, 2),
        "from_cache_s": round(from_cache, 2),
        "speedup": round(from_gguf / from_cache, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

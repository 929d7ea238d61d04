"""Is bf16 autocast a speed-up on this CPU? fp32 and bf16 autocast side by side, in one run.

    python benchmarks/cpu_bf16.py [--repeats 4]

Times one training step (forward, loss, backward) of two pieces of the ``mini`` preset at the
quickstart's batch sizes: the text-to-image U-Net (32 noisy 16x16 latents, 32 condition tokens,
random weights from the preset's config) and a transformer feed-forward block of the Q-Former's
width (4,096 tokens). Prints the best of ``--repeats`` for each, and fp32 / bf16 (above 1: bf16
is faster). The training and evaluation code autocasts to bf16 only where
``unifashion.utils.hardware.cpu_has_bf16`` says the CPU multiplies bf16 natively (AVX512-BF16
or AMX); this shows what that choice is worth, or would cost, on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from unifashion.config import get_preset
from unifashion.models.generator import build_unet
from unifashion.utils.hardware import cpu_has_bf16


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def best_seconds(step, bf16: bool, repeats: int) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()
        return time.perf_counter() - t0

    once()  # warm-up: kernels chosen, buffers allocated
    return min(once() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    preset = get_preset("mini")
    unet = build_unet(preset.diffusion, 0)
    latent = preset.diffusion.image_size // 2 ** (len(preset.diffusion.vae_block_channels) - 1)
    x = torch.randn(32, preset.diffusion.latent_channels, latent, latent)
    t = torch.randint(0, preset.diffusion.num_train_timesteps, (32,))
    cond = torch.randn(32, 32, preset.diffusion.cross_attention_dim)
    width = preset.qformer.hidden_size
    mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))
    tokens = torch.randn(4096, width)

    def unet_step() -> None:
        unet(x, t, encoder_hidden_states=cond).sample.float().pow(2).mean().backward()

    def mlp_step() -> None:
        mlp(tokens).float().pow(2).mean().backward()

    rows = {}
    for name, step in (("unet_step", unet_step), ("qformer_mlp_step", mlp_step)):
        fp32 = best_seconds(step, False, args.repeats)
        bf16 = best_seconds(step, True, args.repeats)
        rows[name] = {
            "fp32_ms": round(fp32 * 1000, 1),
            "bf16_ms": round(bf16 * 1000, 1),
            "fp32_over_bf16": round(fp32 / bf16, 2),
        }
    print(
        json.dumps(
            {
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "native_bf16": cpu_has_bf16(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                **rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

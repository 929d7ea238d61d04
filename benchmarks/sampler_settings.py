"""Sampler settings side by side on one trained text2image head: colour accuracy and seconds per image.

    python benchmarks/sampler_settings.py --model MODEL --data DIR [--split val] [--n 64]

Every setting generates from the same prompts (the first captions of the split's products) with
the same seeds; the colour of each garment is measured from the pixels and compared with the
product's. Prints one JSON object.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch
from _text_requests import load, parser

from unifashion.evaluation.generation import accuracy, garment_colour
from unifashion.models.generator import to_pixels

SETTINGS = (
    ("plms", 50, "leading", 0.0),
    ("plms", 20, "leading", 0.0),
    ("plms", 20, "trailing", 0.0),
    ("ddim", 20, "leading", 0.0),
    ("ddim", 20, "trailing", 0.0),
    ("ddim", 20, "trailing", 1.5),
    ("dpm++", 20, "leading", 0.0),
    ("dpm++", 20, "trailing", 0.0),
    ("dpm++", 20, "trailing", 1.5),
    ("dpm++", 10, "leading", 0.0),
)


def main() -> None:
    ap = parser(__doc__, n=64)
    ap.add_argument("--guidance", type=float, default=None)
    args = ap.parse_args()
    _, gen, states, mask, wanted = load(args)
    base = gen.config
    rows = []
    for sampler, steps, spacing, clip in SETTINGS:
        gen.config = replace(base, timestep_spacing=spacing, clip_range=clip)
        t0 = time.perf_counter()
        latents = gen.sample(states, mask, sampler=sampler, steps=steps, guidance_scale=args.guidance, seed=0)
        images = to_pixels(gen.decode_latents(latents))
        seconds = (time.perf_counter() - t0) / len(wanted)
        rows.append(
            {
                "sampler": sampler,
                "steps": steps,
                "spacing": spacing,
                "clip_range": clip,
                "colour_accuracy": round(accuracy([garment_colour(im) for im in images], wanted), 1),
                "seconds_per_image": round(seconds, 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    gen.config = base
    print(json.dumps({"model": args.model, "split": args.split, "n": len(wanted), "settings": rows}, indent=1))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

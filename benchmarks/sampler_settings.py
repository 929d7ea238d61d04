"""Sampler settings side by side on one trained text2image head: colour accuracy and seconds per image.

    python benchmarks/sampler_settings.py --model MODEL --data DIR [--split val] [--n 64]

Every setting generates from the same prompts (the first captions of the split's products) with
the same seeds; the colour of each garment is measured from the pixels and compared with the
product's. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from unifashion.data.formats import read_split
from unifashion.evaluation.generation import accuracy, garment_colour
from unifashion.generation import load_generation_model, text_condition
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--guidance", type=float, default=None)
    args = ap.parse_args()
    model, gen = load_generation_model(args.model, "text2image")
    products = [p for p in read_split(args.data, args.split).products if p.captions and p.attributes.get("colour")]
    products = products[: args.n]
    states, mask = text_condition(model, [p.captions[0] for p in products])
    wanted = [p.attributes["colour"] for p in products]
    base = gen.config
    rows = []
    for sampler, steps, spacing, clip in SETTINGS:
        gen.config = replace(base, timestep_spacing=spacing, clip_range=clip)
        t0 = time.perf_counter()
        latents = gen.sample(states, mask, sampler=sampler, steps=steps, guidance_scale=args.guidance, seed=0)
        images = to_pixels(gen.decode_latents(latents))
        seconds = (time.perf_counter() - t0) / len(products)
        rows.append({"sampler": sampler, "steps": steps, "spacing": spacing, "clip_range": clip,
                     "colour_accuracy": round(accuracy([garment_colour(im) for im in images], wanted), 1),
                     "seconds_per_image": round(seconds, 4)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    gen.config = base
    print(json.dumps({"model": args.model, "split": args.split, "n": len(products), "settings": rows}, indent=1))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

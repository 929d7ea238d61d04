"""Arguments that several command groups share: caption styles, decoding, image-head tasks, splits."""

from __future__ import annotations

import argparse


def splits_arg(value: str) -> list[str]:
    """``--split a,b`` as a list."""
    return [s.strip() for s in value.split(",") if s.strip()]


def styles_arg(text: str) -> tuple[str, ...]:
    from unifashion.models.captioner import CAPTION_STYLES
    from unifashion.utils.errors import ConfigError

    styles = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in styles:
        if s not in CAPTION_STYLES:
            raise ConfigError(f"--styles: expected a comma-separated subset of {', '.join(CAPTION_STYLES)}, got {s!r}")
    if not styles:
        raise ConfigError("--styles: name at least one caption style")
    return styles


def decoding_from(args: argparse.Namespace):
    from unifashion.models.captioner import Decoding

    return Decoding(
        mode=args.decoding,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoding", default="greedy", choices=("greedy", "beam", "sample"))
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the caption head's (60 in mini)")
    p.add_argument("--num-beams", type=int, default=4, help="beam search width (--decoding beam)")
    p.add_argument("--temperature", type=float, default=0.7, help="--decoding sample")
    p.add_argument("--top-p", type=float, default=0.9, help="--decoding sample")


def tasks_arg(text: str) -> tuple[str, ...]:
    from unifashion.models.generator import check_task

    return tuple(check_task(t.strip()) for t in text.split(",") if t.strip())


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N",
    )

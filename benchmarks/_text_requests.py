"""What the text-to-image benchmarks share: their arguments and the requests whose colour can be checked."""

from __future__ import annotations

import argparse

from unifashion.data.formats import read_split
from unifashion.pipelines.generation import load_generation_model, text_condition


def parser(doc: str, n: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model", required=True, help="a checkpoint with a text2image head")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=n, help="prompts: the first captions of the split's products")
    return ap


def load(args: argparse.Namespace):
    """(model, text2image head, Q-Former states, their mask, the colours asked for) of the first
    ``args.n`` products of the split with a caption and a colour."""
    model, gen = load_generation_model(args.model, "text2image")
    products = [p for p in read_split(args.data, args.split).products if p.captions and p.attributes.get("colour")]
    products = products[: args.n]
    states, mask = text_condition(model, [p.captions[0] for p in products])
    return model, gen, states, mask, [p.attributes["colour"] for p in products]

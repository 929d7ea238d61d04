"""Phase-2 levers side by side: phase 2 trained again from the same model under each variant, then
its captions, its composed retrieval and its cross-modal retrieval measured.

    python benchmarks/phase2_levers.py --before MODEL --data DIR --max-items 400 \\
        --variant "paper:" --variant "adapter frozen:phase2.itg_adapter=false" --swap

MODEL is a pipeline checkpoint with a caption head that has not been through phase 2 (a run of
``unifashion train --config ...`` with ``run.stages = ["phase1a", "phase1b_caption"]``); each
variant runs the pipeline's own ``phase2`` stage from it (``run.init_from``) with MODEL's training
config and the variant's changes (``NAME:SECTION.KEY=VALUE,...``, values in TOML syntax; a variant
that changes ``captioning.*`` trains a fresh caption head first, then phase 2). Measured
on ``--split``, for MODEL itself and after each variant:

- description captions of the first ``--max-items`` products, greedy: CIDEr and attributes correct,
  beside the nearest-neighbour caption of the same model (``evaluation/captioning.py``);
- composed retrieval (Fashion-IQ protocol, no caption variants): the average recall and its margin
  over the best baseline (``evaluation/retrieval.py``);
- cross-modal random-100 R@1, image -> text and text -> image (ITC, at most 1,000 queries, seed 0:
  the quickstart's target figure).

``--blend K ...`` adds, after each variant, a row per K: its weights blended with MODEL's (the stage's
``phase2.blend = K``: each weight phase 2 trains becomes ``before + K * (after - before)``).
``--t2i N`` adds the text-to-image garment colour of N ``--split`` prompts (the quickstart's
measurement, MODEL's text-to-image head with each row's Q-Former and adapter; without the sampler
sweep and the composed requests).

``--swap`` adds, after each variant, the row of its Q-Former with MODEL's caption adapter (what phase
2 did to the image queries alone, without what it did to the adapter). Prints one JSON line per row,
then the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.checkpoint import CONFIG_FILE, add_heads
from unifashion.config import from_dict
from unifashion.data.formats import read_split
from unifashion.evaluation.captioning import evaluate_captioning_split
from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation
from unifashion.evaluation.retrieval import evaluate_cir, evaluate_cmr
from unifashion.pipelines.captioning import load_captioning_model
from unifashion.pipelines.generation import load_image_head
from unifashion.pipelines.retrieval import encode_images
from unifashion.recipes.ablation import mean_recall
from unifashion.training.phase2 import blend_weights, trained_modules, weights_of
from unifashion.training.pipeline import PipelineConfig, apply_overrides, train_pipeline
from unifashion.utils.io import atomic_write_json


def variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    return name.strip(), [s.strip() for s in sets.split(",") if s.strip()]


def caption_figures(model, captioner, val, train, cache, max_items: int | None) -> dict:
    captions = evaluate_captioning_split(
        model.eval(), captioner, val, cache, styles=("description",), train=train, max_items=max_items, progress=False
    )["styles"]["description"]
    mine, nn = captions["model"], captions["nearest_neighbour"]
    return {
        "captions": captions["items"],
        "cider": round(mine["CIDEr"], 1),
        "cider_nn": round(nn["CIDEr"], 1),
        "attributes": round(mine["attributes"]["correct"], 1),
        "attributes_nn": round(nn["attributes"]["correct"], 1),
        "samples": [c["caption"] for c in captions["samples"][:3]],
    }


def qformer_figures(model, val, cache) -> dict:
    """Composed and cross-modal retrieval depend on the Q-Former alone (not on the caption head).
    Cross-modal: random-100 over at most 1,000 queries with the ITC score (the quickstart's target
    figure), seed 0."""
    table = FeatureTable.build([r for p in val.products for r in p.images], cache, progress=False)
    images = encode_images(model.eval(), table, progress=False)
    cir, _ = evaluate_cir(model, val, images)
    cmr, _ = evaluate_cmr(model, val, images, rerank_k=0)
    itc = cmr["random100"].get("itc")  # absent (with "skipped") on a split of under 100 products
    return {
        "composed_avg": round(cir["composed"]["average"]["avg"], 2),
        "composed_margin": round(cir["margin_over_best_baseline"], 2),
        "r1_i2t": round(itc["i2t"]["R@1"], 1) if itc else None,
        "r1_t2i": round(itc["t2i"]["R@1"], 1) if itc else None,
        "mean_recall": round(mean_recall(itc), 2) if itc else None,  # the ablation table's column
    }


QFORMER_KEYS = ("composed_avg", "composed_margin", "r1_i2t", "r1_t2i", "mean_recall")


def t2i_figures(folder: Path, data: str, split: str, prompts: int) -> dict:
    """Garment colour of the text-to-image head of ``folder`` on ``prompts`` prompts of ``split``
    (its own sampler and steps, as the quickstart measures it)."""
    cfg = GenerationEvalConfig(limit=prompts, sampler_sweep=(), composed=False)
    text = evaluate_generation(folder, data, [split], cfg, progress=False)["splits"][split]["text"]
    return {"t2i_colour": text["colour_accuracy"]}


Weights = list[dict[str, torch.Tensor]]


def blended(before: Path, after: Path, keep: float, out: Path, image_head: bool, start: Weights | None = None) -> Path:
    """``after`` with every weight phase 2 trains moved back towards ``before``'s, into ``out``
    (``start``: ``weights_of(trained_modules(...))`` of ``before``, read here when not given)."""
    if start is None:
        start_model, start_captioner = load_captioning_model(before)
        start_head = load_image_head(before, "text2image") if image_head else None
        start = weights_of(trained_modules(start_model, start_captioner, start_head))
    model, captioner = load_captioning_model(after)
    head = load_image_head(after, "text2image") if image_head else None
    blend_weights(trained_modules(model, captioner, head), start, keep)
    heads = {"text2image": head} if head is not None else None
    return add_heads(after, out, qformer=model.qformer, captioner=captioner, image_heads=heads)


class Rows:
    """The table so far, written to ``path`` (atomically) after every row. Rows a run of the same
    measurement (same MODEL, data, split, items and prompts; same changes of the variant) left there are kept, and
    not measured again: an interrupted run continues with the same command (phase 2 itself resumes
    from its checkpoint in ``--work``)."""

    def __init__(self, path: str | None, measurement: dict):
        self.path, self.measurement, self.rows = Path(path) if path else None, measurement, []
        self.done: dict[str, dict] = {}
        if self.path and self.path.is_file():
            kept = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(kept, dict) and kept.get("measurement") == measurement:
                self.done = {r["variant"]: r for r in kept.get("rows", [])}

    def add(self, name: str, measure, settings: list[str] | None = None) -> dict:
        """The row ``name``: kept from the file when it was measured with the same ``settings``
        (the variant's changes), else ``measure()``."""
        row = self.done.get(name)
        if row is None or row.get("settings") != settings:
            row = {"variant": name, **({"settings": settings} if settings is not None else {}), **measure()}
        else:
            print(f"(kept from {self.path}: {name})", flush=True)
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.path:
            atomic_write_json(self.path, {"measurement": self.measurement, "rows": self.rows})
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="a pipeline checkpoint with a caption head, before phase 2")
    ap.add_argument("--data", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME:SECTION.KEY=VALUE,... (repeatable)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-items", type=int, default=None, help="products captioned (default: all of --split)")
    ap.add_argument("--swap", action="store_true", help="also each variant's Q-Former with MODEL's adapter")
    ap.add_argument("--blend", type=float, nargs="*", default=[], help="also each variant blended with MODEL")
    ap.add_argument("--t2i", type=int, default=0, help="text-to-image colour on this many prompts (0: not measured)")
    ap.add_argument("--work", default=None, help="folder for the trained variants (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the table here too")
    args = ap.parse_args()

    before = Path(args.before)
    meta = json.loads((before / CONFIG_FILE).read_text(encoding="utf-8"))
    base = meta.get("training", {}).get("pipeline", {}).get("config")
    if base is None:
        raise SystemExit(f"{before}: not a pipeline checkpoint (no training.pipeline.config in {CONFIG_FILE})")
    val, train = read_split(args.data, args.split), read_split(args.data, "train")
    model, captioner = load_captioning_model(before)
    cache = FeatureCache(model.vision)  # the frozen vision tower is the same in every variant
    measurement = {
        "before": str(before.resolve()),
        "data": str(Path(args.data).resolve()),
        "split": args.split,
        "max_items": args.max_items,
        "t2i": args.t2i,
    }
    table = Rows(args.json, measurement)
    table.add(
        "before phase 2",
        lambda: {
            **caption_figures(model, captioner, val, train, cache, args.max_items),
            **qformer_figures(model, val, cache),
            **(t2i_figures(before, args.data, args.split, args.t2i) if args.t2i else {}),
        },
    )
    work = Path(args.work or tempfile.mkdtemp(prefix="phase2-levers-"))
    before_adapter = captioner.text_adapter.state_dict()
    # MODEL's weights, the start every blended row moves back towards (its Q-Former and caption head are loaded).
    start_head = load_image_head(before, "text2image") if args.blend and args.t2i else None
    start = weights_of(trained_modules(model, captioner, start_head)) if args.blend else None
    for i, (name, sets) in enumerate(variant(v) for v in args.variant):
        raw = copy.deepcopy(base)
        # A variant that changes the caption stage trains a fresh caption head first (on MODEL's Q-Former).
        stages = ["phase1b_caption", "phase2"] if any(k.startswith("captioning.") for k in sets) else ["phase2"]
        raw["run"] = {**raw["run"], "data": str(args.data), "init_from": str(before), "stages": stages}
        raw["run"]["progress"] = False
        cfg = from_dict(PipelineConfig, apply_overrides(raw, sets, name), where=name)
        out = work / f"variant{i}"

        def trained(cfg=cfg, out=out) -> dict:
            """Trains the variant (or continues its interrupted training in ``--work``) unless it is there."""
            if (out / CONFIG_FILE).is_file():
                return {}
            resumed = (out.parent / f"{out.name}.work" / "progress.json").is_file()
            t0 = time.perf_counter()
            train_pipeline(cfg, out, resume=resumed)
            minutes = {"train_minutes": round((time.perf_counter() - t0) / 60, 1)}
            return {**minutes, "resumed": True} if resumed else minutes

        def measured(out=out) -> dict:
            minutes = trained()
            tuned, tuned_captioner = load_captioning_model(out)
            return {
                **minutes,
                **caption_figures(tuned, tuned_captioner, val, train, cache, args.max_items),
                **qformer_figures(tuned, val, cache),
                **(t2i_figures(out, args.data, args.split, args.t2i) if args.t2i else {}),
            }

        row = table.add(name, measured, sets)
        for keep in args.blend:

            def mixed_figures(out=out, keep=keep, i=i) -> dict:
                trained()
                mixed = blended(before, out, keep, work / f"variant{i}-blend{keep}", args.t2i > 0, start)
                mixed_model, mixed_captioner = load_captioning_model(mixed)
                return {
                    **caption_figures(mixed_model, mixed_captioner, val, train, cache, args.max_items),
                    **qformer_figures(mixed_model, val, cache),
                    **(t2i_figures(mixed, args.data, args.split, args.t2i) if args.t2i else {}),
                }

            table.add(f"{name}, blend {keep}", mixed_figures, sets)
        if args.swap and stages == ["phase2"]:
            trained()
            tuned, tuned_captioner = load_captioning_model(out)
            adapter = tuned_captioner.text_adapter.state_dict()
            # (nothing to swap where the adapter stayed as it was, or where the variant trained its own head)
            if any(not torch.equal(v, before_adapter[k]) for k, v in adapter.items()):

                def swapped(tuned=tuned, tuned_captioner=tuned_captioner, row=row) -> dict:
                    tuned_captioner.text_adapter.load_state_dict(before_adapter)
                    return {
                        **caption_figures(tuned, tuned_captioner, val, train, cache, args.max_items),
                        # The same Q-Former (and text-to-image adapter) as the variant's row.
                        **{k: row[k] for k in (*QFORMER_KEYS, "t2i_colour") if k in row},
                    }

                table.add(f"{name}: its Q-Former, the adapter before phase 2", swapped, sets)
    rows = table.rows
    print()
    print(
        "| variant | training min | CIDEr / NN | attributes correct / NN | composed avg | margin over best baseline "
        "| random-100 R@1 i2t / t2i | mean recall |" + (" text-to-image colour |" if args.t2i else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.t2i else ""))
    for r in rows:
        colour = f" {r.get('t2i_colour', '-')} |" if args.t2i else ""
        print(
            f"| {r['variant']} | {r.get('train_minutes', '-')} | {r['cider']} / {r['cider_nn']} | "
            f"{r['attributes']} / {r['attributes_nn']} | {r['composed_avg']} | {r['composed_margin']} | "
            f"{r['r1_i2t']} / {r['r1_t2i']} | {r['mean_recall']} |" + colour
        )
    if args.json:
        print(f"(written to {args.json})")


if __name__ == "__main__":
    main()

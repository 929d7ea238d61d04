"""Cross-modal recall against the length of phase 1a: the curve behind the quickstart's R@1 target.

    python benchmarks/phase1a_curve.py --data runs/full-data --epochs 4,6,8 --work runs/phase1a-curve

Each length is its own run of the pipeline's ``phase1a`` stage (Q-Former pretraining, ITC + ITM,
cosine schedule) with the quickstart's ``--size`` training config and only ``phase1_epochs``
changed, from the same seed; then, on ``--split``: random-100 R@1 image -> text and text -> image
(ITC, 1,000 queries, seed 0: the quickstart's target figure), the ablation's mean recall and the
composed retrieval of the phase-1a model (``phase2_levers.qformer_figures``, the same measurement
as the phase-2 levers). ``--set SECTION.KEY=VALUE`` changes the config of every run (TOML values).
Prints one JSON line per run, then the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

from phase2_levers import qformer_figures

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import from_dict, to_dict
from unifashion.data.formats import read_split
from unifashion.models.retrieval import RetrievalModel
from unifashion.recipes.quickstart import SIZES, training_config
from unifashion.training.pipeline import PipelineConfig, apply_overrides, train_pipeline


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="FashionSynth (or any) data folder with train and --split")
    ap.add_argument("--epochs", default="4,6,8", help="phase-1a lengths, comma-separated (one run each)")
    ap.add_argument("--size", choices=sorted(SIZES), default="full", help="the quickstart size whose config is used")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="SECTION.KEY=VALUE for every run (repeatable)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--work", default=None, help="folder for the trained models (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the table here too")
    args = ap.parse_args(argv)

    base = to_dict(training_config(Path(args.data), SIZES[args.size], args.seed, progress=False))
    val = read_split(args.data, args.split)
    work = Path(args.work or tempfile.mkdtemp(prefix="phase1a-curve-"))
    rows, cache = [], None
    for epochs in (float(e) for e in args.epochs.split(",") if e):
        sets = [f"retrieval.phase1_epochs={epochs}", *args.set]
        raw = apply_overrides(copy.deepcopy(base), sets, "phase1a_curve")
        raw["run"] = {**raw["run"], "stages": ["phase1a"]}
        cfg = from_dict(PipelineConfig, raw, where=f"{epochs} epochs")
        out = work / f"epochs{epochs:g}"
        t0 = time.perf_counter()
        train_pipeline(cfg, out)
        minutes = round((time.perf_counter() - t0) / 60, 1)
        model = RetrievalModel.from_pretrained(out)
        cache = cache or FeatureCache(model.vision)  # the frozen vision tower is the same in every run
        rows.append({"epochs": epochs, "train_minutes": minutes, "set": args.set, **qformer_figures(model, val, cache)})
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| phase 1a epochs | training min | random-100 R@1 i2t / t2i | mean recall | composed avg |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['epochs']:g} | {r['train_minutes']} | {r['r1_i2t']} / {r['r1_t2i']} | {r['mean_recall']} "
            f"| {r['composed_avg']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

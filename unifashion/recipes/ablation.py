"""``unifashion ablate --data DIR --out DIR``: the paper's Table 5 on FashionSynth.

Rows: the Q-Former alone, + the LLM (caption head), + diffusion (image head), and the full model.
Columns: cross-modal mean recall (random-100, mean of R@1/5/10 both ways), composed-retrieval
average recall (mean of R@10 and R@50 over categories), captioning BLEU-4 (description style) and
text-to-image ``fid_effnet``.

Phase 1 is shared: phase 1a trains the Q-Former, and phase 1b trains each head with the Q-Former
frozen, so the heads of phase 1b do not depend on each other. The full pipeline runs once, keeping
its model as it stands before phase 2; each other row starts from that model without the heads it
leaves out and runs phase 2 only, whose ITG and q2I terms (Eq. 13) come from whichever heads it has.
What differs between rows is therefore what the paper ablates: which heads shape the shared
Q-Former in composed training.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from unifashion.checkpoint import without_heads
from unifashion.utils.io import atomic_write_json

# Each row: its label and the heads it leaves out.
ROWS = {
    "qformer_only": ("Q-Former only", ("captioning", "text2image", "tryon", "design")),
    "with_llm": ("+ LLM", ("text2image", "tryon", "design")),
    "with_diffusion": ("+ diffusion", ("captioning",)),
    "full": ("full (LLM + diffusion)", ()),
}


def mean_recall(r100: dict[str, Any]) -> float | None:
    """Mean of R@1, R@5 and R@10 in both directions (the paper's "mean" column)."""
    try:
        values = [r100[d][k] for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")]
    except (KeyError, TypeError):
        return None
    return sum(values) / len(values)


def run_ablation(
    data: str | Path, out: str | Path, size: str = "small", *, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Train the four rows and evaluate them on ``val`` (see the module docstring); writes
    ``OUT/ablation.json`` and returns it."""
    from unifashion.evaluation.captioning import evaluate_captioning
    from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation
    from unifashion.evaluation.retrieval import evaluate_model
    from unifashion.recipes.quickstart import SIZES, training_config
    from unifashion.training.pipeline import train_pipeline

    spec = SIZES[size]
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = training_config(data, spec, seed, progress)
    tasks = tuple(t for t in cfg.generation.tasks if t == "text2image")  # the table scores text -> image only
    cfg = replace(cfg, generation=replace(cfg.generation, tasks=tasks))
    before_phase2 = out / "before_phase2"
    last_phase1 = "phase1b_" + (tasks[-1] if tasks else "caption")

    def keep(stage: str, folder: Path) -> None:
        if stage == last_phase1:
            shutil.rmtree(before_phase2, ignore_errors=True)
            shutil.copytree(folder, before_phase2)

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    train_pipeline(cfg, out / "full", on_stage_end=keep)
    seconds["full"] = round(time.perf_counter() - t0, 1)
    for name, (_, drop) in ROWS.items():
        if name == "full":
            continue
        t0 = time.perf_counter()
        start = without_heads(before_phase2, out / f"{name}.init", drop)
        run = replace(cfg.run, init_from=str(start), stages=("phase2",))
        train_pipeline(replace(cfg, run=run), out / name)
        shutil.rmtree(start, ignore_errors=True)
        seconds[name] = round(time.perf_counter() - t0, 1)

    rows = {}
    for name, (label, drop) in ROWS.items():
        model = out / name
        r = evaluate_model(model, data, ["val"], max_queries=spec.retrieval_queries, progress=progress)
        r = r["splits"]["val"]
        row: dict[str, Any] = {
            "label": label,
            "train_seconds": seconds[name],
            "cmr_mean_recall": mean_recall(r["cmr"].get("random100", {}).get("itc")),
            "cir_average_recall": r["cir"].get("composed", {}).get("average", {}).get("avg"),
        }
        if "captioning" not in drop:
            c = evaluate_captioning(
                model, data, ["val"], styles=("description",), max_items=spec.caption_items, progress=progress
            )
            row["caption_bleu4"] = c["splits"]["val"]["styles"]["description"]["model"]["BLEU-4"]
        if "text2image" not in drop:
            gcfg = GenerationEvalConfig(limit=spec.generation_limit, sampler_sweep=())
            g = evaluate_generation(model, data, ["val"], gcfg, progress=progress)["splits"]["val"]
            row["generation_fid_effnet"] = g["text"]["fid_effnet"]
        rows[name] = row
    result = {
        "data": str(data),
        "size": size,
        "split": "val",
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "ablation.json", result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The rows as a plain-text table."""
    cols = ("cmr_mean_recall", "cir_average_recall", "caption_bleu4", "generation_fid_effnet")
    head = f"{'model':<24}" + "".join(f"{c:>22}" for c in cols)
    lines = [head]
    for row in result["rows"].values():
        cells = "".join(f"{row[c]:>22.2f}" if isinstance(row.get(c), float) else f"{'-':>22}" for c in cols)
        lines.append(f"{row['label']:<24}{cells}")
    return "\n".join(lines)

"""``unifashion ablate --data DIR --out DIR``: the paper's Table 5 on FashionSynth.

Rows: the Q-Former alone, + the LLM (caption head), + diffusion (image head), and the full model.
Columns: cross-modal mean recall (random-100, mean of R@1/5/10 both ways), composed-retrieval
average recall (mean of R@10 and R@50 over categories), captioning BLEU-4 (description style) and
text-to-image ``fid_effnet``.

Phase 1 is shared: phase 1a trains the Q-Former, and phase 1b trains each head with the Q-Former
frozen, so the heads of phase 1b do not depend on each other. Phase 1 runs once, to
``OUT/before_phase2``; every row, the full one included, starts from that model without the heads it
leaves out and runs phase 2 only, whose ITG and q2I terms (Eq. 13) come from whichever heads it has.
What differs between rows is therefore what the paper ablates: which heads shape the shared
Q-Former in composed training.

The run is resumable (``--resume``): at the ``full`` size it takes hours on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from unifashion.checkpoint import CONFIG_FILE, without_heads
from unifashion.utils.errors import ConfigError
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
    data: str | Path,
    out: str | Path,
    size: str = "small",
    *,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the four rows and evaluate them on ``val`` (see the module docstring); writes
    ``OUT/ablation.json`` and returns it.

    Every finished piece (phase 1, each row's phase 2, each row's evaluation) is recorded in
    ``OUT/ablation.progress.json``; with ``resume`` a run continues where it stopped: finished
    pieces are kept and an interrupted training resumes from its last checkpoint."""
    from unifashion.recipes.quickstart import SIZES, training_config
    from unifashion.training.pipeline import train_pipeline

    if size not in SIZES:
        raise ConfigError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    spec = SIZES[size]
    # Absolute paths: a resumed run must name the same folders whatever its working directory.
    data, out = Path(data).resolve(), Path(out).resolve()
    cfg = training_config(data, spec, seed, progress)
    tasks = tuple(t for t in cfg.generation.tasks if t == "text2image")  # the table scores text -> image only
    cfg = replace(cfg, generation=replace(cfg.generation, tasks=tasks))
    phase1_stages = ("phase1a", "phase1b_caption", "phase1b_vae", *(f"phase1b_{t}" for t in tasks))
    phase1 = replace(cfg, run=replace(cfg.run, stages=phase1_stages))
    state = _Progress(out / PROGRESS_FILE, {"data": str(data), "size": size, "seed": seed, "digest": cfg.digest()})
    state.start(resume)
    if state.resumed and progress:
        kept = ", ".join(state.trained) or "nothing"
        print(f"[ablate] resuming {out}: trained {kept}; evaluated {', '.join(state.rows) or 'nothing'}", flush=True)
    before_phase2 = out / "before_phase2"

    if "phase1" not in state.trained:
        summary = _finished(before_phase2, phase1) if resume else None
        state.record_training("phase1", summary or train_pipeline(phase1, before_phase2, resume=resume))
    for name, (_, drop) in ROWS.items():
        if name in state.trained:
            continue
        start = out / f"{name}.init"
        row_cfg = replace(cfg, run=replace(cfg.run, init_from=str(start), stages=("phase2",)))
        summary = _finished(out / name, row_cfg) if resume else None
        if summary is None:
            if not resume or not (start / CONFIG_FILE).is_file():
                without_heads(before_phase2, start, drop)
            summary = train_pipeline(row_cfg, out / name, resume=resume)
        state.record_training(name, summary)
        shutil.rmtree(start, ignore_errors=True)

    for name, (label, drop) in ROWS.items():
        if name not in state.rows:
            t0 = time.perf_counter()
            row = {"label": label, **_evaluate_row(out / name, data, spec, drop, progress)}
            row["eval_seconds"] = round(time.perf_counter() - t0, 1)
            state.record_row(name, row)
    rows = {
        name: {**state.rows[name], "train_seconds": state.trained[name]["seconds"]}
        for name in ROWS  # the table's order, whatever order a resumed run finished them in
    }
    result = {
        "data": str(data),
        "size": size,
        "split": "val",
        "seed": seed,
        "rows": rows,
        "phase1_seconds": state.trained["phase1"]["seconds"],
        # Training and evaluation seconds of every piece; a piece that resumed a stage counts that
        # stage from where it resumed, so an interrupted run reads a little short.
        "seconds": round(
            sum(t["seconds"] for t in state.trained.values()) + sum(r["eval_seconds"] for r in rows.values()), 1
        ),
        "resumed": state.resumed,
    }
    atomic_write_json(out / "ablation.json", result)
    return result


PROGRESS_FILE = "ablation.progress.json"


def _finished(model: Path, cfg) -> dict[str, Any] | None:
    """The training summary of ``model`` when it is a finished run of the pipeline config ``cfg``."""
    from unifashion.config import to_dict

    path = model / CONFIG_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text(encoding="utf-8")).get("training", {}).get("pipeline", {})
    return done.get("summary") if done.get("config") == to_dict(cfg.seeded()) else None


class _Progress:
    """What an ablation run has finished, kept on disk after every piece."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path, self.settings = path, settings
        self.trained: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.resumed = False

    def start(self, resume: bool) -> None:
        if resume and self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("settings") != self.settings:
                was = saved.get("settings", {})
                differ = sorted(k for k in self.settings if was.get(k) != self.settings[k])
                raise ConfigError(
                    f"{self.path}: this ablation was started with other settings ({', '.join(differ)} differ); "
                    "resume it with the same --data, --size and --seed, or start afresh without --resume"
                )
            self.trained, self.rows = saved["trained"], saved["rows"]
            self.resumed = True
        elif not resume:
            self.path.unlink(missing_ok=True)
        self._save()

    def record_training(self, name: str, summary: dict[str, Any]) -> None:
        seconds = sum(s["seconds"] for s in summary.values() if isinstance(s, dict) and "seconds" in s)
        self.trained[name] = {"seconds": round(seconds, 1)}
        self._save()

    def record_row(self, name: str, row: dict[str, Any]) -> None:
        self.rows[name] = row
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, {"settings": self.settings, "trained": self.trained, "rows": self.rows})


def _evaluate_row(model: Path, data: Path, spec, drop: tuple[str, ...], progress: bool) -> dict[str, Any]:
    """One row's figures: cross-modal and composed retrieval, and the heads it has."""
    from unifashion.evaluation.captioning import evaluate_captioning
    from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation
    from unifashion.evaluation.retrieval import evaluate_model

    # The table reads ITC rankings of the composed query (Eq. 9) and of random-100: no ITM
    # re-ranking and no caption-assisted variants run (a row with a caption head would caption every
    # val product for them: minutes at the full size).
    r = evaluate_model(
        model,
        data,
        ["val"],
        with_captions=False,
        rerank_k=0,
        cir_rerank_k=0,
        max_queries=spec.retrieval_queries,
        progress=progress,
    )
    r = r["splits"]["val"]
    row: dict[str, Any] = {
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
    return row


def format_table(result: dict[str, Any]) -> str:
    """The rows as a plain-text table."""
    cols = ("cmr_mean_recall", "cir_average_recall", "caption_bleu4", "generation_fid_effnet")
    head = f"{'model':<24}" + "".join(f"{c:>22}" for c in cols)
    lines = [head]
    for row in result["rows"].values():
        cells = "".join(f"{row[c]:>22.2f}" if isinstance(row.get(c), float) else f"{'-':>22}" for c in cols)
        lines.append(f"{row['label']:<24}{cells}")
    return "\n".join(lines)

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


FIGURES = ("cmr_mean_recall", "cir_average_recall", "caption_bleu4", "generation_fid_effnet")


def run_ablation(
    data: str | Path,
    out: str | Path,
    size: str = "small",
    *,
    seeds: tuple[int, ...] | list[int] = (0,),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the four rows and evaluate them on ``val`` (see the module docstring); writes
    ``OUT/ablation.json`` and returns it.

    Phase 1 runs once, seeded by ``seeds[0]``; every row runs phase 2 once per seed (the first
    seed's in ``OUT/NAME``, the others' in ``OUT/NAME.seedS``). A row's figures are the mean over
    the seeds, with each seed's figures and their range beside them: phase 2 alone moves a row by
    several points, so one seed per row cannot tell the rows apart.

    Every finished piece (phase 1, each phase 2, each evaluation) is recorded in
    ``OUT/ablation.progress.json``; with ``resume`` a run continues where it stopped: finished
    pieces are kept, an interrupted training resumes from its last checkpoint, and a finished run
    resumed with more seeds trains and evaluates only the new ones."""
    from unifashion.recipes.quickstart import SIZES, training_config
    from unifashion.training.pipeline import finished_summary, train_pipeline

    if size not in SIZES:
        raise ConfigError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected one or more different seeds, got {list(seeds)}")
    spec = SIZES[size]
    # Absolute paths: a resumed run must name the same folders whatever its working directory.
    data, out = Path(data).resolve(), Path(out).resolve()

    def config(seed: int):
        cfg = training_config(data, spec, seed, progress)
        tasks = tuple(t for t in cfg.generation.tasks if t == "text2image")  # the table scores text -> image only
        return replace(cfg, generation=replace(cfg.generation, tasks=tasks))

    cfg = config(seeds[0])
    phase1_stages = ("phase1a", "phase1b_caption", "phase1b_vae", *(f"phase1b_{t}" for t in cfg.generation.tasks))
    phase1 = replace(cfg, run=replace(cfg.run, stages=phase1_stages))
    settings = {"data": str(data), "size": size, "seed": seeds[0], "digest": cfg.digest()}
    state = _Progress(out / PROGRESS_FILE, settings)
    state.start(resume)
    if state.resumed and progress:
        kept = ", ".join(state.trained) or "nothing"
        print(f"[ablate] resuming {out}: trained {kept}; evaluated {', '.join(state.rows) or 'nothing'}", flush=True)
    before_phase2 = out / "before_phase2"

    if "phase1" not in state.trained:
        summary = finished_summary(before_phase2, phase1) if resume else None
        state.record_training("phase1", summary or train_pipeline(phase1, before_phase2, resume=resume))
    pieces = [(piece_name(name, seed, seeds[0]), name, seed) for seed in seeds for name in ROWS]
    for key, name, seed in pieces:
        if key in state.trained:
            continue
        start = out / f"{key}.init"
        seeded = cfg if seed == seeds[0] else config(seed)
        row_cfg = replace(seeded, run=replace(seeded.run, init_from=str(start), stages=("phase2",)))
        summary = finished_summary(out / key, row_cfg) if resume else None
        if summary is None:
            if not resume or not (start / CONFIG_FILE).is_file():
                without_heads(before_phase2, start, ROWS[name][1])
            summary = train_pipeline(row_cfg, out / key, resume=resume)
        state.record_training(key, summary)
        shutil.rmtree(start, ignore_errors=True)

    for key, name, _ in pieces:
        if key not in state.rows:
            t0 = time.perf_counter()
            row = _evaluate_row(out / key, data, spec, ROWS[name][1], progress)
            row["eval_seconds"] = round(time.perf_counter() - t0, 1)
            state.record_row(key, row)
    keys = [key for key, _, _ in pieces]
    result = {
        "data": str(data),
        "size": size,
        "split": "val",
        "seed": seeds[0],
        "seeds": list(seeds),
        "rows": {name: _row(name, seeds, state) for name in ROWS},  # the table's order, whatever order pieces ran in
        "phase1_seconds": state.trained["phase1"]["seconds"],
        # Training and evaluation seconds of every piece; a piece that resumed a stage counts that
        # stage from where it resumed, so an interrupted run reads a little short.
        "seconds": round(
            state.trained["phase1"]["seconds"]
            + sum(state.trained[k]["seconds"] + state.rows[k]["eval_seconds"] for k in keys),
            1,
        ),
        "resumed": state.resumed,
    }
    atomic_write_json(out / "ablation.json", result)
    return result


PROGRESS_FILE = "ablation.progress.json"


def piece_name(row: str, seed: int, first_seed: int) -> str:
    """The folder (and progress key) of one row's phase 2 under ``seed``. The first seed's keeps the
    row's plain name, so a one-seed run reads as before and can be resumed with more seeds."""
    return row if seed == first_seed else f"{row}.seed{seed}"


def _row(name: str, seeds: tuple[int, ...], state: _Progress) -> dict[str, Any]:
    """One row of the table: each figure's mean over the seeds; with several seeds, each seed's
    figures and each figure's range as well."""
    per_seed = {}
    for seed in seeds:
        key = piece_name(name, seed, seeds[0])
        per_seed[str(seed)] = {**state.rows[key], "train_seconds": state.trained[key]["seconds"]}
    row: dict[str, Any] = {"label": ROWS[name][0]}
    for figure in FIGURES:
        values = [v[figure] for v in per_seed.values() if isinstance(v.get(figure), int | float)]
        if values:
            row[figure] = sum(values) / len(values)
            if len(seeds) > 1:
                row.setdefault("range", {})[figure] = [min(values), max(values)]
    # Minutes of one phase 2 (the mean over seeds) and of every evaluation of the row.
    row["train_seconds"] = round(sum(v["train_seconds"] for v in per_seed.values()) / len(seeds), 1)
    row["eval_seconds"] = round(sum(v["eval_seconds"] for v in per_seed.values()), 1)
    if len(seeds) > 1:
        row["seeds"] = per_seed
    return row


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
                    "resume it with the same --data, --size and first of --seeds, or start afresh without --resume"
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
        # The text prompts only: no sampler sweep and no composed requests, which the table does not read.
        gcfg = GenerationEvalConfig(limit=spec.generation_limit, sampler_sweep=(), composed=False)
        g = evaluate_generation(model, data, ["val"], gcfg, progress=progress)["splits"]["val"]
        row["generation_fid_effnet"] = g["text"]["fid_effnet"]
    return row


def format_table(result: dict[str, Any]) -> str:
    """The rows as a plain-text table; with several seeds a figure is the mean, its range beside it."""
    lines = [f"{'model':<24}" + "".join(f"{c:>30}" for c in FIGURES)]
    for row in result["rows"].values():
        cells = ""
        for c in FIGURES:
            value, span = row.get(c), row.get("range", {}).get(c)
            text = f"{value:.2f}" if isinstance(value, int | float) else "-"
            if span:
                text += f" ({span[0]:.2f}-{span[1]:.2f})"
            cells += f"{text:>30}"
        lines.append(f"{row['label']:<24}{cells}")
    seeds = result.get("seeds", [])
    if len(seeds) > 1:
        lines.append(f"(mean over phase-2 seeds {', '.join(map(str, seeds))}; lowest-highest in brackets)")
    return "\n".join(lines)

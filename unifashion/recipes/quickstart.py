"""``unifashion quickstart --out DIR [--size small|full]``: the whole job on the built-in data.

1. writes FashionSynth (``DIR/data``);
2. trains every phase with the ``mini`` preset (``DIR/model``; resumable with ``--resume``);
3. evaluates every task on ``val``: cross-modal and composed retrieval (with the baselines of the
   same run), captioning (with the nearest-neighbour baseline), generation and try-on;
4. draws sample grids with the trained model (``DIR/samples``) and writes ``DIR/report.json`` and
   ``DIR/report.html``.

``small`` (the default) took 12.7 minutes on 2 cores of a CPU without native bf16 (fp32), where
bf16 CPUs run about 2-3 times as fast; ``full`` is the size at which the quality targets are judged
(119.6 minutes on 2 cores of an Intel Xeon without native bf16; its earlier recipe, with 4 epochs of
phase 1a, took 54-58 minutes on an AMD EPYC with bf16, where the 8 epochs add about 6).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifashion.checkpoint import LOGS_FOLDER
from unifashion.evaluation.targets import cir_margin, evaluate_targets
from unifashion.utils.errors import ConfigError
from unifashion.utils.io import atomic_write_json


@dataclass(frozen=True)
class QuickstartSize:
    products: int
    image_size: int
    # Changes to the training config's sections (see ``training/pipeline.py``).
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    caption_items: int | None = None  # products scored per caption style (None: all of val)
    generation_limit: int = 150  # prompts and try-on samples per setting
    retrieval_queries: int = 1000
    preset: str = "mini"


SIZES = {
    "small": QuickstartSize(
        products=1000,
        image_size=128,
        # Step counts for 15 minutes on 2 CPU cores without native bf16 (fp32): 12.7 measured, where
        # longer ones (phase 1a 3.5 epochs, phase 2 1.0, caption head 0.3, VAE 200 steps,
        # text-to-image 120, try-on and design 25) took 16.2-17.4 minutes against 7.1 with bf16
        # (README, "The main job").
        training={
            "retrieval": {"phase1_epochs": 2.5, "phase2_epochs": 0.75, "log_every": 2},
            "captioning": {"epochs": 0.2, "log_every": 2},
            "generation": {"vae_steps": 120, "steps": 70, "tryon_steps": 20, "design_steps": 20, "log_every": 5},
            "phase2": {"itg_rows": 4, "q2i_rows": 8},
        },
        caption_items=50,
        generation_limit=32,
    ),
    # The size at which the quality targets are judged. Its step counts were set from per-step costs
    # to fit 90 minutes on 2 CPU cores with native bf16 (54-58 minutes with 4 epochs of phase 1a);
    # run end to end on an Intel Xeon without bf16 it took 119.6 minutes (README, "The main job").
    # configs/quickstart-full.toml repeats its training settings (a test keeps the two equal).
    "full": QuickstartSize(
        products=8000,
        image_size=128,
        training={
            # Without the Q-Former's dropout, phase 1a keeps gaining past 4 epochs (with it, 8 epochs
            # collapse in evaluation mode: 31.7 / 49.1), and phase 2 at 1e-4 keeps cross-modal recall:
            # random-100 R@1 91.4 / 87.7 after phase 1a, 90.3 / 85.5 after phase 2 (one seed; README,
            # "Phase 1a's length, and dropout").
            "model": {"qformer": {"dropout": 0.0}},
            "retrieval": {"phase1_epochs": 8.0, "phase2_epochs": 1.5, "phase2_lr": 1e-4},
            "captioning": {"epochs": 0.4},
            "generation": {"vae_steps": 800, "steps": 1200, "tryon_steps": 250, "design_steps": 250},
            # Keeping 0.75 of phase 2's change (blended with the model before it), two training seeds of
            # phase 2 on one model: random-100 t2i R@1 +1.5 / +1.0, description CIDEr +6.5 / +5.9, the
            # composed margin -0.4 / +0.5, composed average recall -1.9 / -1.3 (README, "Blending phase 2
            # with the model before it").
            "phase2": {"itg_rows": 4, "q2i_rows": 8, "blend": 0.75},
        },
    ),
    # A smoke test of the whole job in about a minute (random tiny networks: the figures mean nothing).
    "tiny": QuickstartSize(
        products=700,  # val needs 100 products for the random-100 protocol
        image_size=64,
        preset="tiny",
        training={
            "retrieval": {"phase1_epochs": 1.0, "phase2_epochs": 1.0, "batch_size": 16, "bf16": False},
            "captioning": {"epochs": 0.1, "batch_size": 4, "bf16": False},
            "generation": {
                "vae_steps": 4,
                "vae_batch_size": 8,
                "steps": 4,
                "tryon_steps": 3,
                "design_steps": 3,
                "batch_size": 8,
                "bf16": False,
            },
            "phase2": {"itg_rows": 4, "q2i_rows": 8},
        },
        caption_items=8,
        generation_limit=6,
        retrieval_queries=50,
    ),
}


class Clock:
    """Seconds per stage, for the report."""

    def __init__(self, progress: bool):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.progress = progress

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.progress:
            print(f"[quickstart] {name} ...", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.stages[name] = round(time.perf_counter() - t0, 1)
        if self.progress:
            print(f"[quickstart] {name}: {self.stages[name]:.0f} s", flush=True)
        return result

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def training_config(data: Path, size: QuickstartSize, seed: int, progress: bool):
    from unifashion.config import from_dict
    from unifashion.training.pipeline import PipelineConfig

    raw: dict[str, Any] = {k: dict(v) for k, v in size.training.items()}
    raw["run"] = {"data": str(data), "preset": size.preset, "seed": seed, "checkpoint_every": 50, "progress": progress}
    return from_dict(PipelineConfig, raw, where="quickstart")


def run_quickstart(
    out: str | Path,
    size: str = "small",
    *,
    seed: int = 0,
    train_seed: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole job (see the module docstring); returns the report.

    ``seed`` draws the data (and the sample grids); ``train_seed`` (default: ``seed``) seeds every
    training stage, so a second run on the same data measures how far training alone moves each
    figure (``unifashion report RUN --spread-from SECOND_RUN``).
    """
    if size not in SIZES:
        raise ConfigError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    train_seed = seed if train_seed is None else train_seed
    spec = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(progress)
    data, model = out / "data", out / "model"
    clock.run("data", lambda: _write_data(data, spec, seed, progress))

    from unifashion.training.pipeline import finished_summary, train_pipeline

    cfg = training_config(data, spec, train_seed, progress)
    stage_copies = out / "stages"

    def keep_phase1a(stage: str, folder: Path) -> None:
        if stage == "phase1a":  # the CMR row "after phase 1a" of the report
            shutil.rmtree(stage_copies / "phase1a", ignore_errors=True)
            shutil.copytree(folder, stage_copies / "phase1a")

    summary = finished_summary(model, cfg) if resume else None
    if summary is None:
        work_exists = (out / "model.work" / "progress.json").is_file()
        summary = clock.run(
            "training",
            lambda: train_pipeline(cfg, model, resume=resume and work_exists, on_stage_end=keep_phase1a),
        )
    results: dict[str, Any] = {}

    def evaluate(key: str, name: str, fn) -> None:
        results[key] = clock.run(name, fn)
        atomic_write_json(out / "results.json", results)  # what is measured is kept if a later step fails

    # Captioning first: when it captions every val product, its descriptions are the candidate
    # library of caption-assisted composed retrieval, instead of generating them a second time.
    evaluate("captioning", "eval captioning", lambda: _eval_captioning(model, data, spec, progress))
    library = _candidate_library(results["captioning"]["val"], data, out / "candidate_captions.json")
    evaluate("retrieval", "eval retrieval", lambda: _eval_retrieval(model, data, spec, progress, library=library))
    if (stage_copies / "phase1a").is_dir():
        evaluate(
            "retrieval_phase1a",
            "eval retrieval after phase 1a",
            lambda: _eval_retrieval(stage_copies / "phase1a", data, spec, progress, cir=False),
        )
    evaluate("generation", "eval generation", lambda: _eval_generation(model, data, spec, out, progress))
    samples = clock.run("samples", lambda: draw_samples(model, data, out / "samples", seed))
    # A searchable catalog of every product, for `unifashion serve` (the shop's own descriptions
    # go into its caption index: captioning every product would add minutes).
    from unifashion.catalog.build import build_catalog

    clock.run("catalog", lambda: build_catalog(model, data, out / "catalog", captions="data", progress=progress))
    report = build_report(
        results, samples, summary, spec, size, model, data, clock, seeds={"seed": seed, "train_seed": train_seed}
    )
    atomic_write_json(out / "report.json", report)
    from unifashion.evaluation.report import render_report

    render_report(report, out)
    return report


def _write_data(folder: Path, spec: QuickstartSize, seed: int, progress: bool) -> dict[str, Any]:
    """FashionSynth at ``folder`` (kept when it was written with the same settings)."""
    from unifashion.data.synth.generate import SynthConfig, write_fashionsynth

    cfg = SynthConfig(products=spec.products, seed=seed, size=spec.image_size)
    stamp = folder / "quickstart.json"
    wanted = {"products": spec.products, "seed": seed, "size": spec.image_size}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == wanted:
        return {"reused": str(folder)}
    shutil.rmtree(folder, ignore_errors=True)
    summary = write_fashionsynth(folder, cfg, progress=progress)
    atomic_write_json(stamp, wanted)
    return summary


def _eval_retrieval(
    model: Path, data: Path, spec: QuickstartSize, progress: bool, cir: bool = True, library: Path | None = None
) -> dict[str, Any]:
    from unifashion.evaluation.retrieval import evaluate_model

    # The phase-1a row (cir=False) is a baseline of Tables 1 and 4: ITC ranking only. The report
    # reads no ITM re-ranking of it, cross-modal or composed, so none runs (the composed one took
    # ~90 % of the row's time).
    no_rerank = {} if cir else {"rerank_k": 0, "cir_rerank_k": 0}
    result = evaluate_model(
        model,
        data,
        ["val"],
        candidate_captions=library,
        with_captions=cir,
        max_queries=spec.retrieval_queries,
        progress=progress,
        **no_rerank,
    )
    return result["splits"]["val"]


def _eval_captioning(model: Path, data: Path, spec: QuickstartSize, progress: bool) -> dict[str, Any]:
    from unifashion.evaluation.captioning import evaluate_captioning

    # `novel` (colour-category pairs never seen in training) in the description style only.
    result = evaluate_captioning(
        model,
        data,
        ["val", "novel"],
        styles=("description", "title"),
        split_styles={"novel": ("description",)},
        max_items=spec.caption_items,
        progress=progress,
    )
    return result["splits"]


def _candidate_library(captioning_val: dict[str, Any], data: Path, path: Path) -> Path | None:
    """The val descriptions of the captioning evaluation as ``{product id: caption}`` at ``path``,
    when they cover every val product (else None: the retrieval evaluation generates its own)."""
    from unifashion.data.formats import read_split

    generated = captioning_val.get("styles", {}).get("description", {}).get("generated", {})
    ids = {p.id for p in read_split(data, "val").products}
    if not ids or not ids <= generated.keys():
        return None
    atomic_write_json(path, {pid: generated[pid] for pid in sorted(ids)})
    return path


def _eval_generation(model: Path, data: Path, spec: QuickstartSize, out: Path, progress: bool) -> dict[str, Any]:
    from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation

    cfg = GenerationEvalConfig(limit=spec.generation_limit, samples_dir=str(out / "samples" / "generation"))
    return evaluate_generation(model, data, ["val"], cfg, progress=progress)["splits"]["val"]


# ---------------------------------------------------------------------------
# sample grids


def draw_samples(model_dir: Path, data_dir: Path, folder: Path, seed: int, n: int = 4, top: int = 5) -> dict[str, Any]:
    """Searches, captions, generations and try-ons of the trained model on ``val``, as image files
    under ``folder`` and the JSON that ``report.html`` lays out (paths relative to ``folder``'s parent)."""
    import numpy as np

    from unifashion.data.formats import read_split
    from unifashion.pipelines.unifashion import UniFashion

    folder.mkdir(parents=True, exist_ok=True)
    uf = UniFashion.from_pretrained(model_dir)
    val = read_split(data_dir, "val")
    products = [p for p in val.products if p.images and p.captions]
    if not products:
        return {}
    rel = folder.parent

    def save(img, name: str) -> str:
        path = folder / name
        img.save(path)
        return str(path.relative_to(rel))

    def catalog(i: int) -> str:
        from PIL import Image

        return save(Image.open(products[i].images[0].path).convert("RGB"), f"catalog_{products[i].id}.png")

    image_embeds = uf.encode_images([p.images[0].path for p in products])
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(products), size=min(n, len(products)), replace=False).tolist())
    samples: dict[str, Any] = {}

    queries = [products[i].captions[0] for i in picks]
    scores = uf.similarity(uf.encode_texts(queries), image_embeds)
    samples["text_search"] = [
        {
            "query": q,
            "target_id": products[i].id,
            "results": [
                {"image": catalog(j), "id": products[j].id, "match": j == i}
                for j in scores[k].topk(min(top, len(products))).indices.tolist()
            ],
        }
        for k, (i, q) in enumerate(zip(picks, queries, strict=True))
    ]

    by_id = {p.id: k for k, p in enumerate(products)}
    triplets = [t for t in val.triplets if t.target in by_id and t.reference in by_id and t.captions][:n]
    if triplets:
        texts = [t.query_text() for t in triplets]  # the Fashion-IQ query of the evaluation
        composed = uf.encode_composed([products[by_id[t.reference]].images[0].path for t in triplets], texts)
        scores = uf.similarity(composed, image_embeds)
        samples["composed_search"] = [
            {
                "reference": catalog(by_id[t.reference]),
                "text": text,
                "target": catalog(by_id[t.target]),
                "results": [
                    {"image": catalog(j), "id": products[j].id, "match": products[j].id == t.target}
                    for j in scores[k].topk(min(top, len(products))).indices.tolist()
                ],
            }
            for k, (t, text) in enumerate(zip(triplets, texts, strict=True))
        ]
    if "captioning" in uf.heads:
        captions = uf.caption([products[i].images[0].path for i in picks])
        samples["captions"] = [
            {"image": catalog(i), "caption": c, "truth": products[i].captions[0]}
            for i, c in zip(picks, captions, strict=True)
        ]
    if "text2image" in uf.heads:
        samples["generated"] = [
            {"prompt": q, "image": save(uf.generate(text=q, seed=seed)[0], f"generated_{k}.png")}
            for k, q in enumerate(queries)
        ]
        if triplets:
            samples["composed_generated"] = [
                {
                    "reference": catalog(by_id[t.reference]),
                    "text": text,
                    "image": save(
                        uf.generate(text=text, image=products[by_id[t.reference]].images[0].path, seed=seed)[0],
                        f"composed_{k}.png",
                    ),
                }
                for k, (t, text) in enumerate(zip(triplets, texts, strict=True))
            ]
    tryons = [s for s in val.tryon if not s.paired and s.agnostic_mask is not None and s.pose][:n]
    if "tryon" in uf.heads and tryons:
        from PIL import Image

        rows = []
        for k, s in enumerate(tryons):
            result = uf.try_on(
                s.person.path,
                s.cloth.path,
                mask=s.agnostic_mask.path,
                pose=s.pose,
                pose_format=s.pose_format,
                seed=seed,
            )[0]
            rows.append(
                {
                    "person": save(Image.open(s.person.path).convert("RGB"), f"person_{k}.png"),
                    "cloth": save(Image.open(s.cloth.path).convert("RGB"), f"cloth_{k}.png"),
                    "output": save(result, f"tryon_{k}.png"),
                }
            )
        samples["tryon"] = rows
    return samples


# ---------------------------------------------------------------------------
# report.json


def _pick(d: dict, *keys: str) -> dict:
    return {k: d[k] for k in keys if isinstance(d, dict) and k in d}


def _recalls(x: dict) -> dict:
    return {d: _pick(x.get(d, {}), "R@1", "R@5", "R@10") for d in ("i2t", "t2i")}


def build_report(
    results: dict,
    samples: dict,
    summary: dict,
    spec: QuickstartSize,
    size: str,
    model: Path,
    data: Path,
    clock: Clock,
    seeds: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The report: the figures of every task under the keys of ``report.json``'s contract."""
    from unifashion.evaluation.retrieval import CIR_BASELINES

    r, c, g = results["retrieval"], results["captioning"]["val"], results["generation"]
    report: dict[str, Any] = {
        "title": f"UniFashion quickstart ({size})",
        "size": size,
        "preset": spec.preset,
        "model": str(model),
        "data": _data_counts(data),
    }
    cmr = r["cmr"]
    report["cmr"] = {"full": _recalls(cmr["full"])}
    if "itc" in cmr.get("random100", {}):
        report["cmr"]["random100"] = _recalls(cmr["random100"]["itc"])
        if "itc_itm" in cmr["random100"]:
            report["cmr"]["random100_itm_rerank"] = _recalls(cmr["random100"]["itc_itm"])
    early = results.get("retrieval_phase1a")
    if early and "itc" in early["cmr"].get("random100", {}):
        report["cmr"]["baseline"] = {
            "name": "same model after phase 1a only",
            "random100": _recalls(early["cmr"]["random100"]["itc"]),
        }
    cir = r["cir"]
    if "composed" in cir:
        report["cir"] = {
            "model_variant": "composed query Z_R (Eq. 9), ITC",
            "average": cir["composed"]["average"],
            "per_category": {k: v for k, v in cir["composed"]["per_category"].items()},
            "baselines": {b: cir[b]["average"] for b in CIR_BASELINES},
            "variants": cir.get("variants", {}),
            "itm_rerank": cir.get("composed_itm", {}).get("average"),
            "gallery": cir.get("gallery", {}),
            "saturated": cir.get("saturated", {}),
        }
        # The same baselines with the Q-Former after phase 1a: phase 2 trains the composed query, and
        # the embeddings it leaves can serve the baselines worse than phase 1a's did, so the margin of
        # the targets is taken over the best baseline of either.
        early_cir = (early or {}).get("cir", {})
        if all(b in early_cir for b in ("composed", *CIR_BASELINES)):
            report["cir"]["after_phase1a"] = {
                "composed": early_cir["composed"]["average"],
                "baselines": {b: early_cir[b]["average"] for b in CIR_BASELINES},
            }
    desc = c["styles"]["description"]
    keys = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
    report["captioning"] = {
        **_pick(desc["model"], *keys),
        "style": "description",
        "items": desc["items"],
        "baseline_nn": _pick(desc.get("nearest_neighbour", {}), *keys),
        "title": _pick(c["styles"].get("title", {}).get("model", {}), *keys),
    }
    for split, caps in results["captioning"].items():
        desc = caps["styles"].get("description", {})
        if "model" in desc:
            report["captioning"].setdefault("attributes", {})[split] = {
                who: _pick(desc.get(key, {}).get("attributes", {}), "correct", "wrong", "missing")
                for who, key in (("model", "model"), ("nearest_neighbour", "nearest_neighbour"))
            }
        if split != "val" and "model" in desc:
            report["captioning"][split] = {
                **_pick(desc["model"], *keys),
                "items": desc["items"],
                "baseline_nn": _pick(desc.get("nearest_neighbour", {}), *keys),
            }
    text = g["text"]
    gen = {
        **_pick(text, "fid_effnet", "colour_accuracy", "category_accuracy", "itc_score", "seconds_per_image"),
        "kid_effnet": text.get("kid_effnet_x1000", 0.0) / 1000.0,
        "sampler": f"{text['sampler']}-{text['steps']}",
        "n": text["n"],
        "real": g.get("real_images", {}),
        "composed": _pick(g.get("composed", {}), "fid_effnet", "colour_accuracy", "category_accuracy", "itc_score"),
        "samplers": {
            name: _pick(s, "fid_effnet", "seconds_per_image", "colour_accuracy")
            for name, s in g.get("samplers", {}).items()
        },
    }
    for task in ("tryon", "design"):
        if task in g:
            gen[task] = {
                setting: {
                    **_pick(v, "ssim", "l1", "fid_effnet", "colour_accuracy"),
                    "outside_mask_change": v.get("outside_mask_change_pasted"),
                    "outside_mask_change_raw": v.get("outside_mask_change_raw"),
                }
                for setting, v in g[task].items()
            }
    report["generation"] = gen
    report["samples"] = samples
    report["curves"] = {
        p.stem.removeprefix("losses_"): str(p.relative_to(model.parent))
        for p in sorted((model / LOGS_FOLDER).glob("losses_*.csv"))
    }
    training_seconds = {k: v["seconds"] for k, v in summary.items() if isinstance(v, dict) and "seconds" in v}
    report["timing"] = {
        "total_seconds": clock.total(),
        "stages": dict(clock.stages),
        "training_stages": training_seconds,
    }
    report["settings"] = {
        "products": spec.products,
        "image_size": spec.image_size,
        "split": "val",
        "generation_limit": spec.generation_limit,
        "caption_items": spec.caption_items or "all",
        "retrieval_queries": spec.retrieval_queries,
        **(seeds or {}),
    }
    report["targets"] = evaluate_targets(report)
    report["notes"] = _notes(report)
    return report


def _data_counts(data: Path) -> dict[str, Any]:
    from unifashion.data.formats import dataset_stats

    stats = dataset_stats(data)
    splits = {name: s["totals"].get("products", 0) for name, s in stats["splits"].items()}
    triplets = sum(s["totals"].get("triplets", 0) for s in stats["splits"].values())
    return {"products": sum(splits.values()), "triplets": triplets, "splits": splits}


def _notes(report: dict) -> list[str]:
    notes = []
    r100 = report["cmr"].get("random100")
    if r100:
        notes.append(
            f"Cross-modal random-100 R@1: image->text {r100['i2t'].get('R@1', 0):.1f}, "
            f"text->image {r100['t2i'].get('R@1', 0):.1f} (target at the full size: 85 both ways)."
        )
    cir = report.get("cir")
    margin = cir_margin(report)
    if cir and margin is not None:
        where = " (the final model's baselines and those after phase 1a)" if "after_phase1a" in cir else ""
        notes.append(
            f"Composed retrieval: {cir['average']['avg']:.1f}, {margin:+.1f} over the best baseline of the run"
            f"{where} (target at the full size: +10)."
        )
    gen = report["generation"]
    if "colour_accuracy" in gen:
        notes.append(
            f"Text-to-image colour accuracy {gen['colour_accuracy']:.1f} % (target at the full size: 80 %); "
            "fid_effnet uses EfficientNet-Lite0 features and is not comparable with published FID."
        )
    if report["size"] == "small":
        notes.append(
            "This is the small size: the figures show the pipeline works end to end; the quality targets "
            "are judged with --size full."
        )
    return notes

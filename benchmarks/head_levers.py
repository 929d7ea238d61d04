"""Image-head training levers side by side: the same head trained under each variant, then measured.

    python benchmarks/head_levers.py --model MODEL --data DIR --task tryon --steps 500 \\
        --variant "queries only:tryon_cloth_latent=false" --variant "cloth latent:tryon_cloth_latent=true"
    python benchmarks/head_levers.py --model MODEL --data DIR --task text2image --steps 400,800 \\
        --variant "plain:" --variant "min-snr 5:min_snr_gamma=5"

MODEL is a checkpoint with a VAE (a quickstart's ``model/``); each variant trains a fresh head of
``--task`` on its Q-Former and VAE, from the same seed, with the fields of GenerationTrainingConfig
that the variant sets (``NAME:KEY=VALUE,KEY=VALUE``; values in TOML syntax; ``diffusion.KEY`` sets a
field of the head's DiffusionConfig, e.g. ``diffusion.prediction_type="v_prediction"``). Several ``--steps``
give a curve (one run per length, each with its own schedule); ``--eval-at`` measures one run on the way
instead (its EMA weights at those steps: with ``lr_schedule="constant"`` each point is what a run of
that length would give, because a constant-rate run is the prefix of a longer one):

    python benchmarks/head_levers.py --model MODEL --data DIR --task tryon --steps 3000 --eval-at 250,500,1000,2000 \\
        --variant 'queries only:lr_schedule="constant"'

Measured on ``--split``:

- text2image: garment colour accuracy of the first ``--limit`` captioned products' first captions;
- tryon / design: garment colour inside the mask, paired and unpaired, ``--limit`` samples each;

all sampled with DPM-Solver++ 20 steps. Prints one JSON line per run, then the whole table.
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.checkpoint import VAE_FOLDER
from unifashion.config import DiffusionConfig, GenerationTrainingConfig, from_dict, to_dict
from unifashion.data.formats import read_split
from unifashion.evaluation.generation import accuracy, garment_colour, person_condition, person_figures
from unifashion.models.generator import Generator, to_pixels
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.generation import fit_image, paste_back, sample_inputs, text_condition
from unifashion.training import phase1
from unifashion.training.data import inpaint_data, person_hw, product_hw, text2image_data
from unifashion.training.loop import LossLog, seed_everything


def variant(text: str) -> tuple[str, dict]:
    name, _, sets = text.partition(":")
    fields = {}
    for item in filter(None, (s.strip() for s in sets.split(","))):
        key, _, value = item.partition("=")
        fields[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    return name.strip(), fields


def sheet(path: Path | None, rows: list[list[np.ndarray]]) -> None:
    """A PNG of the first 12 rows, images side by side (each padded to the tallest)."""
    if path is None:
        return
    from PIL import Image

    rows = rows[:12]
    h = max(im.shape[0] for r in rows for im in r)
    padded = [[np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=255) for im in r] for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([np.concatenate(r, axis=1) for r in padded], axis=0)).save(path)


def measure_text(model, gen, products, samples: Path | None) -> dict:
    states, mask = text_condition(model, [p.captions[0] for p in products])
    latents = gen.sample(states, mask, sampler="dpm++", steps=20, seed=0)
    images = to_pixels(gen.decode_latents(latents))
    sheet(samples, [[im] for im in images])
    colours = [garment_colour(im) for im in images]
    return {"colour_accuracy": round(accuracy(colours, [p.attributes["colour"] for p in products]), 1)}


def measure_person(model, gen, samples, by_id, cache, sheets: Path | None) -> dict:
    out = {}
    for setting, paired in (("paired", True), ("unpaired", False)):
        chosen = [s for s in samples if s.paired == paired]
        inputs = [sample_inputs(gen, chosen[i : i + 64]) for i in range(0, len(chosen), 64)]
        extra = torch.cat([x.extra for x in inputs])
        masks = np.concatenate([x.masks for x in inputs])
        persons = np.stack([fit_image(s.person.open(), gen.image_hw) for s in chosen])
        states, mask = person_condition(gen.task, model, chosen, cache)
        latents = gen.sample(states, mask, extra, sampler="dpm++", steps=20, seed=0)
        pasted = paste_back(to_pixels(gen.decode_latents(latents)), persons, masks)
        cloths = [fit_image(s.cloth.open(), gen.image_hw) for s in chosen[:12]]
        rows = [list(r) for r in zip(persons, cloths, pasted, strict=False)]  # the first 12
        sheet(sheets and sheets.with_name(f"{sheets.stem}_{setting}.png"), rows)
        figures = person_figures(paired, chosen, pasted, pasted, persons, masks, by_id)
        out[setting] = {"n": figures["n"], "colour_accuracy": figures["colour_accuracy"]}
        if paired:
            out[setting]["colour_accuracy_real"] = figures["colour_accuracy_real"]
    return out


class CurveStage(phase1.UNetStage):
    """The U-Net stage of ``phase1.train_head`` that also measures its EMA weights after each step
    count in ``at`` (below its last step), then goes on training from the weights it had. Each point
    is (steps, figures, seconds of training so far, measuring not counted)."""

    def __init__(self, generator, draw, cfg, total_steps: int, *, at: set[int], measure):
        super().__init__(generator, draw, cfg, total_steps)
        self.at, self.measure, self.steps_done, self.points = at, measure, 0, []
        self.started, self.measuring = time.perf_counter(), 0.0

    def after_step(self) -> None:
        super().after_step()
        self.steps_done += 1
        if self.steps_done not in self.at or self.steps_done >= self.total_steps:
            return
        t0 = time.perf_counter()
        trained = t0 - self.started - self.measuring
        raw = {k: p.detach().clone() for k, p in self.trainable.named_parameters()}
        rng = torch.get_rng_state()
        if self.ema is not None:
            self.ema.copy_to(self.trainable)
        self.eval()
        with torch.no_grad():
            figures = self.measure(self.steps_done)
            for k, p in self.trainable.named_parameters():
                p.copy_(raw[k])
        torch.set_rng_state(rng)
        self.train()
        self.measuring += time.perf_counter() - t0
        self.points.append((self.steps_done, figures, trained))


def train_curve(model, head, prepared, steps: int, cfg, at: set[int], measure) -> tuple[dict, list, float]:
    """``phase1.train_head`` with ``measure(step)`` called on the way (``CurveStage``): the last
    losses, the points measured (``CurveStage.points``) and the seconds of training in all."""
    stages = []

    def make(*args):
        stages.append(CurveStage(*args, at=at, measure=measure))
        return stages[-1]

    last = phase1.train_head(model, head, prepared, steps, cfg, LossLog(None), progress=False, stage=make)
    stage = stages[-1]
    return last, stage.points, time.perf_counter() - stage.started - stage.measuring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a checkpoint with vae/ (a quickstart's model/)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--task", choices=("text2image", "tryon", "design"), required=True)
    ap.add_argument("--steps", default="500", help="U-Net steps, comma-separated (one run per length)")
    ap.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument(
        "--eval-at",
        default="",
        help="also measure each run at these step counts on the way (comma-separated; "
        'with lr_schedule="constant" each point equals a run of that length)',
    )
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=150, help="prompts / try-on samples per setting")
    ap.add_argument("--json", default=None, help="write the table here too")
    ap.add_argument("--samples", default=None, help="folder for a sample sheet (PNG) of each run")
    ap.add_argument("--save", default=None, help="folder to keep each run's head in (without the VAE)")
    ap.add_argument(
        "--text2image",
        default=None,
        help='a text2image head folder that variants with inpaint_init="text2image" start from '
        "(default: MODEL's own generator/)",
    )
    args = ap.parse_args()

    model = RetrievalModel.from_pretrained(args.model).eval()
    model.qformer.requires_grad_(False)
    vae = phase1_vae(Path(args.model))
    dcfg = model.config.diffusion
    train, val = read_split(args.data, "train"), read_split(args.data, args.split)
    cache = FeatureCache(model.vision)
    by_id = {**train.product_map(), **val.product_map()}
    products = [p for p in val.products if p.captions and p.attributes.get("colour")][: args.limit]
    samples = [s for s in val.tryon if s.paired and (args.task == "tryon" or s.sketch is not None)][: args.limit]
    samples += [s for s in val.tryon if not s.paired and (args.task == "tryon" or s.sketch is not None)][: args.limit]
    hw = product_hw(dcfg.image_size) if args.task == "text2image" else person_hw(dcfg.image_size)
    at = {int(s) for s in args.eval_at.split(",") if s}
    rows = []
    for steps in (int(s) for s in args.steps.split(",") if s):
        for name, fields in (variant(v) for v in args.variant):
            training = {k: v for k, v in fields.items() if not k.startswith("diffusion.")}
            diffusion = {k.removeprefix("diffusion."): v for k, v in fields.items() if k.startswith("diffusion.")}
            cfg = from_dict(GenerationTrainingConfig, {**to_dict(GenerationTrainingConfig()), **training}, where=name)
            cfg = replace(cfg, tasks=(args.task,), log_every=10**9)
            head_dcfg = from_dict(DiffusionConfig, {**to_dict(dcfg), **diffusion}, where=f"{name}: diffusion")
            seed_everything(cfg.seed + 30)
            given = args.text2image and args.task != "text2image" and cfg.inpaint_init == "text2image"
            head = phase1.head_to_train(
                Path(args.model),
                args.task,
                head_dcfg,
                model.config.qformer.hidden_size,
                hw,
                vae,
                float(vae.config.scaling_factor),
                replace(cfg, inpaint_init="fresh") if given else cfg,
            )
            if given:
                phase1.start_from_text2image(
                    head, Generator.from_pretrained(args.text2image, Path(args.model) / VAE_FOLDER)
                )
            if args.task == "text2image":
                prepared = text2image_data(model, head, train, cache, progress=False)
            else:
                prepared = inpaint_data(model, head, train, cache, progress=False)
            slug = "".join(c if c.isalnum() else "-" for c in name)

            def measure(done: int, head=head, slug=slug) -> dict:
                sheets = Path(args.samples) / f"{args.task}_{slug}_{done}.png" if args.samples else None
                if args.task == "text2image":
                    return measure_text(model, head, products, sheets)
                return measure_person(model, head, samples, by_id, cache, sheets)

            last, points, seconds = train_curve(model, head, prepared, steps, cfg, at, measure)
            head.eval()
            with torch.no_grad():
                if args.save:
                    head.save_pretrained(Path(args.save) / f"{args.task}_{slug}_{steps}", with_vae=False)
                points.append((steps, measure(steps), seconds))
            for done, figures, trained in points:
                rows.append(
                    {
                        "variant": name,
                        "set": fields,
                        "steps": done,
                        "of_run": steps,
                        "train_seconds": round(trained, 1),
                        "seconds_per_step": round(seconds / steps, 3),
                        **({"last_loss": round(float(last.get("loss", float("nan"))), 4)} if done == steps else {}),
                        **figures,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    table = {"model": args.model, "data": args.data, "task": args.task, "split": args.split, "runs": rows}
    print(json.dumps(table, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


def phase1_vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder / VAE_FOLDER), use_safetensors=True).eval()


if __name__ == "__main__":
    main()

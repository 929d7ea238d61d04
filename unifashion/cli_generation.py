"""``unifashion train generation``, ``eval generation``, ``generate``, ``tryon`` and ``design``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unifashion.utils.errors import UniFashionError


def _tasks(text: str) -> tuple[str, ...]:
    from unifashion.models.generator import check_task

    return tuple(check_task(t.strip()) for t in text.split(",") if t.strip())


def cmd_train_generation(args: argparse.Namespace) -> int:
    from unifashion.config import GenerationTrainingConfig
    from unifashion.training.generation import train_generation

    d = GenerationTrainingConfig()
    cfg = GenerationTrainingConfig(
        tasks=_tasks(args.tasks),
        vae_steps=args.vae_steps,
        reuse_vae=not args.retrain_vae,
        steps=args.steps,
        tryon_steps=args.tryon_steps,
        design_steps=args.design_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
        ema_decay=args.ema_decay,
        noisy_share=args.noisy_share,
        noise_offset=args.noise_offset,
        continue_heads=args.continue_heads,
        vae_batch_size=d.vae_batch_size,
    )
    summary = train_generation(args.model, args.data, args.out, cfg=cfg, fmt=args.format, split=args.split)
    print(json.dumps(summary, indent=2))
    print(f"model -> {args.out}")
    return 0


def cmd_eval_generation(args: argparse.Namespace) -> int:
    from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation

    sweep = (
        tuple((s.split(":")[0], int(s.split(":")[1])) for s in args.sampler_sweep.split(",") if s)
        if args.sampler_sweep
        else ()
    )
    cfg = GenerationEvalConfig(limit=args.limit, sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance,
                               sampler_sweep=sweep, batch_size=args.batch_size, seed=args.seed,
                               samples_dir=args.samples, inception_weights=args.inception_weights,
                               clip_model=args.clip_model)  # fmt: skip
    splits = [s for s in args.split.split(",") if s]
    result = evaluate_generation(args.model, args.data, splits, cfg, args.format, args.json)
    for split, r in result["splits"].items():
        print(f"[{split}]")
        for key in ("text", "composed", "composed_text_only", "real_images"):
            if key in r:
                x = r[key]
                print(f"  {key:<19} " + "  ".join(f"{k} {v}" for k, v in x.items() if isinstance(v, int | float)))
        for name, x in r.get("samplers", {}).items():
            print(f"  sampler {name:<10} fid_effnet {x['fid_effnet']:.2f}  colour {x['colour_accuracy']:.1f}  "
                  f"s/image {x['seconds_per_image']:.3f}")  # fmt: skip
        for task in ("tryon", "design"):
            for setting, x in r.get(task, {}).items():
                print(
                    f"  {task} {setting:<9} "
                    + "  ".join(f"{k} {v}" for k, v in x.items() if isinstance(v, int | float))
                )
    if args.json:
        print(f"results -> {args.json}")
    return 0


def _sampling_args(p: argparse.ArgumentParser) -> None:
    from unifashion.models.generator import SAMPLERS

    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the model's (dpm++)")
    p.add_argument("--steps", type=int, default=None, help="default: the model's (20)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=1, help="images per request (seeds S, S+1, ...)")
    p.add_argument("--out", required=True, help="output PNG (with --num > 1: OUT_0.png, OUT_1.png, ...)")


def _save(images, out: str) -> list[str]:
    from unifashion.utils.io import atomic_write_bytes

    path = Path(out)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UniFashionError(f"--out: expected an image file name (.png, .jpg, .webp), got {out}")
    names = (
        [path] if len(images) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(images))]
    )
    import io

    for im, name in zip(images, names, strict=True):
        buf = io.BytesIO()
        im.save(buf, format={".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG"))
        atomic_write_bytes(name, buf.getvalue())
    return [str(n) for n in names]


def _repeat(gen_fn, num: int, seed: int) -> list:
    out = []
    for k in range(num):
        out += gen_fn(seed + k)
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from unifashion.generation import generate_images, load_generation_model

    if not args.text and not args.image:
        raise UniFashionError("generate: give --text, --image, or both")
    model, gen = load_generation_model(args.model, "text2image")
    images = _repeat(lambda s: generate_images(model, gen, texts=[args.text] if args.text else None,
                                               images=[args.image] if args.image else None, sampler=args.sampler,
                                               steps=args.steps, guidance_scale=args.guidance, seed=s),
                     args.num, args.seed)  # fmt: skip
    for name in _save(images, args.out):
        print(name)
    return 0


def _person_inputs(args, gen):
    from unifashion.data.records import ImageRef
    from unifashion.generation import inpaint_inputs

    return inpaint_inputs(
        gen,
        persons=[ImageRef(args.person)],
        masks=[ImageRef(args.mask)],
        poses=[args.pose],
        agnostics=[ImageRef(args.agnostic) if args.agnostic else None],
        sketches=[ImageRef(args.sketch)] if getattr(args, "sketch", None) else None,
        pose_format=args.pose_format,
    )


def cmd_inpaint(args: argparse.Namespace) -> int:
    from unifashion.data.records import ImageRef
    from unifashion.generation import inpaint_images, load_generation_model

    task = args.command
    model, gen = load_generation_model(args.model, task)
    for name in ("person", "mask") + (("cloth",) if task == "tryon" else ("sketch",)):
        ImageRef(getattr(args, name)).verify()
    if not Path(args.pose).is_file():
        raise UniFashionError(f"--pose: no such file {args.pose}")
    inputs = _person_inputs(args, gen)
    images = _repeat(lambda s: inpaint_images(model, gen, inputs, cloths=[args.cloth] if task == "tryon" else None,
                                              texts=[args.text] if task == "design" else None, paste=not args.no_paste,
                                              sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance,
                                              seed=s), args.num, args.seed)  # fmt: skip
    for name in _save(images, args.out):
        print(name)
    return 0


def add_generation_commands(sub, train_sub, eval_sub) -> None:
    from unifashion.config import GenerationTrainingConfig
    from unifashion.data.formats import FORMATS

    d = GenerationTrainingConfig()
    p = train_sub.add_parser("generation", help="phase 1b of the image head: VAE, then U-Nets on q2I, Q-Former frozen")
    p.add_argument("--model", required=True, help="a retrieval checkpoint (or one with other heads)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="checkpoint to write (the model + vae/ + the heads)")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--split", default="train")
    p.add_argument("--tasks", default=",".join(d.tasks), help="heads to train: text2image,tryon,design")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--retrain-vae", action="store_true", help="train a new VAE even if the checkpoint has one")
    p.add_argument("--steps", type=int, default=d.steps, help="text2image U-Net steps")
    p.add_argument("--tryon-steps", type=int, default=d.tryon_steps)
    p.add_argument("--design-steps", type=int, default=d.design_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="0: keep the last weights")
    p.add_argument("--noisy-share", type=float, default=d.noisy_share,
                   help="share of rows with t from the noisiest fifth of the schedule")  # fmt: skip
    p.add_argument("--noise-offset", type=float, default=d.noise_offset,
                   help="std of the per-channel constant added to the training noise (offset noise)")  # fmt: skip
    p.add_argument("--continue", dest="continue_heads", action="store_true",
                   help="start each head from the checkpoint's head of that task instead of fresh weights")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_train_generation)

    p = eval_sub.add_parser("generation", help="fid_effnet/kid_effnet, colour and category accuracy, samplers, try-on")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", help="one split or several, comma-separated")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--json", default=None)
    p.add_argument("--limit", type=int, default=300, help="prompts / try-on samples per setting")
    p.add_argument("--sampler", default="dpm++")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--sampler-sweep", default="plms:50,ddim:20,dpm++:20",
                   help="samplers compared on the text prompts, NAME:STEPS comma-separated ('' = off)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", default=None, help="write sample sheets (PNG) to this folder")
    p.add_argument("--inception-weights", default=None,
                   help="safetensors of the published FID's Inception-v3: adds fid_inception / kid_inception")  # fmt: skip
    p.add_argument("--clip-model", default=None,
                   help="CLIP checkpoint folder (config.json + safetensors + processor files): adds clip_score, "
                        "the paper's CLIP-S as torchmetrics computes it")  # fmt: skip
    p.set_defaults(func=cmd_eval_generation)

    p = sub.add_parser("generate", help="generate a garment image from a text, a reference image, or both")
    p.add_argument("--model", required=True)
    p.add_argument("--text", default=None)
    p.add_argument("--image", default=None, help="reference image (with --text: composed, 'this, but ...')")
    _sampling_args(p)
    p.set_defaults(func=cmd_generate)

    for task, helptext in (("tryon", "dress a person in a garment (virtual try-on)"),
                           ("design", "draw a person wearing a garment from a text and a sketch")):  # fmt: skip
        p = sub.add_parser(task, help=helptext)
        p.add_argument("--model", required=True)
        p.add_argument("--person", required=True, help="person image")
        p.add_argument("--mask", required=True, help="region to paint (white), e.g. VITON-HD's agnostic-mask")
        p.add_argument("--pose", required=True, help="keypoints JSON (OpenPose, or Dress Code with --pose-format)")
        p.add_argument("--pose-format", default="openpose", choices=("openpose", "dresscode"))
        p.add_argument("--agnostic", default=None, help="person without the garment (default: greyed under the mask)")
        if task == "tryon":
            p.add_argument("--cloth", required=True, help="garment image")
        else:
            p.add_argument("--text", required=True, help="text describing the garment")
            p.add_argument("--sketch", required=True, help="garment sketch aligned with the person")
        p.add_argument("--no-paste", action="store_true", help="keep the raw output (do not paste the person back)")
        _sampling_args(p)
        p.set_defaults(func=cmd_inpaint)

"""``unifashion caption | generate | tryon | design``: a trained model on the user's images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unifashion.cli.args import add_decoding_arguments, add_device_argument
from unifashion.utils.errors import UniFashionError


def cmd_caption(args: argparse.Namespace) -> int:
    from unifashion import UniFashion

    model = UniFashion.from_pretrained(args.model, device=args.device)
    captions = model.caption(
        args.images,
        args.style,
        decoding=args.decoding,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        bf16=not args.no_bf16,
    )
    if args.json:
        print(json.dumps([{"image": i, "caption": c} for i, c in zip(args.images, captions, strict=True)], indent=2))
    else:
        for image, caption in zip(args.images, captions, strict=True):
            print(f"{image}\t{caption}")
    return 0


def _sampling_args(p: argparse.ArgumentParser) -> None:
    from unifashion.models.generator import SAMPLERS

    p.add_argument(
        "--sampler", default=None, choices=SAMPLERS, help="default: the model's (its DiffusionConfig.sampler)"
    )
    p.add_argument("--steps", type=int, default=None, help="default: the model's (its DiffusionConfig.sampling_steps)")
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


def _sampling(args: argparse.Namespace) -> dict:
    return {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "seed": args.seed, "n": args.num}


def cmd_generate(args: argparse.Namespace) -> int:
    from unifashion import UniFashion

    if not args.text and not args.image:
        raise UniFashionError("generate: give --text, --image, or both")
    model = UniFashion.from_pretrained(args.model, device=args.device)
    images = model.generate(text=args.text or None, image=args.image, **_sampling(args))
    for name in _save(images, args.out):
        print(name)
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    """``tryon`` and ``design``: the person's inputs, then the head of that task."""
    from unifashion import UniFashion

    task = args.command
    model = UniFashion.from_pretrained(args.model, device=args.device)
    model.image_head(task)  # a model without the head says which command adds it, before any input is read
    if not Path(args.pose).is_file():
        raise UniFashionError(f"--pose: no such file {args.pose}")
    person = {
        "person": args.person,
        "mask": None if args.mask == "auto" else args.mask,
        "garment": args.garment,
        "pose": args.pose,
        "pose_format": args.pose_format,
        "agnostic": args.agnostic,
        "paste": not args.no_paste,
    }
    if task == "tryon":
        images = model.try_on(cloth=args.cloth, **person, **_sampling(args))
    else:
        images = model.design(text=args.text, sketch=args.sketch, **person, **_sampling(args))
    for name in _save(images, args.out):
        print(name)
    return 0


def register(sub) -> None:
    from unifashion.models.captioner import CAPTION_STYLES

    p = sub.add_parser("caption", help="caption images with a model that has a caption head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True)
    add_device_argument(p)
    p.add_argument("--style", default="description", choices=tuple(CAPTION_STYLES))
    add_decoding_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of --decoding sample")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of tab-separated lines")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("generate", help="generate a garment image from a text, a reference image, or both")
    p.add_argument("--model", required=True)
    add_device_argument(p)
    p.add_argument("--text", default=None)
    p.add_argument("--image", default=None, help="reference image (with --text: composed, 'this, but ...')")
    _sampling_args(p)
    p.set_defaults(func=cmd_generate)

    for task, helptext in (
        ("tryon", "dress a person in a garment (virtual try-on)"),
        ("design", "draw a person wearing a garment from a text and a sketch"),
    ):
        p = sub.add_parser(task, help=helptext)
        p.add_argument("--model", required=True)
        add_device_argument(p)
        p.add_argument("--person", required=True, help="person image")
        p.add_argument(
            "--mask",
            required=True,
            help="region to paint (white), e.g. VITON-HD's agnostic-mask; 'auto': from the pose and --garment",
        )
        p.add_argument(
            "--garment",
            default="upper",
            choices=("upper", "dress", "lower"),
            help="what the automatic mask (--mask auto) makes room for",
        )
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

"""``unifashion convert``: checkpoints of other formats -> safetensors folders this package loads."""

from __future__ import annotations

import argparse
import json


def _wrote(args: argparse.Namespace, report: dict, use: str = "") -> int:
    """The last lines every conversion prints: where it wrote, and the report as JSON with --json."""
    print(f"wrote {args.out}" + (f" {use}" if use else ""))
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from unifashion.backbones.convert import convert_weights

    report = convert_weights(args.source, args.out, key=args.key)
    for item in report["converted"]:
        print(f"converted {item['file']} ({item['tensors']} tensors)")
    for item in report["skipped"]:
        print(f"skipped {item} (a safetensors copy is beside it)")
    if "note" in report:
        print(report["note"])
    return _wrote(args, report)


def cmd_convert_lavis(args: argparse.Namespace) -> int:
    from unifashion.backbones.convert import convert_lavis_blip2

    report = convert_lavis_blip2(
        args.source, args.out, key=args.key, vision_heads=args.vision_heads, qformer_heads=args.qformer_heads
    )
    q = report["config"]["qformer_config"]
    v = report["config"]["vision_config"]
    print(
        f"mapped {report['tensors']} tensors: vision {v['num_hidden_layers']} layers of {v['hidden_size']}, "
        f"Q-Former {q['num_hidden_layers']} layers of {q['hidden_size']}, vocabulary {q['vocab_size']}"
    )
    for name, why in sorted(report["not_mapped"].items()):
        print(f"not mapped: {name}: {why}")
    return _wrote(args, report, "(use it as vision.source and qformer.source)")


def cmd_convert_ldm(args: argparse.Namespace) -> int:
    from unifashion.backbones.convert import convert_ldm

    report = convert_ldm(
        args.source,
        args.out,
        unet_config=args.unet_config,
        vae_config=args.vae_config,
        scheduler_config=args.scheduler_config,
        pipeline=args.pipeline,
        key=args.key,
    )
    if "unet" in report:
        print(f"U-Net: {report['unet']} tensors, {report['in_channels']} input channels")
    if "vae" in report:
        print(f"VAE: {report['vae']} tensors")
    for group, count in sorted(report["not_mapped"].items()):
        print(f"not mapped: {group}* ({count} tensors)")
    for note in report["notes"]:
        print(f"note: {note}")
    use = "(use it as diffusion.source)" if "unet" in report else "(use it as diffusion.vae_source)"
    return _wrote(args, report, use)


def cmd_convert_llava_lora(args: argparse.Namespace) -> int:
    from unifashion.backbones.convert import convert_llava_lora

    report = convert_llava_lora(args.source, args.out)
    print(
        f"LoRA rank {report['rank']}, alpha {report['alpha']}, on {', '.join(report['targets'])} of "
        f"{report['layers']} layers: {report['tensors']} tensors"
    )
    for name, why in sorted(report["not_mapped"].items()):
        print(f"not mapped: {name}: {why}")
    return _wrote(args, report, "(use it as [captioning] lora_init)")


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert pickle checkpoints to safetensors (never running their code)")
    group = p.add_subparsers(dest="convert_command", metavar="FORMAT", required=True)
    w = group.add_parser(
        "weights",
        help="a transformers/diffusers folder or one .bin/.pt/.pth/.ckpt file -> a safetensors folder",
        description="Every pickle weight file of SOURCE (a folder, subfolders included, or one file) is read "
        "with torch.load(weights_only=True), which refuses files that need code to load, and written as "
        "safetensors into OUT; other files are copied. Hub checkpoints that ship only pytorch_model.bin "
        "(for example Salesforce/blip2-itm-vit-g) load after this step.",
    )
    w.add_argument("source", help="folder or file to convert")
    w.add_argument("out", help="output folder (written atomically; must lie outside SOURCE)")
    w.add_argument("--key", help="for a single file holding several state dicts: the entry to take")
    w.add_argument("--json", action="store_true", help="also print what was done as JSON")
    w.set_defaults(func=cmd_convert_weights)
    lavis = group.add_parser(
        "lavis-blip2",
        help="a LAVIS BLIP-2 checkpoint (blip2_pretrained.pth, ...) -> a transformers BLIP-2 retrieval folder",
        description="Reads a LAVIS Blip2Qformer checkpoint ({'model': state} or one state dict) with "
        "torch.load(weights_only=True), renames every tensor to transformers' Blip2ForImageTextRetrieval, "
        "checks that nothing is missing or left over, and lists the tensors it had no place for.",
    )
    lavis.add_argument("source", help="the .pth file")
    lavis.add_argument("out", help="output folder (config.json + model.safetensors)")
    lavis.add_argument("--key", help="the entry of the file that holds the state dict (default: found)")
    lavis.add_argument("--vision-heads", type=int, help="attention heads of the vision tower (BLIP-2's ViT-g: 16)")
    lavis.add_argument("--qformer-heads", type=int, help="attention heads of the Q-Former (BLIP-2: 12)")
    lavis.add_argument("--json", action="store_true", help="also print the report as JSON")
    lavis.set_defaults(func=cmd_convert_lavis)
    ldm = group.add_parser(
        "ldm",
        help="an LDM .ckpt (Stable Diffusion, Paint-by-Example, ...) -> a diffusers folder (unet/, vae/)",
        description="Reads the checkpoint with torch.load(weights_only=True), renames the U-Net "
        "(model.diffusion_model.*) and the VAE (first_stage_model.*) with diffusers' LDM conversion, "
        "checks both against the given diffusers configs (nothing missing, nothing left over), takes "
        "the U-Net's input channels from the checkpoint, and lists the tensors outside both (the "
        "conditioning encoder, ControlNet branches, StableVITON's warp attention, ...). A file of a VAE "
        "alone (StableVITON's VITON-HD VAE) needs only --vae-config.",
    )
    ldm.add_argument("source", help="the .ckpt / .pth file")
    ldm.add_argument("out", help="output folder")
    ldm.add_argument(
        "--unet-config", help="a diffusers U-Net config.json of the same architecture (needed when the file has one)"
    )
    ldm.add_argument(
        "--vae-config", help="a diffusers VAE config.json (to convert the VAE too; alone for a VAE-only file)"
    )
    ldm.add_argument("--scheduler-config", help="a scheduler_config.json to put beside them")
    ldm.add_argument(
        "--pipeline",
        help="model_index.json's _class_name, e.g. PaintByExamplePipeline (tells diffusion.input_layout "
        "'auto' how the U-Net reads its channels)",
    )
    ldm.add_argument("--key", help="the entry of the file that holds the state dict (default: found)")
    ldm.add_argument("--json", action="store_true", help="also print the report as JSON")
    ldm.set_defaults(func=cmd_convert_ldm)
    llava = group.add_parser(
        "llava-lora",
        help="a LLaVA LoRA folder (adapter_config.json, adapter_model.*) -> the caption head's starting LoRA",
        description="Reads a PEFT LoRA of LLaVA's language model (adapter_model.safetensors, or .bin with "
        "torch.load(weights_only=True)), checks its rank, target modules and layers, and writes lora.safetensors "
        "+ lora.json for [captioning] lora_init. LLaVA's multimodal projector (non_lora_trainables.bin) reads "
        "CLIP patch features, not Q-Former queries, and is listed as not mapped.",
    )
    llava.add_argument("source", help="the LoRA folder (LLaVA's --output_dir)")
    llava.add_argument("out", help="output folder")
    llava.add_argument("--json", action="store_true", help="also print the report as JSON")
    llava.set_defaults(func=cmd_convert_llava_lora)

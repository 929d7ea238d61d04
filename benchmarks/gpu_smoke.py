"""Every training stage and every inference path on a CUDA GPU in bf16, with memory and time.

    python benchmarks/gpu_smoke.py [--out DIR] [--steps 4]
    python benchmarks/gpu_smoke.py --allow-cpu      # the same run on the CPU (to check the script)

Two runs of the whole pipeline (phase 1a, caption head, VAE, text2image / try-on / design
heads, phase 2), each followed by captioning and image generation through ``UniFashion`` on
the same device:

* ``tiny``: the random networks of the tests;
* ``paper-shrunk``: the ``paper`` preset's code path (BLIP-2 vision tower and Q-Former with the
  30523-token vocabulary, the language model of a LLaVA-1.5 checkpoint, a Stable Diffusion
  folder with its scheduler config), on stand-ins built here with the real architectures,
  shrunk in depth and width, saved the way the hub checkpoints are.

Training runs in bf16 (autocast on CUDA, TF32 on), with gradient checkpointing of the LLM and
the U-Nets. Prints JSON: the device, and per run and stage the seconds and the peak GPU memory
(CUDA only). Without CUDA it says so and exits 0 unless ``--allow-cpu`` is given.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from unifashion.utils.hardware import quiet_libraries

RUN_CONFIG = """
[run]
data = "{data}"
preset = "{preset}"
checkpoint_every = 1000
progress = false

[retrieval]
phase1_epochs = 0.2
phase2_epochs = 0.2
batch_size = 8
bf16 = true

[captioning]
epochs = 0.05
batch_size = 4
bf16 = true
gradient_checkpointing = true

[generation]
vae_steps = {steps}
vae_batch_size = 4
steps = {steps}
tryon_steps = {steps}
design_steps = {steps}
batch_size = 4
bf16 = true
gradient_checkpointing = true

[phase2]
itg_rows = 4
q2i_rows = 4
"""


def paper_standins(folder: Path) -> str:
    """Stand-in weights for the ``paper`` preset and the ``[model.*]`` sections that point at them."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        AutoTokenizer,
        Blip2Config,
        Blip2ForImageTextRetrieval,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from unifashion.backbones.llm import smollm2_dir

    torch.manual_seed(0)
    blip2 = Blip2ForImageTextRetrieval(
        Blip2Config(
            vision_config=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=56,
                patch_size=14,
            ),
            qformer_config=dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                vocab_size=30523,
                max_position_embeddings=512,
                cross_attention_frequency=2,
                encoder_hidden_size=64,
                use_qformer_text_input=True,
            ),
            num_query_tokens=8,
            image_text_hidden_size=32,
        )
    )
    blip2.save_pretrained(folder / "blip2")
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()[0]))
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            text_config=dict(
                model_type="llama",
                vocab_size=len(tokenizer),
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=512,
            ),
            vision_config=dict(
                model_type="clip_vision_model",
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
                projection_dim=16,
            ),
            image_token_index=len(tokenizer) - 1,
        )
    )
    llava.save_pretrained(folder / "llava")
    tokenizer.save_pretrained(folder / "llava")
    sd = folder / "sd"
    UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).save_pretrained(sd / "unet")
    AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
    ).save_pretrained(sd / "vae")
    (sd / "scheduler").mkdir()
    scheduler = {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
    }
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return f"""
[model.vision]
source = "{folder / "blip2"}"
image_size = 56
feature_dim = 64

[model.qformer]
source = "{folder / "blip2"}"
hidden_size = 64
num_layers = 2
num_heads = 4
intermediate_size = 128
num_query_tokens = 8
embed_dim = 32

[model.llm]
source = "{folder / "llava"}"
lora_rank = 8
lora_alpha = 16
max_new_tokens = 8

[model.diffusion]
source = "{sd}"
image_size = 32
cross_attention_dim = 32
sampling_steps = 4
"""


def measure(name: str, data: Path, work: Path, steps: int, device: torch.device, extra: str = "") -> dict:
    from unifashion.pipelines.unifashion import UniFashion
    from unifashion.training.pipeline import load_pipeline_config, train_pipeline

    config = work / f"{name}.toml"
    preset = "paper" if extra else "tiny"
    config.write_text(RUN_CONFIG.format(data=data, preset=preset, steps=steps) + extra, encoding="utf-8")
    stages: dict[str, dict] = {}
    clock = {"t": time.perf_counter()}

    def on_stage_end(stage: str, folder) -> None:
        now = time.perf_counter()
        row = {"seconds": round(now - clock["t"], 2)}
        if device.type == "cuda":
            torch.cuda.synchronize()
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            torch.cuda.reset_peak_memory_stats()
        stages[stage] = row
        clock["t"] = time.perf_counter()

    out = work / name
    train_pipeline(load_pipeline_config(config), out, on_stage_end=on_stage_end)
    model = UniFashion.from_pretrained(out, device=device)
    image = sorted((data / "images").glob("*.png"))[0]
    started = time.perf_counter()
    captions = model.caption([str(image)], "title", max_new_tokens=8)
    pictures = model.generate(text="a red dress", steps=4)
    inference = {"seconds": round(time.perf_counter() - started, 2), "caption": captions[0]}
    if device.type == "cuda":
        inference["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    assert len(pictures) == 1
    return {"stages": stages, "inference": inference, "model_device": str(model.device)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="keep the data and models here (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=4, help="steps of each image-head and VAE stage")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA GPU")
    parser.add_argument("--runs", default="tiny,paper-shrunk", help="comma-separated: tiny, paper-shrunk")
    args = parser.parse_args(argv)
    quiet_libraries()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(json.dumps({"skipped": "no CUDA GPU (give --allow-cpu to run the same script on the CPU)"}))
        return 0
    from unifashion.data.synth.generate import SynthConfig, write_fashionsynth

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.out) if args.out else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        if not data.exists():
            write_fashionsynth(data, SynthConfig(products=120, size=64, seed=0), progress=False)
        report: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "runs": {}}
        for run in [r.strip() for r in args.runs.split(",") if r.strip()]:
            if run == "tiny":
                report["runs"][run] = measure(run, data, work, args.steps, device)
            elif run == "paper-shrunk":
                standins = work / "standins"
                standins.mkdir(exist_ok=True)
                report["runs"][run] = measure(run, data, work, args.steps, device, paper_standins(standins))
            else:
                parser.error(f"--runs: unknown run {run!r} (expected tiny, paper-shrunk)")
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the on-disk caches of frozen image features and of VAE latents save, measured side by side in one run.

    python benchmarks/feature_cache.py [--images 256] [--preset mini] [--batch 64]

Prints JSON: seconds to get one epoch's image features by running the frozen
encoder vs reading the cache, and seconds of one training epoch (features +
phase-1a Q-Former steps) each way, with their ratios. Then the latents of the
text-to-image head (the preset's VAE at its image size): seconds to VAE-encode
the images into a write-once table (what the text-to-image stage does, and
what phase 2 did a second time) vs mapping the finished table (what phase 2
does now), per image too. Uses a fresh temporary cache and FashionSynth images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import RetrievalTrainingConfig, get_preset
from unifashion.data.formats import read_split
from unifashion.data.synth.generate import SynthConfig, write_fashionsynth
from unifashion.models.generator import Generator, build_vae
from unifashion.models.qformer import itc_loss, itm_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import latent_table, product_hw
from unifashion.utils.hardware import autocast, quiet_libraries


def qformer_steps(
    model: RetrievalModel, feats: torch.Tensor, texts: list[str], batch: int, cfg: RetrievalTrainingConfig
) -> None:
    qf = model.qformer.train()
    opt = torch.optim.AdamW(qf.parameters(), lr=1e-5)
    for start in range(0, feats.shape[0] - batch + 1, batch):
        f = feats[start : start + batch].float()
        text = model.tokenize(texts[start : start + batch])
        ids = torch.arange(batch)
        with autocast(cfg.bf16):
            loss, sim = itc_loss(qf.image_embeddings(f), qf.text_embedding(text), qf.temperature(), ids)
            loss = loss + itm_loss(qf, f, text, sim.float(), ids, num_pairs=cfg.itm_pairs)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    quiet_libraries()
    torch.manual_seed(0)
    cfg = RetrievalTrainingConfig()
    with tempfile.TemporaryDirectory() as tmp:
        write_fashionsynth(
            Path(tmp) / "fs",
            SynthConfig(products=args.images, size=128, max_views=1, tryon=0, layouts=()),
            progress=False,
        )
        data = read_split(Path(tmp) / "fs", "train")
        refs = [p.images[0] for p in data.products][: args.images]
        texts = [p.captions[0] for p in data.products][: args.images]
        model = RetrievalModel.build(args.preset)
        encoder_only = FeatureCache(model.vision, root=Path(tmp) / "off", enabled=False)
        cache = FeatureCache(model.vision, root=Path(tmp) / "cache")
        cache.features(refs)  # fill the cache (as the first epoch does)

        t0 = time.perf_counter()
        encoded = encoder_only.features(refs)
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = cache.features(refs)
        t_cached = time.perf_counter() - t0
        assert torch.equal(encoded, cached)

        t0 = time.perf_counter()
        qformer_steps(model, encoder_only.features(refs), texts, args.batch, cfg)
        epoch_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        qformer_steps(model, cache.features(refs), texts, args.batch, cfg)
        epoch_cached = time.perf_counter() - t0

        dcfg = get_preset(args.preset).diffusion
        head = Generator.build(
            dcfg, "text2image", model.config.qformer.hidden_size, product_hw(dcfg.image_size), vae=build_vae(dcfg)
        ).eval()
        t0 = time.perf_counter()
        written = latent_table(head, refs, Path(tmp) / "tables")
        t_latents = time.perf_counter() - t0
        t0 = time.perf_counter()
        mapped = latent_table(head, refs, Path(tmp) / "tables")
        t_mapped = time.perf_counter() - t0
        assert torch.equal(written, mapped)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "images": len(refs),
                "threads": torch.get_num_threads(),
                "features_seconds": {
                    "encoder": round(t_encode, 2),
                    "cache": round(t_cached, 3),
                    "speedup": round(t_encode / t_cached, 1),
                },
                "epoch_seconds": {
                    "encoder": round(epoch_encode, 2),
                    "cache": round(epoch_cached, 2),
                    "speedup": round(epoch_encode / epoch_cached, 2),
                },
                "latents_seconds": {
                    "image_hw": list(head.image_hw),
                    "encode": round(t_latents, 2),
                    "encode_ms_per_image": round(1000 * t_latents / len(refs), 2),
                    "table": round(t_mapped, 3),
                    "speedup": round(t_latents / t_mapped, 1),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

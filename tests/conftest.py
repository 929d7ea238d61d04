import os

# Our progress bars and errors only; no network lookups from tests.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


import pytest


@pytest.fixture
def load_benchmark(monkeypatch):
    """Loads a script of ``benchmarks/`` by name as a module, with that folder on ``sys.path`` as when
    it is run (some import their neighbours)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    """A tiny model with every head but design (fewest steps) and a catalog of its data's products,
    captioned from the data: what the catalog, service and browser tests run against."""
    from types import SimpleNamespace

    from unifashion import cli

    root = tmp_path_factory.mktemp("shop")
    data, retrieval, captioned, model, catalog = (root / n for n in ("fs", "ret", "cap", "model", "catalog"))
    assert (
        cli.main(
            [
                "data",
                "synth",
                "--out",
                str(data),
                "--products",
                "48",
                "--size",
                "64",
                "--quiet",
                "--views",
                "1",
                "--layouts",
                "fashioniq",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                "retrieval",
                "--data",
                str(data),
                "--out",
                str(retrieval),
                "--preset",
                "tiny",
                "--phase1-epochs",
                "2",
                "--phase2-epochs",
                "1",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                "captioning",
                "--model",
                str(retrieval),
                "--data",
                str(data),
                "--out",
                str(captioned),
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--lr",
                "3e-3",
                "--lora-rank",
                "4",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                "generation",
                "--model",
                str(captioned),
                "--data",
                str(data),
                "--out",
                str(model),
                "--tasks",
                "text2image,tryon",
                "--vae-steps",
                "4",
                "--steps",
                "4",
                "--tryon-steps",
                "2",
                "--batch-size",
                "4",
                "--no-bf16",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "catalog",
                "build",
                "--model",
                str(model),
                "--data",
                str(data),
                "--out",
                str(catalog),
                "--captions",
                "data",
                "--quiet",
            ]
        )
        == 0
    )
    return SimpleNamespace(root=root, data=data, model=model, catalog=catalog)


def save_tiny_clip(folder):
    """A randomly initialised CLIP (2-layer towers, 32 px images, a character-level tokenizer) saved
    as a local checkpoint folder: config.json, safetensors, processor and tokenizer files."""
    import json
    import string

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,;:'-!?")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=40,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        folder, safe_serialization=True
    )
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")

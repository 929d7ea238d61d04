import os

# Our progress bars and errors only; no network lookups from tests.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


import pytest


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    """A tiny model with every head but design (fewest steps) and a catalog of its data's products,
    captioned from the data: what the catalog, service and browser tests run against."""
    from types import SimpleNamespace

    from unifashion import cli

    root = tmp_path_factory.mktemp("shop")
    data, retrieval, captioned, model, catalog = (root / n for n in ("fs", "ret", "cap", "model", "catalog"))
    assert cli.main(["data", "synth", "--out", str(data), "--products", "48", "--size", "64", "--quiet",
                     "--views", "1", "--layouts", "fashioniq", "--workers", "1"]) == 0  # fmt: skip
    assert cli.main(["train", "retrieval", "--data", str(data), "--out", str(retrieval), "--preset", "tiny",
                     "--phase1-epochs", "2", "--phase2-epochs", "1", "--batch-size", "16"]) == 0  # fmt: skip
    assert cli.main(["train", "captioning", "--model", str(retrieval), "--data", str(data), "--out", str(captioned),
                     "--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--lora-rank", "4"]) == 0  # fmt: skip
    assert cli.main(["train", "generation", "--model", str(captioned), "--data", str(data), "--out", str(model),
                     "--tasks", "text2image,tryon", "--vae-steps", "4", "--steps", "4", "--tryon-steps", "2",
                     "--batch-size", "4", "--no-bf16"]) == 0  # fmt: skip
    assert cli.main(["catalog", "build", "--model", str(model), "--data", str(data), "--out", str(catalog),
                     "--captions", "data", "--quiet"]) == 0  # fmt: skip
    return SimpleNamespace(root=root, data=data, model=model, catalog=catalog)

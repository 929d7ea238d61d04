"""CLIP-S (torchmetrics' CLIPScore) on a local CLIP checkpoint: equal to the CLIP model's own cosines."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from unifashion.evaluation.clip_score import ClipScorer
from unifashion.utils.errors import BackboneError

TEXTS = ["a red dress", "blue shirt with stripes", "black trousers", "a green skirt.", "white top", "grey coat"]


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8) for i in range(n)]


def _reference_cosines(folder, images, texts):
    """Cosines from CLIPModel's forward pass (its own normalised image_embeds / text_embeds)."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
    proc = CLIPProcessor.from_pretrained(folder)
    inputs = proc(
        text=texts,
        images=[Image.fromarray(im) for im in images],
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=model.config.text_config.max_position_embeddings,
    )
    with torch.no_grad():
        out = model(**inputs)
    return (out.image_embeds * out.text_embeds).sum(-1), inputs["input_ids"]


def _flipped(folder, out):
    """A copy of the checkpoint with the text projection negated: every cosine changes sign."""
    from safetensors.torch import load_file, save_file

    out = shutil.copytree(folder, out)
    state = load_file(out / "model.safetensors")
    state["text_projection.weight"] = -state["text_projection.weight"]
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_clip_score_is_100_times_the_mean_cosine_floored_at_zero(tiny_clip, tmp_path):
    images = _images()
    flipped = _flipped(tiny_clip, tmp_path / "flipped")
    for folder in (tiny_clip, flipped):
        cos, _ = _reference_cosines(folder, images, TEXTS)
        scorer = ClipScorer(str(folder), batch_size=4)  # two batches
        assert scorer(images, TEXTS) == pytest.approx(max(100 * float(cos.mean()), 0.0), abs=2e-3)
        for i in range(len(TEXTS)):  # pair by pair: the floor applies per call
            one = scorer(images[i : i + 1], TEXTS[i : i + 1])
            assert one == pytest.approx(max(100 * float(cos[i]), 0.0), abs=2e-3)
    # The two checkpoints' cosines are opposite, so one of them is floored and the other is not.
    assert sorted([ClipScorer(str(f))(images, TEXTS) == 0.0 for f in (tiny_clip, flipped)]) == [False, True]
    # PIL images and uint8 arrays score the same.
    scorer = ClipScorer(str(tiny_clip))
    assert scorer([Image.fromarray(im) for im in images], TEXTS) == scorer(images, TEXTS)


def test_texts_longer_than_the_text_tower_are_truncated_keeping_the_end_token(tiny_clip):
    long = "a long red dress with white stripes, a wide collar, short sleeves and a belt " * 3
    images = _images(2)
    cos, ids = _reference_cosines(tiny_clip, images, [long, "short"])
    assert ids.shape[1] == 40 and int(ids[0, -1]) == json.loads((tiny_clip / "vocab.json").read_text())["<|endoftext|>"]
    assert ClipScorer(str(tiny_clip))(images[:1], [long]) == pytest.approx(max(100 * float(cos[0]), 0.0), abs=2e-3)


def test_bad_checkpoints_and_inputs_get_clear_errors(tiny_clip, tmp_path):
    not_clip = shutil.copytree(tiny_clip, tmp_path / "not-clip")
    config = json.loads((not_clip / "config.json").read_text())
    (not_clip / "config.json").write_text(json.dumps({**config, "model_type": "siglip"}))
    with pytest.raises(BackboneError, match="model_type 'siglip'"):
        ClipScorer(str(not_clip))

    pickles = shutil.copytree(tiny_clip, tmp_path / "pickles")
    (pickles / "model.safetensors").unlink()
    (pickles / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(BackboneError, match="only pickle weights"):
        ClipScorer(str(pickles))

    no_processor = shutil.copytree(tiny_clip, tmp_path / "no-processor")
    for name in ("preprocessor_config.json", "processor_config.json"):
        (no_processor / name).unlink(missing_ok=True)
    with pytest.raises(BackboneError, match="image processor"):
        ClipScorer(str(no_processor))

    with pytest.raises(BackboneError, match="no such folder"):
        ClipScorer(str(tmp_path / "missing"))

    scorer = ClipScorer(str(tiny_clip))
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        scorer(_images(2), ["one"])

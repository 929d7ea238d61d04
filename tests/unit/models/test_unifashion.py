"""``UniFashion`` on the tiny preset: the same numbers and pixels as the functions the commands use,
a save/load round trip, lazy heads, and clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from unifashion import cli
from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.data.formats import read_split
from unifashion.data.records import ImageRef
from unifashion.models.captioner import Decoding
from unifashion.models.qformer import max_over_queries
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.captioning import caption_images, load_captioning_model
from unifashion.pipelines.generation import fit_image, fit_mask, generate_images, load_generation_model
from unifashion.pipelines.retrieval import encode_composed, encode_images, encode_texts
from unifashion.pipelines.unifashion import UniFashion
from unifashion.utils.errors import PickleCheckpointError, UniFashionError

ALL_HEADS = ("retrieval", "captioning", "text2image", "tryon", "design")


@pytest.fixture(scope="module")
def full(trained, tmp_path_factory):
    """The tiny retrieval model with a caption head and the three image heads (fewest steps)."""
    data, retrieval = trained
    root = tmp_path_factory.mktemp("unifashion")
    captioned, out = root / "captioned", root / "full"
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
                str(out),
                "--vae-steps",
                "4",
                "--steps",
                "4",
                "--tryon-steps",
                "2",
                "--design-steps",
                "2",
                "--batch-size",
                "4",
                "--no-bf16",
            ]
        )
        == 0
    )
    return data, retrieval, out


@pytest.fixture(scope="module")
def products(trained):
    data, _ = trained
    return [p for p in read_split(data, "val").products if p.captions][:24]


@pytest.fixture(scope="module")
def tryon_sample(trained):
    data, _ = trained
    s = json.loads((data / "tryon.jsonl").read_text().splitlines()[0])
    return {k: str(data / s[k]) for k in ("person", "agnostic_mask", "pose", "cloth", "sketch")} | {"text": s["text"]}


def test_heads_lists_what_the_folder_holds_and_nothing_is_loaded_up_front(trained, full):
    _, retrieval = trained
    assert UniFashion.from_pretrained(retrieval).heads == ("retrieval",)
    model = UniFashion.from_pretrained(full[2])
    assert model.heads == ALL_HEADS
    assert model._captioner is None and not model._image_heads
    assert "captioning" in repr(model)


def test_embeddings_equal_the_evaluation_functions(trained, products):
    _, retrieval = trained
    model = UniFashion.from_pretrained(retrieval)
    refs = [p.images[0] for p in products]
    texts = [p.captions[0] for p in products]
    reference = RetrievalModel.from_pretrained(retrieval)
    table = FeatureTable.build(refs, FeatureCache(reference.vision), progress=False)

    images = model.encode_images([str(r) for r in refs])
    assert torch.equal(images, encode_images(reference, table).embeds)
    q = reference.qformer.num_queries
    assert images.shape == (len(refs), q, reference.config.qformer.embed_dim)
    assert torch.allclose(images.norm(dim=-1), torch.ones(len(refs), q), atol=1e-2)  # bf16 where the CPU has it

    text = model.encode_texts(texts)
    assert torch.equal(text, encode_texts(reference, texts))
    assert text.shape == (len(texts), images.shape[-1])
    assert torch.allclose(text.norm(dim=-1), torch.ones(len(texts)), atol=1e-2)

    mods = ["make it red"] * len(refs)
    composed = model.encode_composed(refs, mods)
    assert torch.equal(composed, encode_composed(reference, table.batch(list(range(len(refs)))), mods))
    assert composed.shape == text.shape

    # PIL images and ImageRefs give the same embeddings as file paths.
    pil = [Image.open(str(r)) for r in refs[:3]]
    assert torch.equal(model.encode_images(pil), images[:3])
    assert torch.equal(model.encode_images(refs[:3]), images[:3])


def test_similarity_is_max_over_queries_with_queries_as_rows(trained, products):
    _, retrieval = trained
    model = UniFashion.from_pretrained(retrieval)
    images = model.encode_images([p.images[0] for p in products])
    texts = model.encode_texts([p.captions[0] for p in products])
    sim = model.similarity(texts, images)
    assert sim.shape == (len(products), len(products))
    assert torch.equal(sim, max_over_queries(images, texts))
    assert torch.allclose(sim[2, 5], (images[5] @ texts[2]).max())
    # Hand-computed: rows are the queries, columns the images, each the best of the image's queries.
    # (The tiny model is too weak to rank captions reliably, so its quality is not asserted here.)
    image_queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]], [[0.0, -1.0], [0.8, -0.6]]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([[1.0, 0.6, 0.8], [1.0, 0.8, -0.6]])
    assert torch.allclose(UniFashion.similarity(queries, image_queries), expected)


def test_bad_inputs_get_clear_errors(trained, products):
    _, retrieval = trained
    model = UniFashion.from_pretrained(retrieval)
    image = str(products[0].images[0])
    with pytest.raises(UniFashionError, match="single string"):
        model.encode_texts("a red dress")
    with pytest.raises(UniFashionError, match="list of images"):
        model.encode_images(image)
    with pytest.raises(UniFashionError, match="1 images for 2 texts"):
        model.encode_composed([image], ["red", "blue"])
    with pytest.raises(UniFashionError, match=r"images\[1\]"):
        model.encode_images([image, 3])


def test_save_and_load_round_trip_gives_identical_embeddings_and_captions(full, products, tmp_path):
    _, _, source = full
    model = UniFashion.from_pretrained(source)
    refs = [p.images[0] for p in products[:4]]
    texts = [p.captions[0] for p in products[:4]]
    captions = model.caption(refs, "title", max_new_tokens=8)
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    # The same captions as `unifashion caption` (same decoding defaults, except the length).
    retrieval, captioner = load_captioning_model(source)
    assert captions == caption_images(retrieval, captioner, refs, "title", Decoding(max_new_tokens=8))

    copy = model.save_pretrained(tmp_path / "copy")  # the caption head from memory, the image heads copied
    again = UniFashion.from_pretrained(copy)
    assert again.heads == ALL_HEADS
    assert torch.equal(again.encode_images(refs), model.encode_images(refs))
    assert torch.equal(again.encode_texts(texts), model.encode_texts(texts))
    assert again.caption(refs, "title", max_new_tokens=8) == captions
    assert json.loads((copy / "config.json").read_text()) == json.loads((source / "config.json").read_text())
    for sub in ("vae", "generator", "tryon", "design"):
        assert {p.relative_to(copy) for p in (copy / sub).rglob("*")} == {
            p.relative_to(source) for p in (source / sub).rglob("*")
        }, sub
    assert not [p for p in copy.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch folder left behind

    # Saved again over itself, with an image head loaded (written from memory this time).
    again.image_head("text2image")
    again.save_pretrained(copy)
    third = UniFashion.from_pretrained(copy)
    assert third.heads == ALL_HEADS
    a = third.generate(text="a red dress", steps=2)[0]
    b = model.generate(text="a red dress", steps=2)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_pickle_files_and_missing_folders_are_refused(trained, tmp_path):
    _, retrieval = trained
    with pytest.raises(UniFashionError, match="no such checkpoint folder"):
        UniFashion.from_pretrained(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UniFashionError, match=r"config\.json"):
        UniFashion.from_pretrained(empty)
    bad = tmp_path / "bad"
    shutil.copytree(retrieval, bad)
    (bad / "weights.bin").write_bytes(b"\x80\x04")
    with pytest.raises(PickleCheckpointError, match=r"weights\.bin"):
        UniFashion.from_pretrained(bad)
    (bad / "weights.bin").unlink()
    (bad / "captioner").mkdir()
    (bad / "captioner" / "head.pt").write_bytes(b"\x80\x04")
    with pytest.raises(PickleCheckpointError, match=r"head\.pt"):
        UniFashion.from_pretrained(bad)


def test_a_missing_head_names_the_training_command(trained, products):
    _, retrieval = trained
    model = UniFashion.from_pretrained(retrieval)
    with pytest.raises(UniFashionError, match=r"no caption head.*unifashion train captioning"):
        model.caption([products[0].images[0]])
    with pytest.raises(UniFashionError, match=r"no text2image head.*unifashion train generation"):
        model.generate(text="a red dress")
    with pytest.raises(UniFashionError, match=r"no tryon head.*--tasks tryon"):
        model.image_head("tryon")


def test_generate_is_deterministic_and_matches_the_command_path(full, products):
    _, _, source = full
    model = UniFashion.from_pretrained(source)
    head = model.image_head("text2image")
    h, w = head.image_hw
    first = model.generate(text="a red dress", steps=2, seed=3, n=2)
    assert len(first) == 2 and all(im.size == (w, h) and im.mode == "RGB" for im in first)
    again = model.generate(text="a red dress", steps=2, seed=3)
    assert np.array_equal(np.asarray(again[0]), np.asarray(first[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))  # seed 3, then seed 4
    retrieval, gen = load_generation_model(source)
    direct = generate_images(retrieval, gen, texts=["a red dress"], steps=2, seed=4)
    assert np.array_equal(np.asarray(direct[0]), np.asarray(first[1]))
    # Image only and composed; a PIL image and its file give the same result.
    path = str(products[0].images[0])
    by_path = model.generate(image=path, steps=2, sampler="ddim")
    assert np.array_equal(
        np.asarray(model.generate(image=Image.open(path), steps=2, sampler="ddim")[0]), np.asarray(by_path[0])
    )
    assert model.generate(text="make it blue", image=path, steps=2)[0].size == (w, h)
    with pytest.raises(UniFashionError, match="a text, a reference image, or both"):
        model.generate()


def test_try_on_keeps_the_person_outside_the_mask_and_design_draws(full, tryon_sample):
    _, _, source = full
    s = tryon_sample
    model = UniFashion.from_pretrained(source)
    out = model.try_on(s["person"], s["cloth"], mask=s["agnostic_mask"], pose=s["pose"], steps=2)
    assert len(out) == 1
    result = np.asarray(out[0]).astype(int)
    hw = result.shape[:2]
    assert hw == model.image_head("tryon").image_hw
    person = fit_image(Image.open(s["person"]), hw).astype(int)
    keep = fit_mask(ImageRef(s["agnostic_mask"]), hw) <= 0.5
    assert keep.any() and (~keep).any()
    assert np.array_equal(result[keep], person[keep])
    raw = np.asarray(
        model.try_on(s["person"], s["cloth"], mask=s["agnostic_mask"], pose=s["pose"], steps=2, paste=False)[0]
    ).astype(int)
    assert not np.array_equal(raw[keep], person[keep])
    # In-memory images give the same pixels as their files.
    pil = model.try_on(
        Image.open(s["person"]), Image.open(s["cloth"]), mask=Image.open(s["agnostic_mask"]), pose=s["pose"], steps=2
    )
    assert np.array_equal(np.asarray(pil[0]).astype(int), result)

    drawn = model.design(s["text"], s["sketch"], s["pose"], person=s["person"], mask=s["agnostic_mask"], steps=2)
    assert np.asarray(drawn[0]).shape[:2] == model.image_head("design").image_hw
    assert np.array_equal(np.asarray(drawn[0]).astype(int)[keep], person[keep])
    with pytest.raises(UniFashionError, match="cloth: expected a file path"):
        model.try_on(s["person"], 3, mask=s["agnostic_mask"], pose=s["pose"])
    with pytest.raises(UniFashionError, match="no such file"):
        model.try_on(s["person"], s["cloth"], mask=s["agnostic_mask"], pose=s["pose"] + ".missing")


def test_the_device_is_chosen_checked_and_followed_by_lazily_loaded_heads(full, monkeypatch):
    """from_pretrained(device=...): "auto" is the CPU on a machine without CUDA, a GPU asked for where there
    is none is a clear error, and heads loaded later land on the model's device."""
    from unifashion.utils.errors import ConfigError
    from unifashion.utils.hardware import resolve_device

    source = full[2]
    model = UniFashion.from_pretrained(source, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device.type == expected and model.retrieval.qformer.query_tokens.device.type == expected
    assert next(model.captioner.parameters()).device.type == expected
    assert model.image_head("text2image").device.type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: cuda asked for, but this machine has no CUDA GPU"):
        UniFashion.from_pretrained(source, device="cuda")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ConfigError, match="device: expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)

"""End to end on the tiny preset: train the image heads, evaluate them, and the three commands."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from unifashion import cli


@pytest.fixture(scope="module")
def with_heads(trained, tmp_path_factory):
    data, model = trained
    out = tmp_path_factory.mktemp("generation") / "model"
    code = cli.main(
        [
            "train",
            "generation",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--vae-steps",
            "30",
            "--steps",
            "30",
            "--tryon-steps",
            "30",
            "--design-steps",
            "30",
            "--batch-size",
            "8",
            "--no-bf16",
        ]
    )
    assert code == 0
    return data, model, out


def test_training_writes_the_vae_and_one_head_per_task(with_heads):
    _, model, out = with_heads
    meta = json.loads((out / "config.json").read_text())
    assert {"generation:text2image", "generation:tryon", "generation:design"} <= set(meta["heads"])
    for sub in ("vae", "generator", "tryon", "design"):
        assert any((out / sub).rglob("*.safetensors")), sub
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    summary = meta["training"]["pipeline"]["summary"]
    assert summary["phase1b_vae"]["latent_scale"] > 0
    assert 0 <= summary["phase1b_vae"]["train_fidelity"]["colour_kept"] <= 100
    assert (out / "logs" / "losses_phase1b_text2image.csv").is_file()
    # The retrieval weights travel unchanged.
    assert (out / "qformer.safetensors").read_bytes() == (model / "qformer.safetensors").read_bytes()


def _denoising_loss(model, head, prepared, draws: int = 4) -> float:
    """The head's q2I loss (Eq. 7, condition always kept) on ``draws`` seeded training batches of
    64: the same latents, noise, timesteps and conditions for every head measured."""
    import torch

    from unifashion.config import GenerationTrainingConfig
    from unifashion.models.generator import training_schedule
    from unifashion.training.data import head_batches

    draw = head_batches(model, head.eval(), prepared, GenerationTrainingConfig(batch_size=64, bf16=False))
    gen = torch.Generator().manual_seed(0)
    schedule = training_schedule(head.config)
    losses = []
    with torch.no_grad():
        for _ in range(draws):
            latents, states, mask, extra, _ = draw(gen)
            losses.append(float(head.q2i_loss(latents, states, mask, extra, schedule, gen, drop_rate=0.0)))
    return sum(losses) / len(losses)


def test_every_saved_image_head_and_the_vae_beat_untrained_ones(with_heads):
    """Quality floors an untrained part cannot reach: each saved U-Net head (30 steps) denoises
    its training batches with at most 0.8x the loss of a freshly built head of the same task
    (measured 0.52-0.64x; a fresh head reads ~1.1), and the saved VAE reconstructs training
    images with at most half a fresh VAE's error (measured 24 vs 101 levels of 255). A stage
    whose trained weights are not the ones saved, or that does not train, fails here."""
    import torch

    from unifashion.backbones.feature_cache import FeatureCache
    from unifashion.data.formats import read_split
    from unifashion.models.generator import Generator, build_vae
    from unifashion.models.retrieval import RetrievalModel
    from unifashion.pipelines.generation import load_image_head, load_pixels
    from unifashion.training.data import inpaint_data, product_hw, text2image_data
    from unifashion.training.phase1 import vae_colour_fidelity

    data, _, out = with_heads
    model = RetrievalModel.from_pretrained(out).eval()
    train = read_split(data, "train")
    cache = FeatureCache(model.vision)
    for task in ("text2image", "tryon", "design"):
        head = load_image_head(out, task)
        prepare = text2image_data if task == "text2image" else inpaint_data
        prepared = prepare(model, head, train, cache, False)
        torch.manual_seed(0)
        fresh = Generator.build(
            head.config,
            task,
            head.spec.condition_dim,
            head.image_hw,
            vae=head.vae,
            latent_scale=float(head.vae.config.scaling_factor),
        )
        trained_loss, fresh_loss = _denoising_loss(model, head, prepared), _denoising_loss(model, fresh, prepared)
        assert trained_loss <= 0.8 * fresh_loss, (task, trained_loss, fresh_loss)
    pixels = load_pixels([p.images[0] for p in train.products[:64]], product_hw(head.config.image_size))
    torch.manual_seed(0)
    fresh_vae = build_vae(head.config).eval()
    trained_error = vae_colour_fidelity(head.vae, pixels)["mean_abs_error"]
    assert trained_error <= 0.5 * vae_colour_fidelity(fresh_vae, pixels)["mean_abs_error"]


def test_a_second_run_reuses_the_vae_and_keeps_other_heads(with_heads, tmp_path):
    data, _, out = with_heads
    again = tmp_path / "again"
    code = cli.main(
        [
            "train",
            "generation",
            "--model",
            str(out),
            "--data",
            str(data),
            "--out",
            str(again),
            "--tasks",
            "tryon",
            "--tryon-steps",
            "5",
            "--batch-size",
            "4",
            "--no-bf16",
        ]
    )
    assert code == 0
    assert (again / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        out / "vae" / "diffusion_pytorch_model.safetensors"
    ).read_bytes()
    assert (again / "design" / "adapter.safetensors").read_bytes() == (
        out / "design" / "adapter.safetensors"
    ).read_bytes()
    meta = json.loads((again / "config.json").read_text())
    # The checkpoint's VAE is kept: its stage does not run.
    assert meta["training"]["pipeline"]["stages"] == ["phase1b_tryon"]


def test_continue_starts_from_the_checkpoints_head(with_heads, tmp_path):
    data, _, out = with_heads
    weights = "generator/unet/diffusion_pytorch_model.safetensors"
    for flags, same in (([], False), (["--continue"], True)):
        again = tmp_path / ("continued" if flags else "fresh")
        # Learning rate 0: the weights stay where they started.
        code = cli.main(
            [
                "train",
                "generation",
                "--model",
                str(out),
                "--data",
                str(data),
                "--out",
                str(again),
                "--tasks",
                "text2image",
                "--steps",
                "3",
                "--lr",
                "0",
                "--batch-size",
                "4",
                "--no-bf16",
                "--noisy-share",
                "0.5",
                "--noise-offset",
                "0.1",
                *flags,
            ]
        )
        assert code == 0
        assert ((again / weights).read_bytes() == (out / weights).read_bytes()) is same, flags
        assert (again / "tryon").is_dir() and (again / "design").is_dir()
    training = json.loads((again / "config.json").read_text())["training"]
    assert training["pipeline"]["summary"]["phase1b_text2image"]["continued_from"] == str(out / "generator")
    assert training["generation"]["noise_offset"] == 0.1 and training["generation"]["noisy_share"] == 0.5


def test_continue_refuses_a_new_vae_or_a_missing_head(with_heads, tmp_path, capsys):
    data, _, out = with_heads
    base = [
        "train",
        "generation",
        "--data",
        str(data),
        "--steps",
        "2",
        "--vae-steps",
        "2",
        "--batch-size",
        "4",
        "--no-bf16",
        "--continue",
    ]
    assert cli.main([*base, "--model", str(out), "--out", str(tmp_path / "a"), "--retrain-vae"]) != 0
    assert "only with that VAE" in capsys.readouterr().err
    partial = tmp_path / "partial"
    assert (
        cli.main([*base[:-1], "--model", str(out), "--out", str(partial), "--tasks", "tryon", "--tryon-steps", "2"])
        == 0
    )
    shutil.rmtree(partial / "generator")
    assert cli.main([*base, "--model", str(partial), "--out", str(tmp_path / "b"), "--tasks", "text2image"]) != 0
    assert "no text2image head (generator/)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_eval_generation_reports_every_figure(with_heads, tiny_clip, tmp_path):
    data, _, out = with_heads
    js = tmp_path / "gen.json"
    code = cli.main(
        [
            "eval",
            "generation",
            "--model",
            str(out),
            "--data",
            str(data),
            "--split",
            "val",
            "--limit",
            "6",
            "--steps",
            "2",
            "--sampler-sweep",
            "plms:4,ddim:2,dpm++:2",
            "--batch-size",
            "6",
            "--json",
            str(js),
            "--samples",
            str(tmp_path / "sheets"),
            "--clip-model",
            str(tiny_clip),
        ]
    )
    assert code == 0
    r = json.loads(js.read_text())["splits"]["val"]
    for key in (
        "fid_effnet",
        "kid_effnet_x1000",
        "colour_accuracy",
        "category_accuracy",
        "itc_score",
        "clip_score",
        "seconds_per_image",
    ):
        assert isinstance(r["text"][key], float), key
        assert isinstance(r["composed"][key], float), key
    for x in (r["text"], r["composed"], r["real_images"], r["design"]["paired"], r["design"]["unpaired"]):
        assert 0.0 <= x["clip_score"] <= 100.0
    assert "clip_score_real" in r["design"]["paired"] and "clip_score" not in r["tryon"]["paired"]
    assert set(r["samplers"]) == {"plms-4", "ddim-2", "dpm++-2"}
    # The colour measurement on the real images is the ceiling: it reads FashionSynth's colours.
    assert r["real_images"]["colour_accuracy"] >= 80
    for task in ("tryon", "design"):
        for setting in ("paired", "unpaired"):
            x = r[task][setting]
            assert x["outside_mask_change_pasted"] == 0.0
            assert x["outside_mask_change_raw"] > 0.0
        assert 0 <= r[task]["paired"]["ssim"] <= 1
    assert (tmp_path / "sheets" / "val" / "text.png").is_file()
    assert (tmp_path / "sheets" / "val" / "tryon_paired.png").is_file()


def test_generate_tryon_and_design_commands_write_images(with_heads, tmp_path):
    data, _, out = with_heads
    rows = [json.loads(line) for line in (data / "tryon.jsonl").read_text().splitlines()]
    s = rows[0]
    product = json.loads((data / "products.jsonl").read_text().splitlines()[0])
    image = str(data / product["image"])
    assert (
        cli.main(
            [
                "generate",
                "--model",
                str(out),
                "--text",
                "a red dress",
                "--steps",
                "3",
                "--num",
                "2",
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    a = np.asarray(Image.open(tmp_path / "g_0.png"))
    assert a.shape[2] == 3 and (tmp_path / "g_1.png").is_file()
    # Same seed, same image.
    assert (
        cli.main(
            [
                "generate",
                "--model",
                str(out),
                "--text",
                "a red dress",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "again.png"),
            ]
        )
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), a)
    assert (
        cli.main(
            [
                "generate",
                "--model",
                str(out),
                "--image",
                image,
                "--text",
                "make it blue",
                "--steps",
                "2",
                "--sampler",
                "plms",
                "--out",
                str(tmp_path / "c.png"),
            ]
        )
        == 0
    )
    person = str(data / s["person"])
    common = [
        "--model",
        str(out),
        "--person",
        person,
        "--mask",
        str(data / s["agnostic_mask"]),
        "--pose",
        str(data / s["pose"]),
        "--steps",
        "2",
    ]
    assert cli.main(["tryon", *common, "--cloth", str(data / s["cloth"]), "--out", str(tmp_path / "t.png")]) == 0
    assert (
        cli.main(
            [
                "design",
                *common,
                "--text",
                s["text"],
                "--sketch",
                str(data / s["sketch"]),
                "--out",
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )
    tryon = np.asarray(Image.open(tmp_path / "t.png")).astype(int)
    # Outside the mask the person is kept pixel for pixel (at the head's resolution).
    from unifashion.data.records import ImageRef
    from unifashion.pipelines.generation import fit_image, fit_mask

    hw = tryon.shape[:2]
    src = fit_image(Image.open(person), hw).astype(int)
    keep = fit_mask(ImageRef(str(data / s["agnostic_mask"])), hw) <= 0.5
    assert np.array_equal(tryon[keep], src[keep])
    # --mask auto: the region comes from the pose; outside it the person is kept just the same.
    auto = [*common, "--cloth", str(data / s["cloth"]), "--out", str(tmp_path / "auto.png")]
    auto[auto.index("--mask") + 1] = "auto"
    assert cli.main(["tryon", *auto, "--garment", "upper"]) == 0
    from unifashion.data.pose import garment_mask, load_pose

    w, h = Image.open(person).size
    region = Image.fromarray(garment_mask(load_pose(data / s["pose"], "openpose", w, h), w, h).astype(np.uint8) * 255)
    region.save(tmp_path / "region.png")
    keep = fit_mask(ImageRef(str(tmp_path / "region.png")), hw) <= 0.5
    tryon_auto = np.asarray(Image.open(tmp_path / "auto.png")).astype(int)
    assert keep.mean() > 0.3 and np.array_equal(tryon_auto[keep], src[keep])
    assert not np.array_equal(tryon_auto, tryon)


def test_bad_requests_get_clear_errors(with_heads, tmp_path, capsys):
    _, model, out = with_heads
    assert cli.main(["generate", "--model", str(out), "--out", str(tmp_path / "x.png")]) == 1
    assert "--text, --image" in capsys.readouterr().err
    assert cli.main(["generate", "--model", str(out), "--text", "red", "--out", str(tmp_path / "x.txt")]) == 1
    assert "--out" in capsys.readouterr().err
    assert cli.main(["generate", "--model", str(model), "--text", "red", "--out", str(tmp_path / "x.png")]) == 1
    assert "train generation" in capsys.readouterr().err
    assert cli.main(["generate", "--model", str(out), "--text", "   ", "--out", str(tmp_path / "x.png")]) == 1
    assert "empty text" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli.main(["generate", "--model", str(out), "--image", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "bad.png" in capsys.readouterr().err


def test_text2image_targets_are_encoded_batch_by_batch(with_heads, monkeypatch):
    """The text2image stage's latents equal encoding every image at once, yet no more than one
    batch of pixels is ever read into memory (a dataset's images at 512 px do not fit in RAM)."""
    import torch

    from unifashion.data.formats import read_split
    from unifashion.pipelines import generation as gen_pipeline
    from unifashion.pipelines.generation import encode_images, load_image_head, load_pixels
    from unifashion.training import data as training_data

    data, _, out = with_heads
    head = load_image_head(out, "text2image")
    refs = list({str(r): r for p in read_split(data, "train").products for r in p.images}.values())[:40]
    whole = encode_images(head, load_pixels(refs, head.image_hw))
    sizes = []

    def counting(batch, hw, fill=255):
        sizes.append(len(batch))
        return gen_pipeline.load_pixels(batch, hw, fill)

    monkeypatch.setattr(training_data, "load_pixels", counting)
    chunked = training_data.encode_refs(head, refs, batch_size=16)
    assert sizes == [16, 16, 8]
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    assert chunked.device.type == "cpu" and chunked.shape[0] == len(refs)


def test_latent_and_tryon_tables_are_written_once_and_equal_the_in_memory_ones(with_heads, tmp_path, monkeypatch):
    """With a tables folder, the image heads' latents and try-on inputs are write-once memory-mapped
    files named by the VAE and the inputs' content: equal to the in-RAM tensors, and a second call
    (a later stage, a resumed run) reads the files without encoding anything. Another VAE is another file."""
    import numpy as np
    import torch

    from unifashion.backbones.feature_cache import FeatureCache
    from unifashion.data.formats import read_split
    from unifashion.models.retrieval import RetrievalModel
    from unifashion.pipelines import generation as gen_pipeline
    from unifashion.pipelines.generation import load_image_head
    from unifashion.training import data as training_data

    data, _, out = with_heads
    model = RetrievalModel.from_pretrained(out).eval()
    train = read_split(data, "train")
    cache = FeatureCache(model.vision)
    tables = tmp_path / "tables"
    head = load_image_head(out, "text2image")
    plain = training_data.text2image_data(model, head, train, cache, False)
    mapped = training_data.text2image_data(model, head, train, cache, False, tables=tables)
    assert torch.equal(mapped.latents, plain.latents) and mapped.rows == plain.rows
    (file,) = tables.glob("latents-*.npy")
    assert isinstance(np.load(file, mmap_mode="r"), np.memmap) and not list(tables.glob(".*.tmp"))
    tryon = load_image_head(out, "tryon")
    plain_tryon = training_data.inpaint_data(model, tryon, train, cache, False, batch_size=8)
    mapped_tryon = training_data.inpaint_data(model, tryon, train, cache, False, batch_size=8, tables=tables)
    assert torch.equal(mapped_tryon.targets, plain_tryon.targets) and torch.equal(mapped_tryon.extra, plain_tryon.extra)
    assert len(list(tables.glob("*.npy"))) == 3  # product latents, person latents, try-on inputs

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(training_data, "encode_images", refuse)
    monkeypatch.setattr(training_data, "sample_inputs", refuse)
    again = training_data.text2image_data(model, head, train, cache, False, tables=tables)
    assert torch.equal(again.latents, plain.latents)
    again_tryon = training_data.inpaint_data(model, tryon, train, cache, False, batch_size=8, tables=tables)
    assert torch.equal(again_tryon.extra, plain_tryon.extra)
    monkeypatch.setattr(training_data, "encode_images", gen_pipeline.encode_images)
    with torch.no_grad():
        next(head.vae.parameters()).add_(0.01)
    training_data.text2image_data(model, head, train, cache, False, tables=tables)
    assert len(list(tables.glob("latents-*.npy"))) == 3  # the changed VAE's latents are a new table

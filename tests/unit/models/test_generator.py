"""The image head on the tiny preset: samplers, conditioning, persistence, spatial inputs, metrics."""

import numpy as np
import pytest
import torch

from unifashion.config import get_preset
from unifashion.evaluation.generation import (
    EncoderFeatures,
    MemoisedFeatures,
    accuracy,
    fid_kid,
    garment_colour,
    outside_mask_change,
)
from unifashion.models.generator import (
    POSE_POINTS,
    SAMPLERS,
    Generator,
    extra_channels,
    from_pixels,
    make_sampler,
    pose_heatmaps,
    to_pixels,
    training_schedule,
)
from unifashion.pipelines.generation import paste_back
from unifashion.utils.errors import ConfigError, UniFashionError

TINY = get_preset("tiny").diffusion


def _states(b=2, n=5, d=64, seed=0):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_and_is_deterministic_for_a_seed(sampler):
    torch.manual_seed(0)
    gen = Generator.build(TINY, "text2image", 64).eval()
    states = _states()
    a = gen.sample(states, sampler=sampler, steps=4, seed=3)
    b = gen.sample(states, sampler=sampler, steps=4, seed=3)
    c = gen.sample(states, sampler=sampler, steps=4, seed=4)
    assert a.shape == (2, TINY.latent_channels, *gen.latent_hw)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    images = to_pixels(gen.decode_latents(a))
    assert images.shape == (2, *gen.image_hw, 3) and images.dtype == np.uint8


def test_unknown_sampler_and_task_are_named():
    with pytest.raises(ConfigError, match="sampler"):
        make_sampler("euler", TINY)
    with pytest.raises(ConfigError, match="task"):
        Generator.build(TINY, "inpaint", 64)


def test_inpainting_heads_read_their_extra_channels():
    gen = Generator.build(TINY, "design", 64, image_hw=(32, 24)).eval()
    e = extra_channels("design", TINY.latent_channels)
    assert e == TINY.latent_channels + 1 + POSE_POINTS + 1
    assert gen.unet.config.in_channels == TINY.latent_channels + e
    extra = torch.randn(1, e, *gen.latent_hw)
    out = gen.sample(_states(1), extra=extra, sampler="ddim", steps=2)
    assert out.shape == (1, TINY.latent_channels, 16, 12)


def test_dropped_condition_makes_the_states_irrelevant():
    torch.manual_seed(0)
    gen = Generator.build(TINY, "text2image", 64)
    latents = torch.randn(3, 4, 16, 16)
    sched = training_schedule(TINY)
    loss = [
        gen.q2i_loss(latents, _states(3, seed=s), None, None, sched, torch.Generator().manual_seed(7), drop_rate=1.0)
        for s in (1, 2)
    ]
    kept = [
        gen.q2i_loss(latents, _states(3, seed=s), None, None, sched, torch.Generator().manual_seed(7), drop_rate=0.0)
        for s in (1, 2)
    ]
    assert torch.allclose(loss[0], loss[1])
    assert not torch.allclose(kept[0], kept[1])


def test_save_and_load_round_trip_gives_the_same_samples(tmp_path):
    torch.manual_seed(0)
    gen = Generator.build(TINY, "tryon", 64, image_hw=(32, 24), latent_scale=0.7).eval()
    gen.save_pretrained(tmp_path / "head")
    back = Generator.from_pretrained(tmp_path / "head")
    assert back.spec == gen.spec
    extra = torch.randn(1, gen.unet.config.in_channels - 4, *gen.latent_hw)
    a = gen.sample(_states(1), extra=extra, steps=3)
    b = back.sample(_states(1), extra=extra, steps=3)
    assert torch.allclose(a, b, atol=1e-5)
    (tmp_path / "head" / "adapter.safetensors").unlink()
    with pytest.raises(UniFashionError, match=r"adapter\.safetensors"):
        Generator.from_pretrained(tmp_path / "head")


def test_pose_heatmaps_peak_where_the_keypoint_is():
    kp = np.zeros((18, 3), np.float32)
    kp[0] = (38.0, 22.0, 1.0)  # x, y in a 64 (h) x 48 (w) image: the centre of latent cell (5, 9)
    maps = pose_heatmaps(kp, (64, 48), (16, 12))
    assert maps.shape == (18, 16, 12)
    y, x = np.unravel_index(int(maps[0].argmax()), (16, 12))
    assert (y, x) == (5, 9)
    assert maps[1:].abs().sum() == 0  # missing points stay empty


def test_pixels_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    assert np.array_equal(to_pixels(from_pixels(arr)), arr)


# -- metrics -------------------------------------------------------------------


def _garment(colour, size=32, bg=(250, 250, 250)):
    """A flat garment-coloured box on a light background (rows 1/4-3/4, columns 5/16-11/16)."""
    im = np.full((size, size, 3), bg, np.uint8)
    im[size // 4 : 3 * size // 4, 5 * size // 16 : 11 * size // 16] = colour
    return im


def test_garment_colour_reads_the_garment_not_the_background():
    assert garment_colour(_garment((200, 30, 40))) == "red"
    assert garment_colour(_garment((45, 95, 210))) == "blue"
    # Shaded (darker) red is still red; a pattern in a minority colour does not win.
    shaded = _garment((160, 24, 32))
    shaded[8:24:4, 10:22] = (242, 205, 40)
    assert garment_colour(shaded) == "red"
    # A white garment on grey, found through a mask.
    im = _garment((242, 242, 238), bg=(128, 128, 132))
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 10:22] = 1
    assert garment_colour(im, mask) == "white"
    assert garment_colour(np.full((32, 32, 3), 250, np.uint8)) is None  # nothing there
    assert accuracy(["red", None, "blue"], ["red", "red", "green"]) == pytest.approx(100 / 3)


@pytest.fixture(scope="module")
def tiny_features():
    from unifashion.backbones.vision import load_vision_encoder

    return EncoderFeatures(load_vision_encoder(get_preset("tiny").vision))


def test_the_fid_inception_loads_safetensors_weights_strictly(tmp_path):
    from safetensors.torch import save_file

    from unifashion.evaluation.inception import FIDInceptionV3, load_fid_inception
    from unifashion.utils.errors import BackboneError

    torch.manual_seed(0)
    net = FIDInceptionV3()
    # Inception-v3 has 27,161,264 parameters with its auxiliary head (3,326,696) and 1000-class
    # classifier (2,049,000); the trunk that remains is the FID network's.
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("fc.")) == 21_785_568
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "inception.safetensors"))
    back = load_fid_inception(tmp_path / "inception.safetensors")
    images = torch.randint(0, 256, (2, 3, 40, 30), dtype=torch.uint8)
    feats = back(images)
    assert feats.shape == (2, 2048)
    assert torch.allclose(feats, net.eval()(images))
    del state["Mixed_7c.branch_pool.conv.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(BackboneError, match=r"Mixed_7c\.branch_pool\.conv\.weight"):
        load_fid_inception(tmp_path / "partial.safetensors")
    with pytest.raises(UniFashionError, match="safetensors"):
        load_fid_inception(tmp_path / "inception.pth")


def test_fid_kid_is_zero_for_a_set_against_itself_and_grows_with_difference(tiny_features):
    rng = np.random.default_rng(0)
    reds = [_garment((int(c), 30, 40)) for c in rng.integers(150, 250, 40)]
    blues = [_garment((45, 95, int(c))) for c in rng.integers(150, 250, 40)]
    reds2 = [_garment((int(c), 30, 40)) for c in rng.integers(150, 250, 40)]
    same = fid_kid(reds, reds, tiny_features, kid_subset=20)
    near = fid_kid(reds, reds2, tiny_features, kid_subset=20)
    far = fid_kid(reds, blues, tiny_features, kid_subset=20)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid_x1000"]) < 1.0
    assert far["fid"] > 10 * max(near["fid"], 1e-6)
    assert far["kid_x1000"] > near["kid_x1000"]


class _TwoPixels(torch.nn.Module):
    """A feature network whose features are two pixel values (red of the first two pixels), so a
    set's feature mean and covariance are chosen by hand; it counts its calls."""

    num_features = 2

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images[:, 0, 0, :2].double()


def _two_pixel_images(points):
    images = []
    for a, b in points:
        im = np.zeros((4, 4, 3), np.uint8)
        im[0, 0, 0], im[0, 1, 0] = a, b
        images.append(im)
    return images


def _kid_by_hand(x, y):
    # The unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 of Binkowski et al. (2018).
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


def test_fid_and_kid_equal_their_closed_forms_on_hand_made_features():
    # Real features: (100 +- 10, 100) and (100, 100 +- 10): mean (100, 100), covariance diag(200/3)
    # with the unbiased (n - 1) estimate. Generated: the same shape around (130, 100) with +- 20:
    # covariance diag(800/3). For diagonal covariances FID = |mu1 - mu2|^2 + sum (sqrt s1 - sqrt s2)^2
    # = 900 + 2 * (sqrt(800/3) - sqrt(200/3))^2 = 900 + 2 * 200/3.
    real_points = [(110, 100), (90, 100), (100, 110), (100, 90)]
    fake_points = [(150, 100), (110, 100), (130, 120), (130, 80)]
    real, fake = _two_pixel_images(real_points), _two_pixel_images(fake_points)
    net = _TwoPixels()
    features = MemoisedFeatures(net, 2)
    out = fid_kid(real, fake, features, kid_subset=4, kid_subsets=3)
    assert out["fid"] == pytest.approx(900 + 400 / 3, abs=1e-3)
    # With a subset as large as the set every KID subset is the whole set: one exact value.
    want = _kid_by_hand(np.array(real_points, float), np.array(fake_points, float))
    assert out["kid_x1000"] == pytest.approx(1000 * want, rel=1e-4)
    # (the subsets differ only in order: their spread is float32 rounding of kernel values ~1e11)
    assert out["kid_std_x1000"] <= 1e-5 * abs(out["kid_x1000"])
    # The memo: FID and KID see each batch once through the network (one real, one generated batch) ...
    assert net.calls == 2
    # ... the same real set against another generated set costs one pass more, not two ...
    mirrored = _two_pixel_images([(200 - a, b) for a, b in fake_points])
    fid_kid(real, mirrored, features, kid_subset=4, kid_subsets=3)
    assert net.calls == 3
    # ... and the memo answers what the network would: the set against itself scores zero.
    same = fid_kid(real, real, features, kid_subset=4, kid_subsets=3)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and net.calls == 3


def test_paste_back_keeps_everything_outside_the_mask():
    person = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    generated = np.zeros_like(person)
    mask = np.zeros((1, 8, 8), np.float32)
    mask[0, 2:6, 2:6] = 1.0
    out = paste_back(generated, person, mask)
    assert outside_mask_change(out, person, mask) == 0.0
    assert (out[0, 2:6, 2:6] == 0).all()
    # The raw output differs outside the mask: the measurement sees it.
    assert outside_mask_change(generated, person, mask) == pytest.approx(
        float(person.astype(float).mean(axis=-1)[mask[0][None] < 0.5].mean())
    )


def _overfit_on_two_colours(seed=0, draws=8):
    """A tiny text-to-image head overfitted on a red and a blue garment ("a red dress", "a blue
    dress"), then sampled ``draws`` times per prompt: the mean garment colour (R, G, B) of each
    prompt's draws, red prompt first."""
    from unifashion.config import GenerationTrainingConfig
    from unifashion.models.retrieval import RetrievalModel
    from unifashion.pipelines.generation import text_condition
    from unifashion.training.loop import LossLog, adamw
    from unifashion.training.phase1 import latent_scale, train_vae

    torch.manual_seed(seed)
    model = RetrievalModel.build("tiny").eval()
    red, blue = _garment((200, 30, 40), size=16), _garment((45, 95, 210), size=16)
    pixels = np.stack([red, blue])
    vae = Generator.build(TINY, "text2image", 64).vae
    vae_cfg = GenerationTrainingConfig(vae_steps=300, vae_batch_size=2, vae_lr=3e-3, vae_crop=0, bf16=False)
    train_vae(vae, [pixels], vae_cfg, LossLog(None), progress=False)
    gen = Generator.build(TINY, "text2image", 64, image_hw=(16, 16), vae=vae, latent_scale=latent_scale(vae, pixels))
    latents = gen.encode_latents(from_pixels(pixels))
    states, mask = text_condition(model, ["a red dress", "a blue dress"], bf16=False)
    rows = torch.arange(8) % 2
    opt = adamw(list(gen.named_parameters()), 2e-3, 0.0)
    sched = training_schedule(TINY)
    g = torch.Generator().manual_seed(seed)
    gen.train()
    for _ in range(400):
        # Offset noise (the training default): without it the colour at sampling time follows the
        # random mean of the starting noise as much as the prompt (see Generator.q2i_loss).
        loss = gen.q2i_loss(
            latents[rows], states[rows], mask[rows], None, sched, g, drop_rate=0.1, noisy_share=0.5, noise_offset=0.1
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()
    # Several starting noises per prompt (rows red, blue, red, blue, ...): one draw alone can still
    # land on the other colour now and then; the mean over the draws is what the prompt decides.
    many = torch.arange(2 * draws) % 2
    out = to_pixels(
        gen.decode_latents(gen.sample(states[many], mask[many], sampler="plms", steps=20, guidance_scale=3.0))
    )
    colours = out[:, 4:12, 5:11].reshape(2 * draws, -1, 3).mean(1)
    return colours[0::2].mean(0), colours[1::2].mean(0)


@pytest.mark.slow
def test_the_condition_conditions_a_tiny_model_overfitted_on_two_colours():
    """Two prompts, a red and a blue garment: after overfitting, each prompt draws its colour."""
    r_img, b_img = _overfit_on_two_colours()
    # Means over 8 draws per prompt. Over 12 runs (seeds 0-3 with 1 thread, seeds 0-1 with 2 threads,
    # each with oneDNN's AVX512 and AVX2 kernels) the smallest values were: red R - B 113, blue B - R
    # 79, both 216, R red - R blue 58 (the blue garment can still be pale), B blue - B red 144.
    # Each prompt's garment is its own colour (red: 200, 30, 40; blue: 45, 95, 210) ...
    assert r_img[0] > r_img[2] + 60, (r_img, b_img)
    assert b_img[2] > b_img[0] + 40, (r_img, b_img)
    assert (b_img[2] - b_img[0]) - (r_img[2] - r_img[0]) > 120, (r_img, b_img)
    # ... and the two prompts differ the right way round: the red one redder, the blue one bluer.
    assert r_img[0] > b_img[0] + 20, (r_img, b_img)
    assert b_img[2] > r_img[2] + 60, (r_img, b_img)


def test_given_starting_noise_replaces_the_seeds_draw():
    torch.manual_seed(0)
    gen = Generator.build(TINY, "text2image", 64).eval()
    states = _states()
    shape = (2, TINY.latent_channels, *gen.latent_hw)
    seeded = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(gen.sample(states, steps=3, noise=seeded), gen.sample(states, steps=3, seed=5))
    assert not torch.allclose(gen.sample(states, steps=3, noise=-seeded), gen.sample(states, steps=3, seed=5))
    with pytest.raises(ConfigError, match=r"noise: expected shape \(2, .*got \(1, "):
        gen.sample(states, steps=3, noise=torch.zeros(1, *shape[1:]))


def _loss_of_a_zero_unet(monkeypatch, cfg, rows: int, seed: int):
    """(loss(**q2i_loss options), the t of each call, the schedule) of a text2image head whose U-Net
    predicts 0, on clean latents x_0 = 0: the loss is then the target's mean square."""
    torch.manual_seed(0)
    gen = Generator.build(cfg, "text2image", 64)
    seen = []

    def zero(noisy, t, cond, mask, extra):
        seen.append(t.clone())
        return torch.zeros_like(noisy)

    monkeypatch.setattr(gen, "predict_noise", zero)
    latents = torch.zeros(rows, cfg.latent_channels, *gen.latent_hw)
    states, schedule = _states(rows), training_schedule(cfg)

    def loss(**kw):
        return float(gen.q2i_loss(latents, states, None, None, schedule, torch.Generator().manual_seed(seed), **kw))

    return loss, seen, schedule


def test_offset_noise_and_noisy_share_shape_what_the_loss_trains_on(monkeypatch):
    """The loss target is the noise: with a U-Net that predicts 0 the loss is the noise's mean
    square, 1 + offset^2 with offset noise; noisy_share moves the noise levels to the top fifth."""
    loss, seen, _ = _loss_of_a_zero_unet(monkeypatch, TINY, rows=512, seed=0)
    assert loss() == pytest.approx(1.0, abs=0.02)
    assert loss(noise_offset=1.0) == pytest.approx(2.0, abs=0.15)
    seen.clear()
    loss(noisy_share=1.0)
    assert int(seen[0].min()) >= 800
    seen.clear()
    loss(noisy_share=0.5)
    share = float((seen[0] >= 800).float().mean())
    assert share == pytest.approx(0.5 + 0.5 * 0.2, abs=0.07)


def test_min_snr_weights_each_row_by_its_clamped_snr(monkeypatch):
    """With a U-Net that predicts 0 each row's error is its noise's mean square; Min-SNR-gamma
    multiplies it by min(SNR(t), gamma) / SNR(t): a gamma above every SNR changes nothing, and
    a small one gives the weighted mean computed here by hand from the same t."""
    loss, seen, schedule = _loss_of_a_zero_unet(monkeypatch, TINY, rows=64, seed=3)
    plain = loss()
    snr_all = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    assert loss(min_snr_gamma=float(snr_all.max()) * 2) == pytest.approx(plain, rel=1e-5)
    seen.clear()
    weighted = loss(min_snr_gamma=5.0)
    t = seen[0]
    noise = torch.randn(
        (64, TINY.latent_channels, 16, 16), generator=torch.Generator().manual_seed(3)
    )  # its first draw
    snr = snr_all[t]
    expected = (noise.pow(2).flatten(1).mean(dim=1) * snr.clamp(max=5.0) / snr).mean()
    assert weighted == pytest.approx(float(expected), rel=1e-5)
    assert weighted < plain * 0.9  # rows with SNR > 5 (the clean end of the schedule) count less


def test_a_cloth_latent_tryon_head_reads_the_cloths_latent(tmp_path):
    from PIL import Image

    from unifashion.data.records import ImageRef
    from unifashion.pipelines.generation import encode_images, fit_image, inpaint_inputs

    e = extra_channels("tryon", TINY.latent_channels, cloth_latent=True)
    assert e == extra_channels("tryon", TINY.latent_channels) + TINY.latent_channels
    with pytest.raises(ConfigError, match="cloth_latent"):
        extra_channels("design", TINY.latent_channels, cloth_latent=True)
    torch.manual_seed(0)
    gen = Generator.build(TINY, "tryon", 64, image_hw=(32, 24), cloth_latent=True).eval()
    assert gen.unet.config.in_channels == TINY.latent_channels + e
    gen.save_pretrained(tmp_path / "head")
    assert Generator.from_pretrained(tmp_path / "head").spec.cloth_latent

    paths = {}
    for name, colour in (("person", (200, 180, 160)), ("mask", (255, 255, 255)), ("red", (220, 20, 20))):
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (24, 32) if name != "red" else (40, 40), colour).save(paths[name])
    paths["blue"] = tmp_path / "blue.png"
    Image.new("RGB", (40, 40), (20, 20, 220)).save(paths["blue"])
    pose = np.zeros((18, 3), np.float32)

    def inputs(cloth):
        return inpaint_inputs(
            gen,
            persons=[ImageRef(str(paths["person"]))],
            masks=[ImageRef(str(paths["mask"]))],
            poses=[pose],
            cloths=None if cloth is None else [ImageRef(str(paths[cloth]))],
        )

    red, blue = inputs("red").extra, inputs("blue").extra
    assert red.shape == (1, e, *gen.latent_hw)
    assert torch.equal(red[:, : e - 4], blue[:, : e - 4])  # the person's channels do not depend on the cloth
    own = encode_images(gen, fit_image(Image.open(paths["red"]), gen.image_hw)[None])
    assert torch.allclose(red[:, e - 4 :], own)
    assert not torch.allclose(red[:, e - 4 :], blue[:, e - 4 :])
    with pytest.raises(UniFashionError, match="cloth image"):
        inputs(None)


def test_zero_terminal_snr_ends_the_schedule_in_noise_and_every_sampler_stays_finite():
    from dataclasses import replace

    from unifashion.models.generator import TERMINAL_ALPHA_BAR

    with pytest.raises(ConfigError, match="v_prediction"):
        training_schedule(replace(TINY, zero_terminal_snr=True))
    # A scaled-linear schedule ends well above zero (SD's at alpha_bar 0.0047): the image's mean shows through.
    linear = replace(TINY, beta_schedule="scaled_linear", prediction_type="v_prediction")
    base = training_schedule(linear).alphas_cumprod
    zero = training_schedule(replace(linear, zero_terminal_snr=True)).alphas_cumprod
    assert float(base[-1]) > 1000 * TERMINAL_ALPHA_BAR
    assert float(zero[0]) == pytest.approx(float(base[0]), rel=1e-6)  # the clean end is kept
    assert float(zero[-1]) == pytest.approx(TERMINAL_ALPHA_BAR, rel=1e-3)  # the noisy end is (all but) pure noise
    assert bool((zero[1:] < zero[:-1]).all())
    cfg = replace(TINY, prediction_type="v_prediction", zero_terminal_snr=True)
    torch.manual_seed(0)
    gen = Generator.build(cfg, "text2image", 64).eval()
    for sampler in SAMPLERS:
        for spacing in ("leading", "trailing"):
            gen.config = replace(cfg, timestep_spacing=spacing)
            out = gen.sample(_states(1), sampler=sampler, steps=4)
            assert torch.isfinite(out).all(), (sampler, spacing)


def test_v_prediction_trains_on_the_velocity(monkeypatch):
    """With a U-Net that predicts 0 the loss is the target's mean square: for clean latents x_0 = 0
    the velocity sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 has mean square E[alpha_bar] < 1."""
    from dataclasses import replace

    loss_of, _, schedule = _loss_of_a_zero_unet(monkeypatch, replace(TINY, prediction_type="v_prediction"), 512, 0)
    loss = loss_of()
    assert loss == pytest.approx(float(schedule.alphas_cumprod.mean()), abs=0.05)
    assert loss < 0.7


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    """The U-Net's checkpointing switch (generation.gradient_checkpointing) trades memory for compute only."""
    torch.manual_seed(0)
    gen = Generator.build(TINY, "tryon", 64, image_hw=(32, 24)).train()
    latents = torch.randn(2, 4, *gen.latent_hw)
    extra = torch.randn(2, extra_channels("tryon", 4), *gen.latent_hw)
    schedule = training_schedule(TINY)

    def grads():
        gen.zero_grad()
        loss = gen.q2i_loss(latents, _states(), None, extra, schedule, torch.Generator().manual_seed(3), 0.0)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in gen.unet.named_parameters() if p.grad is not None}

    inner = gen.unet.down_blocks[0].resnets[0].conv1  # inside a checkpointed block
    calls = []
    inner.register_forward_hook(lambda *_: calls.append(1))
    loss_plain, plain = grads()
    assert len(calls) == 1
    gen.unet.enable_gradient_checkpointing()
    loss_ckpt, ckpt = grads()
    assert len(calls) == 3  # checkpointed: the block runs again in the backward pass
    assert torch.equal(loss_plain, loss_ckpt)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_a_cloth_beside_tryon_head_sees_person_and_cloth_side_by_side(tmp_path, monkeypatch):
    """CatVTON's concatenation: the U-Net reads [person | cloth] twice as wide, with no input channels
    for the cloth; the left half holds the noisy latent and our inputs, the right half the clean cloth
    latent in the latent and masked-image slots with mask 0 and no pose; only the left half comes back.
    The person's prediction depends on the cloth through the U-Net alone (no cloth channel), sampling
    works, and the spec survives a save."""
    c = TINY.latent_channels
    e = extra_channels("tryon", c, cloth_latent=True)
    with pytest.raises(ConfigError, match="cloth_beside: needs cloth_latent"):
        Generator.build(TINY, "tryon", 64, image_hw=(32, 24), cloth_beside=True)
    torch.manual_seed(0)
    gen = Generator.build(TINY, "tryon", 64, image_hw=(32, 24), cloth_latent=True, cloth_beside=True).eval()
    assert gen.unet.config.in_channels == c + extra_channels("tryon", c)
    h, w = gen.latent_hw
    noisy, extra = torch.randn(2, c, h, w), torch.randn(2, e, h, w)
    extra[:, c] = (extra[:, c] > 0).float()  # the mask
    seen = {}
    real = gen.unet.forward

    def spy(x, *args, **kwargs):
        seen["x"] = x
        return real(x, *args, **kwargs)

    monkeypatch.setattr(gen.unet, "forward", spy)
    cond, mask, t = (
        torch.randn(2, 3, TINY.cross_attention_dim),
        torch.ones(2, 3, dtype=torch.long),
        torch.tensor([5, 50]),
    )
    with torch.no_grad():
        out = gen.predict_noise(noisy, t, cond, mask, extra)
    x = seen["x"]
    assert out.shape == noisy.shape and x.shape == (2, c + e - c, h, 2 * w)
    cloth = extra[:, -c:]
    assert torch.equal(x[..., :w], torch.cat([noisy, extra[:, :-c]], dim=1))
    assert torch.equal(x[:, :c, :, w:], cloth) and torch.equal(x[:, c : 2 * c, :, w:], cloth)
    assert not x[:, 2 * c :, :, w:].any()  # mask 0 (keep), no pose
    other = extra.clone()
    other[:, -c:] = torch.randn_like(cloth)
    with torch.no_grad():
        assert not torch.allclose(gen.predict_noise(noisy, t, cond, mask, other), out, atol=1e-4)
    monkeypatch.undo()
    images = gen.sample(torch.randn(1, 5, 64), None, steps=2, seed=0, extra=extra[:1])
    assert images.shape == (1, c, h, w)  # latents
    gen.save_pretrained(tmp_path / "head")
    loaded = Generator.from_pretrained(tmp_path / "head").eval()
    assert loaded.spec.cloth_beside and loaded.spec.cloth_latent
    with torch.no_grad():
        assert torch.allclose(loaded.predict_noise(noisy, t, cond, mask, extra), out, atol=1e-5)

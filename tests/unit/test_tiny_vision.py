import numpy as np
import torch

from unifashion.backbones.vision import load_vision_encoder
from unifashion.config import get_preset


def test_tiny_cnn_is_seeded_frozen_and_leaves_the_global_rng_alone():
    cfg = get_preset("tiny").vision
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = load_vision_encoder(cfg)
    assert torch.equal(torch.rand(1), expected_next)  # building it did not consume global RNG
    b = load_vision_encoder(cfg)
    images = [np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)]
    fa, fb = a.encode(images), b.encode(images)
    assert torch.equal(fa.patch, fb.patch)
    assert fa.patch.shape == (1, (cfg.image_size // 8) ** 2, cfg.feature_dim)
    assert not any(p.requires_grad for p in a.parameters())


def test_targetpad_pads_long_images_to_the_target_ratio_then_crops():
    """CLIP4Cir's "targetpad" (the paper preset's): a 100 x 200 (w x h) white image, ratio 2 > 1.25, gets
    int((200 / 1.25 - 100) / 2) = 30 black columns each side (160 x 200), then the shorter side goes to 80
    (80 x 100) and the centre 80 x 80 is kept: 15 black columns left and right, white between. An image
    within the ratio (100 x 120) is only cropped."""
    from PIL import Image

    from unifashion.backbones.vision import target_pad, to_square

    tall = Image.new("RGB", (100, 200), (255, 255, 255))
    assert target_pad(tall, 1.25).size == (160, 200)
    arr = to_square(tall, 80, "targetpad", target_ratio=1.25)
    assert arr.shape == (80, 80, 3)
    assert (arr[:, :14] == 0).all() and (arr[:, 66:] == 0).all()
    assert (arr[:, 16:64] == 255).all()
    near_square = Image.new("RGB", (100, 120), (255, 255, 255))
    assert target_pad(near_square, 1.25) is near_square
    assert (to_square(near_square, 80, "targetpad") == 255).all()
    wide = Image.new("RGB", (300, 100), (255, 255, 255))
    assert target_pad(wide, 1.25).size == (300, 240)  # int((240 - 100) / 2) = 70 rows above and below

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

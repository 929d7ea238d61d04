"""The `paper` preset's loading code, on tiny stand-in models saved locally first."""

import dataclasses

import pytest
import torch

from unifashion.backbones import diffusion, hub, llm, text, vision
from unifashion.config import paper
from unifashion.utils.errors import BackboneError, ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    """A tiny Blip2ForImageTextRetrieval, saved as a BLIP-2 checkpoint folder."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    cfg = Blip2Config(
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=64,
            cross_attention_frequency=1,
            encoder_hidden_size=48,
            use_qformer_text_input=True,
        ),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )
    torch.manual_seed(0)
    model = Blip2ForImageTextRetrieval(cfg).eval()
    folder = tmp_path_factory.mktemp("blip2")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def _paper_vision(folder):
    return dataclasses.replace(paper().vision, source=str(folder), image_size=32, feature_dim=48)


def _paper_qformer(folder):
    return dataclasses.replace(
        paper().qformer,
        source=str(folder),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=64,
        cross_attention_frequency=1,
        num_query_tokens=4,
    )


def test_blip2_vision_tower_loads_from_a_local_folder(blip2_folder):
    folder, reference = blip2_folder
    enc = vision.load_vision_encoder(_paper_vision(folder))
    pixels = torch.randn(2, 3, 32, 32)
    feats = enc(pixels)
    with torch.no_grad():
        expected = reference.vision_model(pixel_values=pixels).last_hidden_state
    assert feats.patch.shape == (2, 1 + 16, 48)
    assert torch.allclose(feats.patch, expected, atol=1e-6)


def test_blip2_qformer_loads_with_its_heads(blip2_folder):
    folder, reference = blip2_folder
    embeddings, qformer, query_tokens, heads = text.load_blip2_qformer(_paper_qformer(folder), 48)
    assert torch.equal(query_tokens, reference.query_tokens.detach())
    for name, tensor in reference.qformer.state_dict().items():
        assert torch.equal(qformer.state_dict()[name], tensor), name
    assert torch.equal(embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert set(heads) >= {"vision_projection", "text_projection", "itm_head"} and heads["missing"] == []


def test_blip2_captioning_checkpoint_without_text_parts(tmp_path):
    """Blip2ForConditionalGeneration checkpoints have no text embeddings or text FFN."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    cfg = Blip2Config(
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=64,
            cross_attention_frequency=1,
            encoder_hidden_size=48,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
            max_position_embeddings=64,
        ),
        num_query_tokens=4,
    )
    model = Blip2ForConditionalGeneration(cfg).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    _, qformer, query_tokens, heads = text.load_blip2_qformer(_paper_qformer(tmp_path), 48)
    assert {"embeddings", "text_ffn", "itm_head"} <= set(heads["missing"])
    layer = qformer.encoder.layer[0]
    assert torch.equal(layer.intermediate.dense.weight, layer.intermediate_query.dense.weight)
    assert torch.equal(query_tokens, model.query_tokens.detach())


def test_blip2_config_mismatch_is_named(blip2_folder):
    folder, _ = blip2_folder
    wrong = dataclasses.replace(_paper_qformer(folder), num_layers=3)
    with pytest.raises(BackboneError, match=r"qformer\.num_layers"):
        text.load_blip2_qformer(wrong, 48)


def test_any_causal_lm_loads_from_a_local_folder(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llm.smollm2_dir()[0]))
    model = llm.build_tiny_llama(paper().llm, vocab_size=len(tokenizer), seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    tok2, loaded = llm.load_llm(dataclasses.replace(paper().llm, source=str(tmp_path)))
    ids = tok2("a red dress", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)


def test_a_caption_head_on_a_causal_lm_without_chat_template_uses_the_papers_prompt(tmp_path):
    """A LLaVA/Vicuna-style folder whose tokenizer has no chat template: "USER: <queries> instruction ASSISTANT:"."""
    from transformers import AutoTokenizer

    from unifashion.models.captioner import Captioner, Decoding

    tokenizer = AutoTokenizer.from_pretrained(str(llm.smollm2_dir()[0]))
    tokenizer.chat_template = None
    model = llm.build_tiny_llama(paper().llm, vocab_size=len(tokenizer), seed=4)
    model.save_pretrained(tmp_path / "lm", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "lm")
    config = dataclasses.replace(paper().llm, source=str(tmp_path / "lm"), lora_rank=4, lora_alpha=8)
    captioner = Captioner.build(config, query_dim=768)
    prefix, suffix = captioner.prompt_ids("title")
    assert captioner.tokenizer.decode(prefix) == "USER: "
    assert captioner.tokenizer.decode(suffix) == " Write a short product title for this garment. ASSISTANT:"
    z = torch.randn(2, 32, 768)
    assert len(captioner.generate(z, "title", Decoding("greedy", 4))) == 2
    captioner.save_pretrained(tmp_path / "captioner")
    again = Captioner.from_pretrained(tmp_path / "captioner")
    assert again.generate(z, "title", Decoding("greedy", 4)) == captioner.eval().generate(
        z, "title", Decoding("greedy", 4)
    )


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny Stable-Diffusion-layout folder (unet/ + vae/), Paint-by-Example-style 9-channel U-Net."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=9,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
    )
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    return folder, unet, vae


def test_sd_unet_and_vae_load_from_a_local_folder(sd_folder):
    folder, unet, vae = sd_folder
    loaded_unet = diffusion.load_unet(str(folder))
    loaded_vae = diffusion.load_vae(str(folder))
    assert loaded_unet.config.in_channels == 9
    for name, tensor in unet.state_dict().items():
        assert torch.equal(loaded_unet.state_dict()[name], tensor), name
    for name, tensor in vae.state_dict().items():
        assert torch.equal(loaded_vae.state_dict()[name], tensor), name


def test_paper_image_heads_start_from_the_pretrained_unet_with_zero_extra_channels(sd_folder):
    """A try-on head on a Paint-by-Example U-Net (9 channels) reads 9 + 18 pose channels; the new
    channels start at zero, so at the start the pose changes nothing and the rest is the pretrained model."""
    from dataclasses import replace

    from unifashion.config import DiffusionConfig
    from unifashion.models.generator import Generator

    folder, unet, vae = sd_folder
    cfg = DiffusionConfig(source=str(folder), cross_attention_dim=32, image_size=16)
    head = Generator.build(cfg, "tryon", condition_dim=48).eval()
    assert head.unet.config.in_channels == 4 + 4 + 1 + 18
    assert head.spec.latent_scale == vae.config.scaling_factor
    torch.manual_seed(0)
    x = torch.randn(1, 9, 8, 8)
    cond = torch.randn(1, 3, 32)
    t = torch.tensor([10])
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=cond).sample
        pose = torch.randn(1, 18, 8, 8)
        out = head.unet(torch.cat([x, pose], dim=1), t, encoder_hidden_states=cond).sample
    assert torch.allclose(out, ref, atol=1e-5)
    # A text2image head on the same folder would need fewer channels than the U-Net has: named.
    with pytest.raises(ConfigError, match="input channels"):
        Generator.build(replace(cfg), "text2image", condition_dim=48)


def test_pickle_only_checkpoints_are_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(BackboneError, match="only pickle weights"):
        diffusion.load_unet(str(tmp_path))


def test_unreachable_hub_id_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(BackboneError, match="pass the local folder"):
        hub.resolve_source("nobody-here/not-a-model")
    with pytest.raises(BackboneError, match="no such folder"):
        hub.resolve_source("./missing/folder")

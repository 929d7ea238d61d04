"""The `paper` preset's loading code, on tiny stand-in models saved locally first."""

import dataclasses
import json
import shutil

import pytest
import torch

from unifashion.backbones import diffusion, hub, llm, text, vision
from unifashion.config import paper
from unifashion.utils.errors import BackboneError, ConfigError

pytestmark = pytest.mark.slow


def _blip2_standin(*, vocab_size: int, max_positions: int, frequency: int, vision_layers: int, seed: int):
    """A tiny Blip2ForImageTextRetrieval (ViT 48 wide, Q-Former 32 wide, 4 queries, ITC width 16)."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    cfg = Blip2Config(
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        qformer_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=vocab_size,
            max_position_embeddings=max_positions,
            cross_attention_frequency=frequency,
            encoder_hidden_size=48,
            use_qformer_text_input=True,
        ),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(cfg).eval()
    # BLIP-2's vision config initialises its linear layers at std 1e-10, which would make every
    # attention and MLP block of the stand-in a no-op: give the vision tower weights that matter.
    with torch.no_grad():
        for name, p in model.vision_model.named_parameters():
            is_norm_scale = "norm" in name and name.endswith("weight")
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if is_norm_scale else 0.0))
    return model


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    """A tiny Blip2ForImageTextRetrieval, saved as a BLIP-2 checkpoint folder."""
    model = _blip2_standin(vocab_size=100, max_positions=64, frequency=1, vision_layers=2, seed=0)
    folder = tmp_path_factory.mktemp("blip2")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def _paper_vision(folder):
    # fp32: the comparisons below are exact, and bf16 autocast (on CPUs that have it) is not.
    return dataclasses.replace(paper().vision, source=str(folder), image_size=32, feature_dim=48, autocast_bf16=False)


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
        embed_dim=16,
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
    cfg = DiffusionConfig(source=str(folder), cross_attention_dim=32, image_size=16, input_layout="concat")
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
    # A 9-channel U-Net whose folder does not say which inpainting pipeline it belongs to: asked for.
    with pytest.raises(ConfigError, match=r"diffusion\.input_layout: .* reads 9 channels .* no pipeline"):
        Generator.build(replace(cfg, input_layout="auto"), "tryon", condition_dim=48)


@pytest.mark.parametrize(
    ("pipeline", "layout"),
    [("PaintByExamplePipeline", "paint_by_example"), ("StableDiffusionInpaintPipeline", "sd_inpainting")],
)
def test_inpainting_unets_get_their_own_channel_order_and_mask_polarity(sd_folder, tmp_path, pipeline, layout):
    """Paint-by-Example reads [z, masked latent, mask with 1 = keep], SD-inpainting [z, mask with 1 = paint,
    masked latent]; ours is [z, agnostic latent, mask with 1 = paint, pose...]. The try-on head feeds the
    pretrained U-Net exactly its own convention, and text2image runs through it with everything masked."""
    import json
    import shutil

    from unifashion.config import DiffusionConfig
    from unifashion.models.generator import Generator

    folder, unet, _ = sd_folder
    source = tmp_path / pipeline
    shutil.copytree(folder, source)
    (source / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    cfg = DiffusionConfig(source=str(source), cross_attention_dim=32, image_size=16)
    head = Generator.build(cfg, "tryon", condition_dim=48).eval()
    assert head.spec.input_layout == layout
    torch.manual_seed(0)
    z, agnostic, pose = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 18, 8, 8)
    paint = (torch.rand(2, 1, 8, 8) > 0.5).float()  # ours: 1 = generate here
    cond, t = torch.randn(2, 3, 32), torch.tensor([10, 500])
    mask = torch.ones(2, 3, dtype=torch.long)
    if layout == "paint_by_example":
        theirs = torch.cat([z, agnostic, 1 - paint], dim=1)
    else:
        theirs = torch.cat([z, paint, agnostic], dim=1)
    with torch.no_grad():
        ref = unet(theirs, t, encoder_hidden_states=cond).sample
        out = head.predict_noise(z, t, cond, mask, torch.cat([agnostic, paint, pose], dim=1))
    assert torch.allclose(out, ref, atol=1e-5)
    # text2image through the same U-Net: a grey image's latent as the masked image, everything painted.
    t2i = Generator.build(cfg, "text2image", condition_dim=48).eval()
    assert t2i.spec.blank_inpaint and t2i.unet.config.in_channels == 9
    with torch.no_grad():
        grey = t2i.encode_latents(torch.zeros(1, 3, 16, 16)).expand(2, -1, -1, -1)
        full = torch.ones(2, 1, 8, 8)
        if layout == "paint_by_example":
            theirs = torch.cat([z, grey, 1 - full], dim=1)
        else:
            theirs = torch.cat([z, full, grey], dim=1)
        ref = unet(theirs, t, encoder_hidden_states=cond).sample
        out = t2i.predict_noise(z, t, cond, mask, None)
    assert torch.allclose(out, ref, atol=1e-5)
    images = t2i.sample(torch.randn(1, 4, 48), None, steps=2, seed=0)
    assert images.shape[0] == 1


def test_a_stableviton_unet_reads_its_own_channels_with_zeros_for_densepose(sd_folder, tmp_path):
    """StableVITON's U-Net reads [z, agnostic latent, mask with 1 = keep, DensePose latent] (its dataset.py
    inverts VITON-HD's agnostic mask); we have no DensePose, so its 4 channels read zeros and our pose
    heatmaps go to new zero-weight channels after them: at the start the head computes exactly what
    StableVITON's U-Net computes with a blank DensePose."""
    from diffusers import UNet2DConditionModel

    from unifashion.config import DiffusionConfig
    from unifashion.models.generator import Generator

    folder, _, _ = sd_folder
    source = tmp_path / "stableviton"
    torch.manual_seed(0)
    config = {**dict(UNet2DConditionModel.load_config(folder / "unet")), "in_channels": 13}
    unet = UNet2DConditionModel.from_config(config).eval()
    unet.save_pretrained(source / "unet", safe_serialization=True)
    shutil.copytree(folder / "vae", source / "vae")
    (source / "model_index.json").write_text(json.dumps({"_class_name": "StableVITON"}))
    cfg = DiffusionConfig(source=str(source), cross_attention_dim=32, image_size=16)
    head = Generator.build(cfg, "tryon", condition_dim=48).eval()
    assert head.spec.input_layout == "stableviton" and head.unet.config.in_channels == 4 + 4 + 1 + 4 + 18
    z, agnostic, pose = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 18, 8, 8)
    paint = (torch.rand(2, 1, 8, 8) > 0.5).float()
    cond, t, mask = torch.randn(2, 3, 32), torch.tensor([10, 500]), torch.ones(2, 3, dtype=torch.long)
    with torch.no_grad():
        ref = unet(torch.cat([z, agnostic, 1 - paint, torch.zeros(2, 4, 8, 8)], dim=1), t, cond).sample
        out = head.predict_noise(z, t, cond, mask, torch.cat([agnostic, paint, pose], dim=1))
    assert torch.allclose(out, ref, atol=1e-5)


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


# ---------------------------------------------------------------------------
# The real BLIP-2 vocabulary, pickle checkpoints and hub revisions


def _real_vocab_blip2():
    """Salesforce/blip2-itm-vit-g's config.json (Q-Former vocabulary 30523 = BERT + "[DEC]",
    512 positions, cross-attention every other layer), shrunk in depth and width only."""
    return _blip2_standin(vocab_size=30523, max_positions=512, frequency=2, vision_layers=1, seed=1)


def _shrunk_paper_qformer(folder):
    return dataclasses.replace(
        paper().qformer,
        source=str(folder),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        num_query_tokens=4,
        embed_dim=16,
    )


@pytest.fixture(scope="module")
def real_vocab_folder(tmp_path_factory):
    model = _real_vocab_blip2()
    folder = tmp_path_factory.mktemp("blip2-30523")
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def test_the_paper_qformer_has_blip2s_vocabulary_and_loads_it(real_vocab_folder):
    folder, reference = real_vocab_folder
    assert paper().qformer.vocab_size == 30523
    embeddings, _, _, heads = text.load_blip2_qformer(_shrunk_paper_qformer(folder), 48)
    assert embeddings.word_embeddings.weight.shape == (30523, 32)
    assert torch.equal(embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)
    assert heads["missing"] == []


def test_a_vocabulary_mismatch_is_named_before_any_weight_is_read(real_vocab_folder, tmp_path, monkeypatch):
    folder, _ = real_vocab_folder
    wrong = dataclasses.replace(_shrunk_paper_qformer(folder), vocab_size=30522)
    # The config.json disagrees: refused from the config alone.
    with pytest.raises(BackboneError, match=r"qformer\.vocab_size: .* has 30523, config has 30522"):
        text.load_blip2_qformer(wrong, 48)
    # A config.json that lies about the vocabulary: the tensor header is read, no weight loaded.
    import json
    import shutil

    lying = tmp_path / "lying"
    shutil.copytree(folder, lying)
    meta = json.loads((lying / "config.json").read_text())
    meta["qformer_config"]["vocab_size"] = 30522
    (lying / "config.json").write_text(json.dumps(meta))

    def no_loading(*args, **kwargs):
        raise AssertionError("a weight was loaded before the vocabulary was checked")

    monkeypatch.setattr(hub, "load_prefixed_tensors", no_loading)
    with pytest.raises(BackboneError, match=r"has 30523 word embeddings, config has 30522"):
        text.load_blip2_qformer(dataclasses.replace(wrong, source=str(lying)), 48)


def test_the_qformer_tokenizer_is_always_bert_with_dec(real_vocab_folder, tmp_path):
    """Without tokenizer files, and with a captioning checkpoint's LLM tokenizer beside the weights,
    the Q-Former still reads BERT uncased WordPiece + "[DEC]" (id 30522): every id fits its 30523 rows."""
    import shutil

    from transformers import AutoTokenizer

    from unifashion.config import ModelConfig
    from unifashion.models.retrieval import RetrievalModel

    folder, _ = real_vocab_folder
    with_llm_tokenizer = tmp_path / "captioning"
    shutil.copytree(folder, with_llm_tokenizer)
    AutoTokenizer.from_pretrained(str(llm.smollm2_dir()[0])).save_pretrained(with_llm_tokenizer)
    for source in (folder, with_llm_tokenizer):
        tok = text.load_qformer_tokenizer(_shrunk_paper_qformer(source))
        assert len(tok) == 30523 and tok.bos_token == "[DEC]" and tok.convert_tokens_to_ids("[DEC]") == 30522
        assert tok("a red dress")["input_ids"] == [101, 1037, 2417, 4377, 102]  # BERT uncased: [CLS] a red dress [SEP]
    # The whole retrieval model on the stand-in: text ids index the 30523-row table.
    config = ModelConfig(preset="paper", vision=_paper_vision(folder), qformer=_shrunk_paper_qformer(folder))
    model = RetrievalModel.build(config)
    batch = model.tokenize(["[DEC] a red dress with long sleeves"])
    assert int(batch.input_ids.max()) == 30522
    assert model.qformer.text_embedding(batch).shape == (1, 16)
    # A Q-Former whose table is smaller than the tokenizer is refused, by name.
    small = dataclasses.replace(_shrunk_paper_qformer(folder), vocab_size=30522)
    with pytest.raises(BackboneError, match=r"qformer\.vocab_size: the tokenizer .* has 30523 tokens"):
        text.load_qformer_tokenizer(small)


def test_a_pickle_only_checkpoint_loads_after_conversion(tmp_path):
    """Salesforce/blip2-itm-vit-g ships pytorch_model.bin: refused with the command that converts it,
    which reads it with weights_only=True and writes safetensors (shards and their index too)."""
    import json

    from unifashion.cli import main

    reference = _real_vocab_blip2()
    src = tmp_path / "bin"
    reference.save_pretrained(src)
    # The layout transformers 4 wrote with safe_serialization=False: pickled shards + their index.
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({k: state[k] for k in shard}, src / file)
        weight_map |= {k: file for k in shard}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for file in src.glob("*.safetensors*"):
        file.unlink()
    assert sorted(p.name for p in src.iterdir()) == [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
    ]
    with pytest.raises(BackboneError, match="unifashion convert weights"):
        text.load_blip2_qformer(_shrunk_paper_qformer(src), 48)
    out = tmp_path / "converted"
    assert main(["convert", "weights", str(src), str(out)]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in out.glob("model-*.safetensors")}
    _, qformer, query_tokens, heads = text.load_blip2_qformer(_shrunk_paper_qformer(out), 48)
    for name, tensor in reference.qformer.state_dict().items():
        assert torch.equal(qformer.state_dict()[name], tensor), name
    assert torch.equal(query_tokens, reference.query_tokens.detach())
    assert heads["missing"] == []
    # transformers reads the converted folder too (its safetensors carry the metadata it needs).
    from transformers import Blip2ForImageTextRetrieval

    again = Blip2ForImageTextRetrieval.from_pretrained(out, use_safetensors=True)
    assert torch.equal(again.itm_head.weight, reference.itm_head.weight)


class _Payload:
    """Unpickling this would create ``marker`` (what a malicious checkpoint would do instead)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_the_converter_refuses_a_pickle_that_runs_code(tmp_path):
    from unifashion.backbones.convert import ConvertError, convert_weights

    marker = tmp_path / "code-ran"
    bad = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, bad)
    with pytest.raises(ConvertError, match=r"model\.pth: refused"):
        convert_weights(bad, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_single_file_checkpoints_give_their_state_dict(tmp_path):
    """{"epoch", "<ModelClass>": state} as the official release saves it, a tied weight, and the
    choice between several state dicts."""
    from safetensors.torch import load_file

    from unifashion.backbones.convert import ConvertError, convert_weights

    shared = torch.randn(5, 3)
    state = {"embed.weight": shared, "head.weight": shared, "query_tokens": torch.randn(1, 4, 3)}
    release = tmp_path / "cir.pth"
    torch.save({"epoch": 3, "Blip2QformerCirCls": state}, release)
    report = convert_weights(release, tmp_path / "one")
    loaded = load_file(tmp_path / "one" / "model.safetensors")
    assert report["converted"][0]["tensors"] == 3
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    two = tmp_path / "two.ckpt"
    torch.save({"state_dict": state, "ema": {"x": torch.ones(1)}}, two)
    with pytest.raises(ConvertError, match=r"several entries hold tensors \(\['ema', 'state_dict'\]\); name one"):
        convert_weights(two, tmp_path / "x")
    convert_weights(two, tmp_path / "ema", key="ema")
    assert list(load_file(tmp_path / "ema" / "model.safetensors")) == ["x"]
    with pytest.raises(ConvertError, match=r"no entry 'weights'"):
        convert_weights(two, tmp_path / "y", key="weights")


def test_hub_ids_take_a_revision(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo, revision=None, allow_patterns=None):
        calls.append((repo, revision))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert hub.resolve_source("Salesforce/blip2-itm-vit-g@refs/pr/5") == tmp_path
    assert hub.resolve_source("CompVis/stable-diffusion-v1-4") == tmp_path
    assert calls == [("Salesforce/blip2-itm-vit-g", "refs/pr/5"), ("CompVis/stable-diffusion-v1-4", None)]
    with pytest.raises(BackboneError, match="'@' must be followed by a revision"):
        hub.resolve_source("Salesforce/blip2-itm-vit-g@")


# CompVis/stable-diffusion-v1-4's scheduler/scheduler_config.json.
SD14_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.7.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def test_the_noise_schedule_is_the_sources(sd_folder, tmp_path):
    """SD's betas run 0.00085 -> 0.012 (scaled linear); diffusers' defaults (0.0001 -> 0.02) would train
    and sample the pretrained U-Net under a schedule it never saw. A config that differs is refused."""
    import json
    import shutil

    from unifashion.config import DiffusionConfig
    from unifashion.models.generator import Generator, make_sampler, training_schedule

    folder, _, vae = sd_folder
    sd = tmp_path / "sd"
    shutil.copytree(folder, sd)
    (sd / "scheduler").mkdir()
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD14_SCHEDULER))
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "PaintByExamplePipeline"}))
    ours = dataclasses.replace(paper().diffusion, source=str(sd), cross_attention_dim=32, image_size=16)
    head = Generator.build(ours, "tryon", condition_dim=48)
    betas = training_schedule(head.config).betas
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    sampler = make_sampler("plms", head.config)
    assert sampler.betas[-1].item() == pytest.approx(0.012)
    with pytest.raises(BackboneError, match=r"diffusion\.beta_start: .*scheduler_config.json has 0.00085"):
        Generator.build(DiffusionConfig(source=str(sd), beta_schedule="scaled_linear"), "tryon", condition_dim=48)
    # The VAE can come from elsewhere (the paper's try-on: StableVITON's VITON-HD VAE).
    other = tmp_path / "other-vae"
    torch.manual_seed(5)
    from diffusers import AutoencoderKL

    replacement = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        scaling_factor=0.5,
    )
    replacement.save_pretrained(other / "vae", safe_serialization=True)
    head = Generator.build(dataclasses.replace(ours, vae_source=str(other)), "tryon", condition_dim=48)
    assert head.spec.latent_scale == 0.5 != vae.config.scaling_factor


def _as_lavis(reference) -> dict[str, torch.Tensor]:
    """The stand-in's weights under the names LAVIS's Blip2Qformer gives them (lavis/models/eva_vit.py:
    cls_token, pos_embed, patch_embed.proj, blocks.i.{norm1, attn.qkv, attn.q_bias, attn.v_bias,
    attn.proj, norm2, mlp.fc1, mlp.fc2}; lavis/models/blip2_models/Qformer.py: a BertLMHeadModel
    ``Qformer`` with bert.embeddings.{word_embeddings, position_embeddings, LayerNorm, position_ids},
    bert.encoder.layer.i.{attention, crossattention}.{self, output}, {intermediate, output}{,_query},
    and cls.predictions), plus ln_vision, query_tokens, vision_proj, text_proj, itm_head and temp."""
    hf = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    d = reference.config.vision_config.hidden_size
    out = {
        "visual_encoder.cls_token": hf["vision_model.embeddings.class_embedding"],
        "visual_encoder.pos_embed": hf["vision_model.embeddings.position_embedding"],
        "visual_encoder.patch_embed.proj.weight": hf["vision_model.embeddings.patch_embedding.weight"],
        "visual_encoder.patch_embed.proj.bias": hf["vision_model.embeddings.patch_embedding.bias"],
        "ln_vision.weight": hf["vision_model.post_layernorm.weight"],
        "ln_vision.bias": hf["vision_model.post_layernorm.bias"],
        "query_tokens": hf["query_tokens"],
        "temp": torch.tensor(0.07),
    }
    for i in range(reference.config.vision_config.num_hidden_layers):
        hf_block, lavis_block = f"vision_model.encoder.layers.{i}.", f"visual_encoder.blocks.{i}."
        bias = hf[hf_block + "self_attn.qkv.bias"]
        out[lavis_block + "attn.q_bias"], out[lavis_block + "attn.v_bias"] = bias[:d], bias[2 * d :]
        for ours, theirs in (
            ("norm1", "layer_norm1"),
            ("norm2", "layer_norm2"),
            ("attn.proj", "self_attn.projection"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                out[f"{lavis_block}{ours}.{p}"] = hf[f"{hf_block}{theirs}.{p}"]
        out[lavis_block + "attn.qkv.weight"] = hf[hf_block + "self_attn.qkv.weight"]
    bert = "Qformer.bert."
    out[bert + "embeddings.word_embeddings.weight"] = hf["embeddings.word_embeddings.weight"]
    out[bert + "embeddings.position_embeddings.weight"] = hf["embeddings.position_embeddings.weight"]
    out[bert + "embeddings.LayerNorm.weight"] = hf["qformer.layernorm.weight"]
    out[bert + "embeddings.LayerNorm.bias"] = hf["qformer.layernorm.bias"]
    out[bert + "embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    for key, tensor in hf.items():
        if key.startswith("qformer.encoder.layer."):
            name = key[len("qformer.") :].replace("attention.attention.", "attention.self.")
            out[bert + name] = tensor
    q = reference.config.qformer_config
    out["Qformer.cls.predictions.bias"] = torch.zeros(q.vocab_size)
    out["Qformer.cls.predictions.transform.dense.weight"] = torch.randn(q.hidden_size, q.hidden_size)
    out["Qformer.cls.predictions.decoder.weight"] = hf["embeddings.word_embeddings.weight"]
    heads = (("vision_proj", "vision_projection"), ("text_proj", "text_projection"), ("itm_head", "itm_head"))
    for head, theirs in heads:
        for p in ("weight", "bias"):
            out[f"{head}.{p}"] = hf[f"{theirs}.{p}"]
    return out


def test_a_lavis_blip2_checkpoint_converts_and_computes_the_same(tmp_path):
    """blip2_pretrained.pth-style ({"model": state}, LAVIS names, separate q/v biases): every tensor is
    mapped or named with the reason; the folder loads strictly and gives the original's features and logits."""
    from transformers import Blip2ForImageTextRetrieval

    from unifashion.backbones.convert import ConvertError, convert_lavis_blip2
    from unifashion.cli import main

    reference = _real_vocab_blip2()
    with torch.no_grad():  # LAVIS's vision attention has q and v biases and no k bias
        for layer in reference.vision_model.encoder.layers:
            bias = torch.randn_like(layer.self_attn.qkv.bias)
            bias[48:96] = 0
            layer.self_attn.qkv.bias.copy_(bias)
    lavis = _as_lavis(reference)
    torch.save({"model": lavis}, tmp_path / "blip2_pretrained.pth")
    out = tmp_path / "blip2-hf"
    assert (
        main(
            [
                "convert",
                "lavis-blip2",
                str(tmp_path / "blip2_pretrained.pth"),
                str(out),
                "--vision-heads",
                "4",
                "--qformer-heads",
                "4",
            ]
        )
        == 0
    )
    report = convert_lavis_blip2(tmp_path / "blip2_pretrained.pth", tmp_path / "again", vision_heads=4, qformer_heads=4)
    assert set(report["not_mapped"]) == {
        "temp",
        "Qformer.bert.embeddings.position_ids",
        "Qformer.cls.predictions.bias",
        "Qformer.cls.predictions.transform.dense.weight",
        "Qformer.cls.predictions.decoder.weight",
    }
    assert report["config"]["qformer_config"]["vocab_size"] == 30523
    assert report["config"]["qformer_config"]["cross_attention_frequency"] == 2
    converted = Blip2ForImageTextRetrieval.from_pretrained(out, use_safetensors=True).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[101, 1037, 2417, 4377, 102], [101, 30522, 2417, 4377, 102]])
    inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        want = reference(**inputs, use_image_text_matching_head=True).logits_per_image
        got = converted(**inputs, use_image_text_matching_head=True).logits_per_image
    assert torch.allclose(got, want, atol=1e-5)
    # Our own loaders read the converted folder as they read a hub checkpoint.
    enc = vision.load_vision_encoder(_paper_vision(out))
    with torch.no_grad():
        want_patch = reference.vision_model(pixel_values=pixels).last_hidden_state
        assert torch.allclose(enc(pixels).patch, want_patch, atol=1e-5)
    _, _, _, heads = text.load_blip2_qformer(_shrunk_paper_qformer(out), 48)
    assert heads["missing"] == []
    # A tensor the model has no place for, or one the model needs that is absent, is named.
    broken = dict(lavis)
    del broken["Qformer.bert.encoder.layer.1.output_query.dense.weight"]
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(ConvertError, match=r"missing \['qformer\.encoder\.layer\.1\.output_query\.dense\.weight'\]"):
        convert_lavis_blip2(tmp_path / "broken.pth", tmp_path / "x", vision_heads=4, qformer_heads=4)


@pytest.mark.parametrize("variant", ["Blip2QformerCirCls", "Blip2QformerCirRerank"])
def test_the_official_releases_qformer_checkpoints_convert_and_compute_the_same(tmp_path, variant):
    """The official UniFashion release's Q-Former files as its training code writes them
    (utils.save_model: torch.save({"epoch", class name: state_dict})), the EVA vision tower in fp16
    (LAVIS's vit_precision), and each variant's extra tensors (cls: query_proj; rerank: also
    caption_proj and prompt_tokens): the entry is found without --key, every extra tensor is named
    with its reason, and the converted model computes the original's logits."""
    from transformers import Blip2ForImageTextRetrieval

    from unifashion.backbones.convert import convert_lavis_blip2
    from unifashion.cli import main

    reference = _real_vocab_blip2()
    with torch.no_grad():  # the release keeps the vision tower in fp16: the reference uses those values
        for p in reference.vision_model.parameters():
            p.copy_(p.half().float())
    lavis = {k: v.half() if k.startswith("visual_encoder.") else v for k, v in _as_lavis(reference).items()}
    width = reference.config.qformer_config.hidden_size
    extra = {"query_proj.weight": torch.randn(16, 16), "query_proj.bias": torch.zeros(16)}
    if variant == "Blip2QformerCirRerank":
        extra |= {"caption_proj.weight": torch.randn(16, width), "caption_proj.bias": torch.zeros(16)}
        extra["prompt_tokens"] = torch.randn(1, 4, width)
    release = tmp_path / "tuned_clip_best.pt"
    torch.save({"epoch": 4, variant: {**lavis, **extra}}, release)
    out = tmp_path / "qformer"
    args = ["convert", "lavis-blip2", str(release), str(out), "--vision-heads", "4", "--qformer-heads", "4"]
    assert main(args) == 0
    report = convert_lavis_blip2(release, tmp_path / "again", vision_heads=4, qformer_heads=4)
    named = {k: why for k, why in report["not_mapped"].items() if k in extra}
    assert set(named) == set(extra)
    assert all("no counterpart" not in why for why in named.values()), named
    converted = Blip2ForImageTextRetrieval.from_pretrained(out, use_safetensors=True).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[101, 1037, 2417, 4377, 102], [101, 30522, 2417, 4377, 102]])
    inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        for itm in (True, False):
            want = reference(**inputs, use_image_text_matching_head=itm).logits_per_image
            got = converted(**inputs, use_image_text_matching_head=itm).logits_per_image
            assert torch.allclose(got, want, atol=1e-4), itm


def _llava_stand_in(tokenizer):
    """llava-hf/llava-1.5-7b-hf's config.json (a Llama text model under a CLIP ViT-L/14-336 tower,
    projector "gelu", vision feature layer -2), shrunk in depth and width."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=16,
        ),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_token_index=len(tokenizer) - 1,
    )
    torch.manual_seed(6)
    return LlavaForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_the_paper_llm_is_the_language_model_of_a_llava_checkpoint(tmp_path, layout):
    """The paper's LLM is LLaVA-1.5: its folder (LlavaForConditionalGeneration, under today's key names or
    the language_model.* names of older llava-hf uploads) gives the text model with the same logits."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    assert paper().llm.source == "llava-hf/llava-1.5-7b-hf"
    tokenizer = AutoTokenizer.from_pretrained(str(llm.smollm2_dir()[0]))
    reference = _llava_stand_in(tokenizer)
    folder = tmp_path / "llava"
    reference.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    path = folder / "model.safetensors"
    state = load_file(path)
    # transformers writes the llava-hf layout (language_model.model.*, language_model.lm_head.*,
    # vision_tower.*); releases 4.52-4.57 wrote model.language_model.*, lm_head.*, model.vision_tower.*.
    assert any(k.startswith("language_model.model.layers.") for k in state) and "language_model.lm_head.weight" in state
    if layout == "current":
        renamed = {}
        for key, tensor in state.items():
            if key.startswith("language_model.model."):
                key = "model.language_model." + key[len("language_model.model.") :]
            elif key.startswith("language_model.lm_head."):
                key = key[len("language_model.") :]
            else:
                key = "model." + key
            renamed[key] = tensor
        save_file(renamed, path, metadata={"format": "pt"})
    tok, lm = llm.load_llm(dataclasses.replace(paper().llm, source=str(folder)))
    ids = tok("a red dress with long sleeves", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = lm(ids).logits
    assert type(lm).__name__ == "LlamaForCausalLM"
    assert torch.allclose(got, want, atol=1e-5)
    # A checkpoint without its language model's head is refused by name.
    state = load_file(folder / "model.safetensors")
    head = "lm_head.weight" if layout == "current" else "language_model.lm_head.weight"
    del state[head]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackboneError, match=r"incomplete \(missing \['lm_head.weight'\]\)"):
        llm.load_llm(dataclasses.replace(paper().llm, source=str(folder)))


def test_retrieval_heads_of_another_width_are_refused_not_skipped(real_vocab_folder):
    from unifashion.models.qformer import build_qformer

    folder, reference = real_vocab_folder
    model = build_qformer(_shrunk_paper_qformer(folder), 48)
    assert torch.equal(model.itm_head.weight, reference.itm_head.weight)
    assert torch.equal(model.vision_proj.weight, reference.vision_projection.weight)
    with pytest.raises(BackboneError, match=r"qformer\.embed_dim: the vision_projection .* maps 32 -> 16"):
        build_qformer(dataclasses.replace(_shrunk_paper_qformer(folder), embed_dim=256), 48)


# ---------------------------------------------------------------------------
# LDM checkpoints (Paint-by-Example, StableVITON, Stable Diffusion .ckpt) -> diffusers folders
#
# The stand-in is written under CompVis's names, mapped here from diffusers' by hand from the layout
# of ldm/modules/diffusionmodules/openaimodel.py (input_blocks / middle_block / output_blocks, resnets as
# in_layers / emb_layers / out_layers / skip_connection) and model.py (encoder.down.i.block.j, mid.block_1,
# mid.attn_1 with 1x1-conv q/k/v, decoder.up in reverse order, nin_shortcut), independently of the
# converter, which uses diffusers' own renaming.


def unet_to_ldm(state, layers_per_block, n_levels, has_attn_down, has_attn_up):
    out = {}
    lpb = layers_per_block

    def resnet(src, dst):
        for a, b in (
            ("norm1", "in_layers.0"),
            ("conv1", "in_layers.2"),
            ("time_emb_proj", "emb_layers.1"),
            ("norm2", "out_layers.0"),
            ("conv2", "out_layers.3"),
            ("conv_shortcut", "skip_connection"),
        ):
            for p in ("weight", "bias"):
                k = f"{src}.{a}.{p}"
                if k in state:
                    out[f"{dst}.{b}.{p}"] = state.pop(k)

    def attention(src, dst):
        for k in [k for k in state if k.startswith(src + ".")]:
            out[dst + k[len(src) :]] = state.pop(k)

    for a, b in (
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ):
        for p in ("weight", "bias"):
            out[f"{b}.{p}"] = state.pop(f"{a}.{p}")
    for i in range(n_levels):
        for j in range(lpb):
            idx = (lpb + 1) * i + j + 1
            resnet(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{idx}.0")
            if has_attn_down[i]:
                attention(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{idx}.1")
        if i < n_levels - 1:
            for p in ("weight", "bias"):
                out[f"input_blocks.{(lpb + 1) * (i + 1)}.0.op.{p}"] = state.pop(
                    f"down_blocks.{i}.downsamplers.0.conv.{p}"
                )
    resnet("mid_block.resnets.0", "middle_block.0")
    attention("mid_block.attentions.0", "middle_block.1")
    resnet("mid_block.resnets.1", "middle_block.2")
    for i in range(n_levels):
        for j in range(lpb + 1):
            idx = (lpb + 1) * i + j
            resnet(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{idx}.0")
            if has_attn_up[i]:
                attention(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{idx}.1")
        if i < n_levels - 1:
            slot = 2 if has_attn_up[i] else 1
            for p in ("weight", "bias"):
                out[f"output_blocks.{(lpb + 1) * i + lpb}.{slot}.conv.{p}"] = state.pop(
                    f"up_blocks.{i}.upsamplers.0.conv.{p}"
                )
    assert not state, sorted(state)[:10]
    return out


def vae_to_ldm(state, n_levels, layers_per_block):
    out = {}

    def resnet(src, dst):
        for a, b in (
            ("norm1", "norm1"),
            ("conv1", "conv1"),
            ("norm2", "norm2"),
            ("conv2", "conv2"),
            ("conv_shortcut", "nin_shortcut"),
        ):
            for p in ("weight", "bias"):
                k = f"{src}.{a}.{p}"
                if k in state:
                    out[f"{dst}.{b}.{p}"] = state.pop(k)

    def attn(src, dst):
        for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            for p in ("weight", "bias"):
                t = state.pop(f"{src}.{a}.{p}")
                out[f"{dst}.{b}.{p}"] = t[:, :, None, None] if (p == "weight" and b != "norm") else t

    for part in ("encoder", "decoder"):
        for a, b in (("conv_in", "conv_in"), ("conv_norm_out", "norm_out"), ("conv_out", "conv_out")):
            for p in ("weight", "bias"):
                out[f"{part}.{b}.{p}"] = state.pop(f"{part}.{a}.{p}")
        resnet(f"{part}.mid_block.resnets.0", f"{part}.mid.block_1")
        attn(f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1")
        resnet(f"{part}.mid_block.resnets.1", f"{part}.mid.block_2")
    for i in range(n_levels):
        for j in range(layers_per_block):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}")
        if i < n_levels - 1:
            for p in ("weight", "bias"):
                out[f"encoder.down.{i}.downsample.conv.{p}"] = state.pop(
                    f"encoder.down_blocks.{i}.downsamplers.0.conv.{p}"
                )
    for i in range(n_levels):
        level = n_levels - 1 - i
        for j in range(layers_per_block + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{level}.block.{j}")
        if i < n_levels - 1:
            for p in ("weight", "bias"):
                out[f"decoder.up.{level}.upsample.conv.{p}"] = state.pop(f"decoder.up_blocks.{i}.upsamplers.0.conv.{p}")
    for name in ("quant_conv", "post_quant_conv"):
        for p in ("weight", "bias"):
            out[f"{name}.{p}"] = state.pop(f"{name}.{p}")
    assert not state, sorted(state)[:10]
    return out


def _ldm_standin(tmp_path, in_channels: int = 9):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
    ).eval()
    ldm_unet = unet_to_ldm({k: v.clone() for k, v in unet.state_dict().items()}, 1, 2, [True, False], [False, True])
    ldm_vae = vae_to_ldm({k: v.clone() for k, v in vae.state_dict().items()}, 2, 1)
    state = {"model.diffusion_model." + k: v for k, v in ldm_unet.items()}
    state |= {"first_stage_model." + k: v for k, v in ldm_vae.items()}
    # What a Paint-by-Example checkpoint holds besides: its CLIP image encoder and learned null condition.
    state |= {"cond_stage_model.final_ln.weight": torch.ones(32), "learnable_vector": torch.randn(1, 1, 32)}
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "unet.json").write_text(json.dumps({**dict(unet.config), "in_channels": 4}))
    (configs / "vae.json").write_text(json.dumps(dict(vae.config)))
    (configs / "scheduler.json").write_text(json.dumps(SD14_SCHEDULER))
    return unet, vae, state, configs


def test_an_ldm_checkpoint_converts_to_a_diffusers_folder_that_computes_the_same(tmp_path):
    """A Lightning-style .ckpt ({"state_dict", "epoch", "global_step"}) with a 9-channel U-Net and a VAE under
    LDM names: the converted folder loads through diffusion.load_unet / load_vae and gives the originals'
    outputs; the input channels come from the checkpoint, the rest is named."""
    from unifashion.backbones.convert import ConvertError, convert_ldm
    from unifashion.cli import main

    unet, vae, state, configs = _ldm_standin(tmp_path)
    ckpt = tmp_path / "pbe.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000}, ckpt)
    out = tmp_path / "pbe"
    args = ["convert", "ldm", str(ckpt), str(out), "--unet-config", str(configs / "unet.json")]
    args += ["--vae-config", str(configs / "vae.json"), "--scheduler-config", str(configs / "scheduler.json")]
    assert main([*args, "--pipeline", "PaintByExamplePipeline"]) == 0
    report = convert_ldm(ckpt, tmp_path / "again", unet_config=configs / "unet.json", vae_config=configs / "vae.json")
    assert report["in_channels"] == 9 and report["unet"] == len(unet.state_dict())
    assert report["not_mapped"] == {"cond_stage_model": 1, "learnable_vector": 1}
    loaded_unet, loaded_vae = diffusion.load_unet(str(out)), diffusion.load_vae(str(out))
    x, t, cond = torch.randn(1, 9, 8, 8), torch.tensor([50]), torch.randn(1, 3, 32)
    pixels = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded_unet(x, t, encoder_hidden_states=cond).sample, unet(x, t, cond).sample, atol=1e-5)
        want = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        got = loaded_vae.decode(loaded_vae.encode(pixels).latent_dist.mean).sample
        assert torch.allclose(got, want, atol=1e-5)
    assert diffusion.read_schedule(str(out))["beta_start"] == 0.00085
    assert diffusion.pipeline_class(str(out)) == "PaintByExamplePipeline"
    # A U-Net tensor without a place (StableVITON's extra attention would be one) is an error, by name.
    odd = dict(state)
    odd["model.diffusion_model.output_blocks.2.1.attn_extra.weight"] = torch.zeros(4)
    torch.save({"state_dict": odd}, tmp_path / "odd.ckpt")
    with pytest.raises(ConvertError, match=r"left over \['up_blocks\.1\.attentions\.0\.attn_extra\.weight'\]"):
        convert_ldm(tmp_path / "odd.ckpt", tmp_path / "x", unet_config=configs / "unet.json")
    odd = {**state, "model.diffusion_model.extra_proj.weight": torch.zeros(4)}
    torch.save({"state_dict": odd}, tmp_path / "odd2.ckpt")
    with pytest.raises(ConvertError, match=r"1 U-Net tensors have no place .*extra_proj"):
        convert_ldm(tmp_path / "odd2.ckpt", tmp_path / "x", unet_config=configs / "unet.json")
    # A missing one is named too.
    short = {k: v for k, v in state.items() if k != "model.diffusion_model.out.2.weight"}
    torch.save({"state_dict": short}, tmp_path / "short.ckpt")
    with pytest.raises(ConvertError, match=r"missing \['conv_out.weight'\]"):
        convert_ldm(tmp_path / "short.ckpt", tmp_path / "y", unet_config=configs / "unet.json")


def test_stablevitons_try_on_checkpoint_and_its_vae_convert(tmp_path):
    """StableVITON's try-on file (VITONHD.yaml's ControlLDM, saved flat as its inference.py loads it): a
    13-channel U-Net (noisy latent, agnostic latent, mask, DensePose latent) carrying the warp attention
    blocks inside model.diffusion_model, beside the ControlNet branch, the CLIP image encoder and its
    mapper, lastzc and the DDPM buffers. The U-Net converts and computes the same; every other tensor is
    named, the warp blocks with a note. Its VITON-HD VAE (a file of an AutoencoderKL's own names, plus the
    training loss's) converts alone into a vae/ folder for diffusion.vae_source."""
    from unifashion.backbones.convert import ConvertError, convert_ldm
    from unifashion.cli import main

    unet, vae, state, configs = _ldm_standin(tmp_path, in_channels=13)
    state = {k: v for k, v in state.items() if not k.startswith("first_stage_model.")}
    warp = {
        "model.diffusion_model.warp_flow_blks.0.proj_in.weight": torch.randn(64, 64, 1, 1),
        "model.diffusion_model.warp_flow_blks.0.transformer_blocks.0.attn2.to_k.weight": torch.randn(64, 32),
        "model.diffusion_model.warp_zero_convs.0.weight": torch.zeros(64, 64, 1, 1),
        "model.diffusion_model.warp_zero_convs.0.bias": torch.zeros(64),
    }
    others = {
        "control_model.input_blocks.0.0.weight": torch.randn(32, 13, 3, 3),
        "control_model.cond_first_block.0.weight": torch.zeros(32, 4, 3, 3),
        "cond_stage_model.mapper.resblocks.0.attn.c_qkv.weight": torch.randn(96, 32),
        "proj_out.weight": torch.randn(32, 32),
        "lastzc.weight": torch.zeros(4, 4, 1, 1),
        "betas": torch.linspace(0.00085, 0.012, 10),
        "alphas_cumprod": torch.ones(10),
    }
    ckpt = tmp_path / "VITONHD.ckpt"
    torch.save({**state, **warp, **others}, ckpt)
    out = tmp_path / "stableviton"
    assert main(["convert", "ldm", str(ckpt), str(out), "--unet-config", str(configs / "unet.json")]) == 0
    report = convert_ldm(ckpt, tmp_path / "again", unet_config=configs / "unet.json")
    assert report["in_channels"] == 13 and report["unet"] == len(unet.state_dict())
    assert report["not_mapped"] == {
        "model.diffusion_model.warp_flow_blks": 2,
        "model.diffusion_model.warp_zero_convs": 2,
        "control_model": 2,
        "cond_stage_model": 2,  # the stand-in's mapper weight and final_ln (as in Paint-by-Example)
        "proj_out": 1,
        "lastzc": 1,
        "learnable_vector": 1,
        "betas": 1,
        "alphas_cumprod": 1,
    }
    assert len(report["notes"]) == 1 and "ControlNet" in report["notes"][0]
    loaded = diffusion.load_unet(str(out))
    x, t, cond = torch.randn(1, 13, 8, 8), torch.tensor([50]), torch.randn(1, 3, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, encoder_hidden_states=cond).sample, unet(x, t, cond).sample, atol=1e-5)
    assert not (out / "vae").exists()

    vae_ckpt = tmp_path / "VITONHD_VAE_finetuning.ckpt"
    bare = vae_to_ldm({k: v.clone() for k, v in vae.state_dict().items()}, 2, 1)
    torch.save({"state_dict": {**bare, "loss.logvar": torch.zeros(())}, "epoch": 7}, vae_ckpt)
    with pytest.raises(ConvertError, match=r"holds a VAE alone; give its diffusers config \(--vae-config\)"):
        convert_ldm(vae_ckpt, tmp_path / "x")
    vae_out = tmp_path / "vitonhd-vae"
    assert main(["convert", "ldm", str(vae_ckpt), str(vae_out), "--vae-config", str(configs / "vae.json")]) == 0
    assert not (vae_out / "unet").exists()
    loaded_vae = diffusion.load_vae(str(vae_out))
    pixels = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        want = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        assert torch.allclose(loaded_vae.decode(loaded_vae.encode(pixels).latent_dist.mean).sample, want, atol=1e-5)
    with pytest.raises(ConvertError, match=r"holds a U-Net; give its diffusers config \(--unet-config\)"):
        convert_ldm(ckpt, tmp_path / "y")
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "neither.ckpt")
    with pytest.raises(ConvertError, match=r"neither an LDM U-Net"):
        convert_ldm(tmp_path / "neither.ckpt", tmp_path / "z", vae_config=configs / "vae.json")

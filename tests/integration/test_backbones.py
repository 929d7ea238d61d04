"""The real offline backbones of the `mini` preset: real weights, right preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from unifashion.backbones import llm, text, vision
from unifashion.config import VisionConfig, mini

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def effnet():
    return vision.load_vision_encoder(VisionConfig(kind="efficientnet_lite0", image_size=224, resize_mode="crop"))


def test_efficientnet_classifies_chelsea_as_a_cat(effnet):
    cat = Image.fromarray(skdata.chelsea())
    logits = effnet.classify(effnet.preprocess([cat]))
    top = int(logits.argmax(-1))
    assert 281 <= top <= 285, f"top class {top} is not an ImageNet cat (281-285)"
    # The cat classes together hold most of the probability mass.
    assert float(logits.softmax(-1)[0, 281:286].sum()) > 0.5


def test_efficientnet_features_shapes_and_frozen(effnet):
    images = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.astronaut())]
    feats = effnet.encode(images)
    assert feats.patch.shape == (2, 49, 1600)  # last block (320) + head (1280)
    assert feats.pooled.shape == (2, 1600)
    assert torch.allclose(feats.pooled, feats.patch.mean(1))
    assert not any(p.requires_grad for p in effnet.parameters())
    effnet.train()
    assert not effnet.training and not effnet.net.training


def test_efficientnet_pad_mode_keeps_the_whole_image():
    tall = Image.new("RGB", (50, 100), (200, 0, 0))
    arr = vision.to_square(tall, 64, "pad", pad_value=255)
    assert arr.shape == (64, 64, 3)
    assert tuple(arr[32, 32]) == (200, 0, 0)  # garment in the middle
    assert tuple(arr[32, 0]) == (255, 255, 255)  # white bars at the sides


def test_bf16_features_agree_with_fp32():
    cfg = VisionConfig(kind="efficientnet_lite0", image_size=224, autocast_bf16=True)
    enc = vision.load_vision_encoder(cfg)
    if not enc.use_bf16:
        pytest.skip("this CPU has no native bf16; the encoder runs fp32 only")
    images = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    pixels = enc.preprocess(images)
    fast = enc(pixels).pooled
    enc.use_bf16 = False
    exact = enc(pixels).pooled
    cos = torch.nn.functional.cosine_similarity(fast, exact, dim=-1)
    assert float(cos.min()) > 0.99


@pytest.fixture(scope="module")
def minilm():
    return text.load_minilm()


def test_minilm_knows_fashion_synonyms(minilm):
    tok, bert = minilm
    e = text.sentence_embeddings(
        tok, bert, ["red floral summer dress", "crimson flowery sundress", "black leather boots"]
    )
    similar, different = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert similar > different
    assert similar > 0.4


def test_qformer_text_path_reproduces_minilm(minilm):
    tok, bert = minilm
    embeddings, qformer = text.init_qformer_from_minilm(mini().qformer, encoder_hidden_size=1280)
    embeddings.eval(), qformer.eval()
    batch = tok(
        ["a red floral summer dress with long sleeves", "jeans", "slim navy shirt, button-down collar"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        reference = bert(**batch).last_hidden_state
        ours = qformer(
            query_embeds=embeddings(input_ids=batch["input_ids"]),
            query_length=0,
            attention_mask=batch["attention_mask"],
        ).last_hidden_state
    real = batch["attention_mask"].bool()
    assert ours.shape == reference.shape
    assert float((ours - reference).abs()[real].max()) < 1e-5
    # Cross-attention is new: it exists, and every other part came from MiniLM.
    assert qformer.encoder.layer[0].has_cross_attention


def test_llm_answers_and_second_load_comes_from_cache(tmp_path, monkeypatch):
    import transformers

    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path))
    folder, converted = llm.smollm2_dir()
    assert converted and folder.is_relative_to(tmp_path)
    weights = folder / "model.safetensors"
    assert weights.exists() and (folder / "config.json").exists()
    before = weights.stat()

    # The second load reads the cached safetensors: the GGUF is never parsed again (a GGUF read
    # fails here) and the cached file is the same file, untouched.
    def no_gguf(original):
        def load(*args, **kwargs):
            assert "gguf_file" not in kwargs, "the cached load converted the GGUF again"
            return original(*args, **kwargs)

        return load

    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", no_gguf(auto.from_pretrained))
    folder2, converted2 = llm.smollm2_dir()
    tokenizer, model = llm.load_smollm2()
    after = weights.stat()
    assert folder2 == folder and not converted2
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply


def test_vision_accepts_paths_arrays_and_rgba(tmp_path, effnet):
    rgba = np.zeros((40, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    loaded = vision.load_rgb(tmp_path / "x.png")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 255, 255)
    pixels = effnet.preprocess([tmp_path / "x.png", np.full((20, 20, 3), 7, np.uint8)])
    assert pixels.shape == (2, 3, 224, 224)

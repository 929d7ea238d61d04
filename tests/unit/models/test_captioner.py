"""The caption head on the tiny preset: soft-prompt path, ITG loss, freezing, decoding, persistence, overfitting."""

import json
from dataclasses import replace

import pytest
import torch

from unifashion.config import tiny
from unifashion.models.captioner import Captioner, Decoding
from unifashion.utils.errors import ConfigError, UniFashionError

QUERY_DIM = 64  # tiny Q-Former width


@pytest.fixture(scope="module")
def captioner():
    torch.manual_seed(0)
    return Captioner.build(tiny().llm, QUERY_DIM).eval()


def test_soft_prompt_path_equals_the_token_path_when_the_soft_prompt_embeds_real_tokens(captioner):
    words = captioner.tokenizer(" a red striped dress with short sleeves", add_special_tokens=False)["input_ids"]
    prefix, suffix = captioner.prompt_ids("description")
    ids = torch.tensor([prefix + words + suffix])
    soft = captioner.llm.get_input_embeddings()(torch.tensor([words]))  # (1, T, h)
    embeds = captioner.prompt_embeddings(soft, "description")
    with torch.no_grad():
        by_embeds = captioner.llm(inputs_embeds=embeds).logits
        by_ids = captioner.llm(input_ids=ids).logits
    assert torch.allclose(by_embeds, by_ids, atol=1e-5)
    for decoding in (Decoding("greedy", 8), Decoding("beam", 8, num_beams=3)):
        new = captioner.generate_from_embeddings(embeds, decoding)[0]
        with torch.no_grad():
            full = captioner.llm.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **decoding.generate_kwargs(captioner.end_id, captioner.pad_id),
            )[0, ids.shape[1] :].tolist()
        assert len(new) > 0
        assert new == full[: len(new)] and (len(new) == len(full) or full[len(new)] == captioner.end_id)
    # Sampling at a near-zero temperature is greedy decoding.
    cold = Decoding("sample", 8, temperature=1e-4, seed=9)
    assert captioner.generate_from_embeddings(embeds, cold) == captioner.generate_from_embeddings(
        embeds, Decoding("greedy", 8)
    )


def test_itg_loss_equals_the_language_model_loss_on_the_answer_tokens(captioner):
    torch.manual_seed(1)
    z = torch.randn(2, 8, QUERY_DIM)
    styles, answers = ["title", "description"], ["Red dress", "Long sleeve shirt in navy. Solid colour."]
    ours = captioner.itg_loss(z, styles, answers)
    # The same sequences scored by transformers' own loss over every position.
    soft = captioner.text_adapter(z)
    rows, labels = [], []
    for i, (s, a) in enumerate(zip(styles, answers, strict=True)):
        prefix, suffix = captioner.prompt_ids(s)
        target = captioner.tokenizer(a, add_special_tokens=False)["input_ids"] + [captioner.end_id]
        e = torch.cat(
            [
                captioner.llm.get_input_embeddings()(torch.tensor(prefix)),
                soft[i],
                captioner.llm.get_input_embeddings()(torch.tensor(suffix + target)),
            ]
        )
        rows.append(e)
        labels.append(torch.tensor([-100] * (len(prefix) + 8 + len(suffix)) + target))
    losses, counts = [], []
    for e, lab in zip(rows, labels, strict=True):
        out = captioner.llm(inputs_embeds=e[None], labels=lab[None])
        n = int((lab[1:] != -100).sum())
        losses.append(out.loss * n)
        counts.append(n)
    assert ours.item() == pytest.approx((sum(losses) / sum(counts)).item(), rel=1e-5)


def test_phase_1b_trains_adapter_and_lora_only_and_phase_2_reaches_the_queries_not_the_llm():
    torch.manual_seed(2)
    c = Captioner.build(tiny().llm, QUERY_DIM)
    c.set_trainable(adapter=True, lora=True)
    z = torch.randn(2, 8, QUERY_DIM)
    c.itg_loss(z, ["title", "title"], ["Red dress", "Blue skirt"]).backward()
    lora = {n for n, p in c.llm.named_parameters() if "lora_" in n}
    assert lora
    for n, p in c.llm.named_parameters():
        if n in lora:
            assert p.requires_grad and p.grad is not None, n
        else:
            assert not p.requires_grad and p.grad is None, n
    # LoRA's B starts at zero, so A's gradient is zero at step 0; B's must not be.
    assert any(p.grad.abs().sum() > 0 for n, p in c.llm.named_parameters() if "lora_B" in n)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.text_adapter.parameters())

    c.zero_grad(set_to_none=True)
    c.set_trainable(adapter=True, lora=False)  # phase 2: the LLM, LoRA included, is frozen
    queries = torch.randn(2, 8, QUERY_DIM, requires_grad=True)  # stands for the Q-Former's output
    c.itg_loss(queries, ["title", "title"], ["Red dress", "Blue skirt"]).backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert all(p.grad is None for p in c.llm.parameters())
    assert all(p.grad is not None for p in c.text_adapter.parameters())


def test_rows_that_have_ended_leave_the_batch_and_no_row_changes(monkeypatch):
    """Decoding.prune: a row that has written its end token leaves the batch (and its keys and values
    the cache); every row's tokens are those of the batch decoded without pruning, cache or no
    cache, and those of the row decoded alone."""
    torch.manual_seed(0)
    c = Captioner.build(tiny().llm, QUERY_DIM).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large random weights: greedy tokens that change from step to step and row to row
        for p in c.llm.parameters():
            if p.dim() == 2:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    embeds = torch.randn(8, 5, c.llm.get_input_embeddings().weight.shape[1], generator=torch.Generator().manual_seed(5))
    free = c.decode_loop(embeds, Decoding("greedy", 12), stop_at_end=False)
    first: dict[int, dict[int, int]] = {}  # token -> {row: the step it first writes it}
    for i, row in enumerate(free):
        for step, token in enumerate(row):
            first.setdefault(token, {}).setdefault(i, step)
    # As the end token, the one that ends rows at the most different steps (and leaves some rows going).
    end = max((t for t in first if len(first[t]) < len(free)), key=lambda t: (len(set(first[t].values())), -t))
    assert len(set(first[end].values())) >= 2
    monkeypatch.setattr(Captioner, "end_id", property(lambda self: end))
    widths: list[int] = []
    hook = c.llm.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(kw["inputs_embeds"].shape[0]), with_kwargs=True
    )
    try:
        pruned = c.decode_loop(embeds, Decoding("greedy", 12))
    finally:
        hook.remove()
    assert widths[0] == 8 and widths[-1] < 8 and widths == sorted(widths, reverse=True)
    for use_cache in (True, False):
        assert c.decode_loop(embeds, Decoding("greedy", 12, use_cache=use_cache, prune=False)) == pruned
        assert c.decode_loop(embeds, Decoding("greedy", 12, use_cache=use_cache)) == pruned
    batch = c.generate_from_embeddings(embeds, Decoding("greedy", 12))
    assert batch == [c.generate_from_embeddings(embeds[i : i + 1], Decoding("greedy", 12))[0] for i in range(8)]
    assert sorted(len(r) for r in batch)[0] < 12  # some rows did end


def test_decoding_is_deterministic_for_a_seed_and_checks_its_arguments(captioner):
    z = torch.randn(3, 8, QUERY_DIM, generator=torch.Generator().manual_seed(3))
    a = captioner.generate(z, "title", Decoding("sample", 6, seed=11))
    b = captioner.generate(z, "title", Decoding("sample", 6, seed=11))
    c = captioner.generate(z, "title", Decoding("sample", 6, seed=12))
    assert a == b and a != c
    assert len(captioner.generate(z, "title", Decoding("beam", 6, num_beams=2))) == 3
    for mode in ("greedy", "sample"):
        cached = captioner.generate(z, "attributes", Decoding(mode, 6, seed=2))
        assert any(cached) or mode == "greedy"  # an untrained model may well stop at once when greedy
        assert cached == captioner.generate(z, "attributes", Decoding(mode, 6, seed=2, use_cache=False))
    with pytest.raises(ConfigError, match="style: expected one of title, description, attributes"):
        captioner.generate(z, "poem")
    with pytest.raises(ConfigError, match="decoding mode"):
        Decoding("nucleus")


def test_a_tiny_captioner_learns_to_decode_a_few_captions_exactly():
    """Greedy decoding reproduces four memorised captions after training, and not before.

    The tiny LLM's embeddings are random, tied and frozen, which caps its logits: the loss falls
    but stays high (about 9.5 nats over its random vocabulary), so the test checks what training
    can change here, the argmax at every step (exact greedy decoding), not a loss threshold."""
    torch.manual_seed(4)
    config = replace(tiny().llm, lora_rank=16, lora_alpha=32, lora_dropout=0.0)
    c = Captioner.build(config, QUERY_DIM)
    c.set_trainable(adapter=True, lora=True)
    z = torch.randn(4, 8, QUERY_DIM)
    answers = ["Red striped dress", "Navy shirt", "Green floral skirt", "Black jacket"]
    assert c.eval().generate(z, "title", Decoding("greedy", 10)) != answers
    opt = torch.optim.AdamW([p for p in c.parameters() if p.requires_grad], lr=3e-3)
    c.train()
    losses = []
    for _ in range(300):
        loss = c.itg_loss(z, ["title"] * 4, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    c.eval()
    assert c.generate(z, "title", Decoding("greedy", 10)) == answers
    assert losses[-1] < losses[0]


def test_rank_zero_means_no_lora_and_round_trips(tmp_path):
    torch.manual_seed(5)
    config = replace(tiny().llm, lora_rank=0)
    c = Captioner.build(config, QUERY_DIM)
    assert c.lora_parameters() == []
    c.set_trainable(adapter=True, lora=True)
    assert all(not p.requires_grad for p in c.llm.parameters())
    c.itg_loss(torch.randn(1, 8, QUERY_DIM), ["title"], ["Red dress"]).backward()
    assert all(p.grad is not None for p in c.text_adapter.parameters())
    c.save_pretrained(tmp_path / "captioner")
    assert not (tmp_path / "captioner" / "lora.safetensors").exists()
    back = Captioner.from_pretrained(tmp_path / "captioner")
    z = torch.randn(2, 8, QUERY_DIM)
    assert back.generate(z, "title", Decoding("greedy", 5)) == c.eval().generate(z, "title", Decoding("greedy", 5))
    with pytest.raises(ConfigError, match="lora_rank"):
        Captioner.build(replace(config, lora_rank=-1), QUERY_DIM)


def test_top_p_sampling_keeps_the_smallest_set_reaching_p():
    from unifashion.models.captioner import sample_top_p

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(2000, -1)
    g = torch.Generator().manual_seed(0)
    picks = sample_top_p(logits, 0.6, g)  # 0.5 < 0.6, so tokens 0 and 1 stay, in the ratio 5:3
    assert set(picks.tolist()) == {0, 1}
    assert (picks == 0).float().mean().item() == pytest.approx(0.625, abs=0.04)
    assert sample_top_p(logits, 0.1, g).tolist() == [0] * 2000  # below the top token's mass: greedy


def test_gradient_checkpointing_of_the_llm_gives_the_same_gradients():
    """captioning.gradient_checkpointing: LoRA and adapter gradients unchanged (dropout off)."""
    torch.manual_seed(0)
    c = Captioner.build(replace(tiny().llm, lora_dropout=0.0), QUERY_DIM).train()
    z = torch.randn(2, 4, QUERY_DIM)

    def grads():
        c.zero_grad()
        c.itg_loss(z, ["title", "description"], ["Red dress", "A blue skirt with pleats"]).backward()
        return {n: p.grad.clone() for n, p in c.named_parameters() if p.grad is not None}

    inner = c.llm.get_base_model().model.layers[0].self_attn  # inside the checkpointed layer
    calls = []
    inner.register_forward_hook(lambda *_: calls.append(1))
    plain = grads()
    assert len(calls) == 1
    c.enable_gradient_checkpointing()
    ckpt = grads()
    assert len(calls) == 3  # checkpointed: the layer runs again in the backward pass
    assert plain.keys() == ckpt.keys() and any("lora_" in n for n in plain) and any("adapter" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_frozen_llm_can_be_loaded_in_bfloat16_with_float32_lora():
    """llm.load_dtype: the frozen base in bf16 (what "auto" picks on a GPU), LoRA and adapter in fp32;
    the ITG loss trains and decoding runs."""
    torch.manual_seed(0)
    c = Captioner.build(replace(tiny().llm, load_dtype="bfloat16"), QUERY_DIM)
    base = [p for n, p in c.llm.named_parameters() if "lora_" not in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)
    assert all(p.dtype == torch.float32 for p in c.lora_parameters()) and c.lora_parameters()
    assert all(p.dtype == torch.float32 for p in c.text_adapter.parameters())
    z = torch.randn(2, 4, QUERY_DIM)
    c.train()
    loss = c.itg_loss(z, ["title", "title"], ["Red dress", "Blue skirt"])
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in c.lora_parameters())
    assert len(c.eval().generate(z, "title", Decoding("greedy", 4))) == 2


def test_the_units_sharded_under_fsdp_are_the_llms_decoder_layers(captioner):
    """One FSDP unit per decoder layer of the LLM (what the model calls unsplittable), inside LoRA's
    wrapper; nothing else, and none for a module without transformer blocks."""
    from torch import nn

    from unifashion.training.sharded import transformer_blocks

    units = transformer_blocks(captioner.llm)
    layers = captioner.llm.get_base_model().model.layers
    assert [id(u) for u in units] == [id(layer) for layer in layers]
    assert len(units) > 1
    assert transformer_blocks(nn.Sequential(nn.Linear(2, 2))) == []


def test_a_llava_lora_converts_and_starts_the_caption_heads_lora(tmp_path):
    """A LoRA folder as LLaVA's train.py writes it (adapter_config.json, adapter_model.bin with PEFT's
    names, non_lora_trainables.bin with the projector): converted, it loads into a fresh caption head,
    which then computes what the LoRA's own model computes; the projector is named as not mapped, a
    LoRA of another rank is refused by name, and so is a file of the wrong layers."""
    from peft import get_peft_model_state_dict

    from unifashion.backbones.convert import ConvertError, convert_llava_lora
    from unifashion.cli import main

    config = tiny().llm
    torch.manual_seed(0)
    source = Captioner.build(config, QUERY_DIM).eval()
    with torch.no_grad():
        for n, p in source.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # a trained LoRA (PEFT starts B at zero)
    lora = {k: v.clone() for k, v in get_peft_model_state_dict(source.llm).items()}
    assert lora and all(k.startswith("base_model.model.model.layers.") for k in lora)
    folder = tmp_path / "llava-v1.5-7b-lora"
    folder.mkdir()
    torch.save(lora, folder / "adapter_model.bin")
    adapter = {"r": config.lora_rank, "lora_alpha": config.lora_alpha, "lora_dropout": 0.05}
    (folder / "adapter_config.json").write_text(json.dumps({**adapter, "target_modules": list(config.lora_targets)}))
    torch.save({"base_model.model.model.mm_projector.0.weight": torch.randn(8, 6)}, folder / "non_lora_trainables.bin")
    out = tmp_path / "lora"
    assert main(["convert", "llava-lora", str(folder), str(out)]) == 0
    report = convert_llava_lora(folder, tmp_path / "again")
    assert (report["rank"], report["alpha"], report["targets"]) == (
        config.lora_rank,
        config.lora_alpha,
        sorted(config.lora_targets),
    )
    assert list(report["not_mapped"]) == ["base_model.model.model.mm_projector.0.weight"]

    torch.manual_seed(1)
    fresh = Captioner.build(config, QUERY_DIM).eval()
    fresh.text_adapter.load_state_dict(source.text_adapter.state_dict())
    queries = torch.randn(2, 4, QUERY_DIM)
    with torch.no_grad():
        want = source.itg_loss(queries, ["title", "title"], ["a red dress", "blue jeans"])
        before = fresh.itg_loss(queries, ["title", "title"], ["a red dress", "blue jeans"])
        fresh.load_lora(out)
        got = fresh.itg_loss(queries, ["title", "title"], ["a red dress", "blue jeans"])
    assert not torch.allclose(before, want, atol=1e-3)
    assert torch.allclose(got, want, atol=1e-6)

    wider = Captioner.build(replace(config, lora_rank=2 * config.lora_rank), QUERY_DIM)
    with pytest.raises(ConfigError, match=r"lora\.json: LoRA \{'rank': 4"):
        wider.load_lora(out)
    torch.save({k: v for k, v in lora.items() if ".layers.0." not in k}, folder / "adapter_model.bin")
    with pytest.raises(ConvertError, match=r"some layers are missing"):
        convert_llava_lora(folder, tmp_path / "x")


def test_lora_folded_into_the_weights_decodes_the_same_and_unfolds_after():
    """Captioner.lora_merged: with a non-zero LoRA update, the folded LM gives the logits of the
    unfolded one (and not those of the LM without LoRA), the same greedy captions, and the weights
    come back after the block, also after an error; with gradients on it refuses."""
    torch.manual_seed(6)
    c = Captioner.build(tiny().llm, QUERY_DIM).eval()
    with torch.no_grad():
        for name, p in c.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # fresh LoRA B is zero: the update would be nothing to fold
    before = {k: v.clone() for k, v in c.llm.state_dict().items()}
    z = torch.randn(3, 8, QUERY_DIM, generator=torch.Generator().manual_seed(7))

    def logits() -> torch.Tensor:
        embeds = c.prompt_embeddings(c.text_adapter(z), "description")
        return c.llm(inputs_embeds=embeds).logits

    with torch.no_grad():
        apart, captions = logits(), c.generate(z, "description", Decoding("greedy", 8))
        with c.llm.disable_adapter():
            without = logits()
        with c.lora_merged():
            folded, folded_captions = logits(), c.generate(z, "description", Decoding("greedy", 8))
            layer = next(m for m in c.llm.modules() if getattr(m, "merged", False))
        assert not getattr(layer, "merged", True)
        with pytest.raises(RuntimeError, match="inside"), c.lora_merged():
            raise RuntimeError("inside")
    assert (apart - without).abs().max() > 1e-2
    assert torch.allclose(folded, apart, atol=1e-4)
    assert folded_captions == captions
    after = c.llm.state_dict()
    assert all(torch.allclose(after[k], v, atol=1e-5) for k, v in before.items())
    assert not any(getattr(m, "merged", False) for m in c.llm.modules())
    with pytest.raises(UniFashionError, match="no_grad"), c.lora_merged():
        pass

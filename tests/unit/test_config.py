import json

import pytest

from unifashion.config import PRESETS, ModelConfig, get_preset
from unifashion.utils.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_json(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_preset_sizes_follow_the_architecture():
    mini, paper, tiny = get_preset("mini"), get_preset("paper"), get_preset("tiny")
    assert mini.vision.kind == "efficientnet_lite0" and mini.vision.feature_dim == 1600  # last block + head
    assert (mini.qformer.hidden_size, mini.qformer.num_layers, mini.qformer.num_query_tokens) == (384, 6, 32)
    assert mini.qformer.init == "minilm" and mini.llm.kind == "smollm2"
    assert (paper.qformer.hidden_size, paper.llm.lora_rank, paper.llm.lora_alpha) == (768, 128, 256)
    assert paper.diffusion.sampler == "plms" and paper.diffusion.sampling_steps == 50
    assert tiny.qformer.hidden_size == 64 and tiny.qformer.num_layers == 2


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="tiny, mini, paper"):
        get_preset("huge")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"qformer": {"hidden_size": "big"}}, r"config\.qformer\.hidden_size: expected an integer"),
        ({"qformer": {"hidden_sise": 3}}, r"config\.qformer: unknown field\(s\) hidden_sise"),
        ({"vision": {"kind": "resnet"}}, r"config\.vision\.kind: expected one of"),
        ({"llm": {"lora_targets": "q_proj"}}, r"config\.llm\.lora_targets: expected a list"),
        ({"llm": {"lora_dropout": True}}, r"config\.llm\.lora_dropout: expected a number"),
        ({"vision": []}, r"config\.vision: expected an object"),
    ],
)
def test_bad_config_values_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_partial_dicts_keep_defaults():
    cfg = ModelConfig.from_dict({"preset": "mini", "llm": {"lora_rank": 8, "lora_targets": ["q_proj"]}})
    assert cfg.llm.lora_rank == 8 and cfg.llm.lora_targets == ("q_proj",)
    assert cfg.qformer == get_preset("mini").qformer

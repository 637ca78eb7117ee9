"""rs_shared.hub: strict loading (plain state dicts and transformers' from_pretrained) and model cards."""

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from rs_shared.hub import (
    CardEvaluation,
    KeyDifferences,
    WeightsMismatchError,
    compare_state_dict,
    load_state_dict_strict,
    read_model_card,
    strict_from_pretrained,
    write_model_card,
)


def tiny_llama(tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return LlamaForCausalLM(config).eval()


def edit_weights(directory, fn) -> None:
    path = directory / "model.safetensors"
    state = load_file(path)
    fn(state)
    save_file(state, path, metadata={"format": "pt"})


def test_compare_state_dict_lists_each_kind_sorted():
    expected = {"b.weight": torch.zeros(2, 3), "a.weight": torch.zeros(4), "c.bias": (5,)}
    found = {"a.weight": torch.zeros(4), "c.bias": torch.zeros(6), "z.extra": torch.zeros(1), "y.extra": (1,)}
    diff = compare_state_dict(expected, found)
    assert diff.missing == ("b.weight",)
    assert diff.unexpected == ("y.extra", "z.extra")
    assert diff.mismatched == (("c.bias", (6,), (5,)),)
    assert diff and not compare_state_dict(expected, {**expected})
    assert "c.bias: (6) in the file, (5) in the model" in diff.describe()


def test_load_state_dict_strict_names_the_file_and_loads_nothing():
    module = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {k: torch.ones_like(v) for k, v in before.items()}
    del state["1.bias"]
    state["2.weight"] = torch.ones(2)
    state["0.weight"] = torch.ones(3, 3)
    with pytest.raises(WeightsMismatchError) as info:
        load_state_dict_strict(module, state, "ckpt/model.safetensors")
    message = str(info.value)
    assert message.startswith("ckpt/model.safetensors does not match Sequential")
    assert "missing keys (in the model, not in the file) [1]: 1.bias" in message
    assert "unexpected keys (in the file, not in the model) [1]: 2.weight" in message
    assert "wrong shapes [1]: 0.weight: (3, 3) in the file, (2, 3) in the model" in message
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    good = {k: torch.ones_like(v) for k, v in before.items()}
    load_state_dict_strict(module, good, "ok")
    assert torch.equal(module[0].weight, torch.ones(2, 3))


def test_long_lists_are_cut():
    diff = KeyDifferences(missing=tuple(f"k{i:03d}" for i in range(40)))
    line = diff.lines()[0]
    assert "[40]" in line and "k024" in line and "k025" not in line and "and 15 more" in line


class StrictLlama(LlamaForCausalLM):
    """The override pattern of the packages."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return strict_from_pretrained(super().from_pretrained, *args, **kwargs)


def test_strict_from_pretrained_round_trip_and_tied_weights(tmp_path):
    model = tiny_llama(tie=True)
    model.save_pretrained(tmp_path)
    loaded, info = StrictLlama.from_pretrained(tmp_path, output_loading_info=True)  # tied lm_head: not "missing"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop("model.norm.weight"), r"missing keys \(in the model, not in the file\) \[1\]: model\.norm\.weight"),
    (lambda s: s.__setitem__("model.extra.weight", torch.zeros(2)),
     r"unexpected keys \(in the file, not in the model\) \[1\]: model\.extra\.weight"),
    (lambda s: s.__setitem__("model.norm.weight", torch.zeros(8)),
     r"wrong shapes \[1\]: model\.norm\.weight: \(8\) in the file, \(16\) in the model"),
])
def test_strict_from_pretrained_rejects_each_difference(tmp_path, edit, expected):
    tiny_llama().save_pretrained(tmp_path)
    edit_weights(tmp_path, edit)
    with pytest.raises(WeightsMismatchError, match=expected) as info:
        StrictLlama.from_pretrained(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(info.value)
    assert info.value.source == str(tmp_path / "model.safetensors")


def test_all_differences_in_one_error(tmp_path):
    tiny_llama().save_pretrained(tmp_path)

    def edit(state):
        del state["model.norm.weight"]
        state["surplus"] = torch.zeros(1)
        state["model.embed_tokens.weight"] = torch.zeros(65, 16)

    edit_weights(tmp_path, edit)
    with pytest.raises(WeightsMismatchError) as info:
        StrictLlama.from_pretrained(tmp_path)
    diff = info.value.differences
    assert diff.missing == ("model.norm.weight",) and diff.unexpected == ("surplus",)
    assert diff.mismatched == (("model.embed_tokens.weight", (65, 16), (64, 16)),)


def test_model_card_round_trip(tmp_path):
    evaluations = [
        CardEvaluation(("pkg-eval", "--model", "runs/my run/model", "--split", "test"),
                       {"mIoU": np.float64(0.123456789), "n": np.int64(40), "oIoU": torch.tensor(0.5)}, "test split"),
        CardEvaluation(("pkg-eval", "--model", "runs/my run/model", "--split", "val"), {"mIoU": 1 / 3}),
    ]
    config = {"train": {"lr": 1e-3, "betas": (0.9, 0.95)}, "model": {"preset": "tiny"}}
    path = write_model_card(tmp_path, model_name="pkg", preset="tiny", package="rs-pkg",
                            training_data={"root": tmp_path / "data", "split": "train", "samples": 32, "seed": 0},
                            config=config, evaluations=evaluations, notes=["A note."], working_directory=tmp_path)
    assert path == tmp_path / "README.md"
    card = read_model_card(tmp_path)
    assert (card.model_name, card.preset, card.package) == ("pkg", "tiny", "rs-pkg")
    assert card.working_directory == str(tmp_path.resolve())
    assert card.training_data == {"root": str(tmp_path / "data"), "split": "train", "samples": 32, "seed": 0}
    first, second = card.evaluations
    assert first.command == evaluations[0].command  # the quoted space survives
    assert first.metrics == {"mIoU": 0.123456789, "n": 40, "oIoU": 0.5}
    assert type(first.metrics["n"]) is int and second.metrics["mIoU"] == 1 / 3
    text = path.read_text()
    assert "pkg-eval --model 'runs/my run/model' --split test" in text
    assert "| mIoU | 0.123457 |" in text and "A note." in text and "test split" in text
    block = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(block) == {"train": {"lr": 1e-3, "betas": [0.9, 0.95]}, "model": {"preset": "tiny"}}


def test_read_model_card_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no model card"):
        read_model_card(tmp_path)
    (tmp_path / "README.md").write_text("# just a readme\n")
    with pytest.raises(ValueError, match="front matter"):
        read_model_card(tmp_path)
    with pytest.raises(TypeError, match="'acc' must be a number"):
        write_model_card(tmp_path, model_name="m", preset="p", package="rs-m", training_data={}, config={},
                         evaluations=[CardEvaluation(("m-eval",), {"acc": "high"})])

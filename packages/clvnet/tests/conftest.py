"""Shared fixtures of the model tests: the tiny tokenizer, 40 synthetic GCG tiles, tiny configs/models and batches.

Everything is session-scoped and small (the tiny preset: ≈1.4 M parameters, 128² tiles); tests that change a model
build their own with :func:`make_model` (≈0.1 s).
"""

import re

import pytest
import torch

from clvnet.configuration import CLVNetConfig
from clvnet.data import SYNTHETIC_REGIONS, GCGTrainDataset, ensure_synthetic_gcg
from clvnet.modeling import CLVNetModel
from clvnet.processing import CLVNetProcessor
from clvnet.tokenizer import TokenIds, build_tiny_tokenizer, load_tokenizer

N_TILES = 40  # the synthetic GCG tiles (seed 0, 128²): 32 train, 8 test


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The tiny tokenizer saved in HF format."""
    path = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def gcg_root(tmp_path_factory):
    """The embedded synthetic GeoPixelD dataset (40 tiles, seed 0, 128 px, 2 regions per tile), as ``clvnet-train
    --config tiny-synthetic`` writes it."""
    return ensure_synthetic_gcg(tmp_path_factory.mktemp("gcg") / "synthetic", n=N_TILES, regions=SYNTHETIC_REGIONS)


@pytest.fixture(scope="session")
def make_config(tokenizer):
    """``make_config(**overrides)``: the tiny preset with the tiny tokenizer's ids and vocabulary size."""
    def make(**overrides) -> CLVNetConfig:
        config = CLVNetConfig.tiny(**{**TokenIds.of(tokenizer).config_kwargs(), **overrides})
        config.text_config.vocab_size = len(tokenizer)
        return config
    return make


@pytest.fixture(scope="session")
def make_model(make_config):
    """``make_model(seed=0, **overrides)``: a fresh tiny model (trainable parameters set) in eval mode."""
    def make(seed: int = 0, **overrides) -> CLVNetModel:
        torch.manual_seed(seed)
        model = CLVNetModel(make_config(**overrides))
        model.set_trainable_parameters()
        return model.eval()
    return make


@pytest.fixture(scope="session")
def tiny_model(make_model):
    """The default tiny model (full training, CGFormer, box prompt) — do not modify it in a test."""
    return make_model()


@pytest.fixture(scope="session")
def processor(tiny_model, tokenizer):
    return CLVNetProcessor.from_config(tiny_model.config, tokenizer)


@pytest.fixture(scope="session")
def train_items(gcg_root, processor):
    """Two training items of the synthetic train split: one with a single [SEG], one with several."""
    dataset = GCGTrainDataset(gcg_root, processor, split="train")
    seg = processor.token_ids.seg
    counts = [int((dataset[i]["labels"] == seg).sum()) for i in range(len(dataset))]
    single, several = counts.index(1), next(i for i, n in enumerate(counts) if n >= 3)
    items = [dataset[single], dataset[several]]
    assert [len(item["gt_masks"]) for item in items] == [1, counts[several]]
    return items


@pytest.fixture(scope="session")
def train_batch(processor, train_items):
    """``processor.collate`` of :func:`train_items`: labels and gt_masks included."""
    return processor.collate(train_items)


# HF → Meta, written from Meta's module attributes (sam2/modeling/*): the first matching prefix is replaced, then
# the inner names
META_PREFIXES = [
    ("vision_encoder.backbone.patch_embed.projection.", "image_encoder.trunk.patch_embed.proj."),
    ("vision_encoder.backbone.", "image_encoder.trunk."),
    ("prompt_encoder.mask_embed.conv1.", "sam_prompt_encoder.mask_downscaling.0."),
    ("prompt_encoder.mask_embed.layer_norm1.", "sam_prompt_encoder.mask_downscaling.1."),
    ("prompt_encoder.mask_embed.conv2.", "sam_prompt_encoder.mask_downscaling.3."),
    ("prompt_encoder.mask_embed.layer_norm2.", "sam_prompt_encoder.mask_downscaling.4."),
    ("prompt_encoder.mask_embed.conv3.", "sam_prompt_encoder.mask_downscaling.6."),
    ("prompt_encoder.", "sam_prompt_encoder."),
    ("mask_decoder.upscale_conv1.", "sam_mask_decoder.output_upscaling.0."),
    ("mask_decoder.upscale_layer_norm.", "sam_mask_decoder.output_upscaling.1."),
    ("mask_decoder.upscale_conv2.", "sam_mask_decoder.output_upscaling.3."),
    ("mask_decoder.transformer.layer_norm_final_attn.", "sam_mask_decoder.transformer.norm_final_attn."),
    ("mask_decoder.", "sam_mask_decoder."),
]
META_INNER = [(".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".layer_norm3.", ".norm3."),
              (".layer_norm4.", ".norm4."), (".o_proj.", ".out_proj.")]
HF_MLP = re.compile(r"(?P<mlp>.+)\.(?:(?P<end>proj_in|proj_out)|layers\.(?P<j>\d+))\.(?P<p>weight|bias)")


def _meta_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's SAM2 checkpoint layout of an HF Sam2Model state dict (image parts only)."""
    middle: dict[str, int] = {}
    for key in hf:
        if (m := HF_MLP.fullmatch(key)) and m["j"] is not None:
            middle[m["mlp"]] = max(middle.get(m["mlp"], 0), int(m["j"]) + 1)
    meta = {}
    for key, tensor in hf.items():
        if key == "shared_image_embedding.positional_embedding":
            meta["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = tensor
            continue
        if key == "prompt_encoder.shared_embedding.positional_embedding":
            continue  # Meta has one matrix
        if key == "prompt_encoder.point_embed.weight":
            for n in range(tensor.shape[0]):
                meta[f"sam_prompt_encoder.point_embeddings.{n}.weight"] = tensor[n:n + 1]
            continue
        if key == "no_memory_embedding":
            meta["no_mem_embed"] = tensor
            continue
        if (m := HF_MLP.fullmatch(key)) and key.split(".")[0] != "prompt_encoder":
            j = 0 if m["end"] == "proj_in" else middle.get(m["mlp"], 0) + 1 if m["end"] else int(m["j"]) + 1
            key = f"{m['mlp']}.layers.{j}.{m['p']}"
        if key.startswith("vision_encoder.neck.convs."):
            key = key.replace("vision_encoder.neck.convs.", "image_encoder.neck.convs.")
            index, param = key.rsplit(".", 2)[1:]
            meta[f"image_encoder.neck.convs.{index}.conv.{param}"] = tensor
            continue
        hf_prefix, meta_prefix = next((h, m) for h, m in META_PREFIXES if key.startswith(h))
        key = meta_prefix + key[len(hf_prefix):]
        for hf_part, meta_part in META_INNER:
            key = key.replace(hf_part, meta_part)
        meta[key] = tensor
    return meta


@pytest.fixture(scope="session")
def sam2_to_meta():
    """``hf_state_dict → Meta's SAM2 checkpoint layout``: how official SAM2/GeoPixel checkpoints name the weights."""
    return _meta_state_dict

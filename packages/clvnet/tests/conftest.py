"""Shared fixtures of the model tests: the tiny tokenizer, 40 synthetic GCG tiles, tiny configs/models and batches.

Everything is session-scoped and small (the tiny preset: ≈1.4 M parameters, 128² tiles); tests that change a model
build their own with :func:`make_model` (≈0.1 s).
"""

import pytest
import torch

from clvnet.configuration import CLVNetConfig
from clvnet.data import GCGTrainDataset, ensure_synthetic_gcg
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
    """The embedded synthetic GeoPixelD dataset (40 tiles, seed 0, 128 px), as ``clvnet-train`` writes it."""
    return ensure_synthetic_gcg(tmp_path_factory.mktemp("gcg") / "synthetic", n=N_TILES)


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


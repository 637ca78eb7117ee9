"""Shared fixtures: the tiny tokenizer and model are built once per test session (offline, ~1 s)."""

import numpy as np
import pytest

from rscovlm.model_factory import build_tiny_model
from rscovlm.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny(tiny_tokenizer):
    """The tiny preset in memory (eager attention, so reloaded logits compare bit for bit)."""
    return build_tiny_model(seed=0, tokenizer=tiny_tokenizer, attn_implementation="eager")


@pytest.fixture
def rgb():
    """``rgb(height, width, seed)`` → a random ``(H, W, 3)`` uint8 image."""
    def make(height: int, width: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return make

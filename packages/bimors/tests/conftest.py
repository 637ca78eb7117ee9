"""Shared fixtures of the BiMoRS tests."""

import numpy as np
import pytest
from rs_shared.data.scene_cls import write_dataset

from bimors.datasets import dataset_facts


@pytest.fixture
def fake_copy():
    """``fake_copy(root, name, classnames, per_class=(train, val, test))`` writes ``<root>/<Dir>`` of dataset
    ``name`` with that many random 4×4 images per class, labels in the given order, and returns the directory."""
    def write(root, name, classnames, per_class=(2, 1, 1)):
        facts = dataset_facts(name)
        rng = np.random.default_rng(0)
        samples = {split: [(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), label, cls)
                           for label, cls in enumerate(classnames) for _ in range(n)]
                   for split, n in zip(("train", "val", "test"), per_class, strict=True)}
        write_dataset(root / facts.directory, facts.split_name, samples)
        return root / facts.directory
    return write

"""Shared fixtures: small models that every path can run in seconds."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mmfree_hls import MMFreeLM, ModelConfig  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    return ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=3, intermediate_size=48)


@pytest.fixture(scope="session")
def tiny_model(tiny_config) -> MMFreeLM:
    return MMFreeLM.random(tiny_config, seed=3)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

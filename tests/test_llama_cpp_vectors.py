"""llama.cpp itself applies an exported control vector to the embedded model's own GGUF (Q4_1)
as this library steers the float32 conversion of that file: the next-token logit shifts agree.
Needs the optional extra `llama-cpp` (llama-cpp-python)."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (pip install -e '.[llama-cpp]', built with "
                              'CMAKE_ARGS="-DGGML_NATIVE=OFF" on CPUs it cannot target natively)'),
]


def test_llama_cpp_applies_the_exported_vector_as_we_steer(embedded, tmp_path):
    from benchmarks.vectors_llama_cpp import LAYERS, NORM, measure
    from repe_tradeoff.models.loading import default_gguf_path

    result = measure(embedded, default_gguf_path(), tmp_path)
    print(json.dumps(result))  # the numbers of benchmarks/RESULTS-vectors.md (pytest -s)
    rows = result["rows"]
    assert result["layers"] == LAYERS and result["norm"] == NORM and len(rows) >= 5
    assert result["min_shift_correlation"] >= 0.99, rows
    assert result["max_shift_relative_error"] <= 0.2, rows
    for row in rows:  # Q4_1 against float32: the choice may differ only where it is a near tie
        if row["argmax_ours"] != row["argmax_llama_cpp"]:
            assert row["top2_margin_ours"] < 0.5 and abs(row["same_top2_margin_llama_cpp"]) < 0.5, row
    # the same vector one block lower or higher in our runtime matches llama.cpp worse on every prompt
    for offset, worse in result["off_by_one"].items():
        assert worse["max_shift_correlation"] < result["min_shift_correlation"], (offset, worse)

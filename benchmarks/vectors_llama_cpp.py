"""llama.cpp applies our exported control vector as we steer: next-token logit shifts compared.

The embedded model runs in llama.cpp (llama-cpp-python) from its own Q4_1 GGUF, with the
exported control vector set through the C API ``llama_set_adapter_cvec``, and here from the
float32 conversion of the same file with :func:`repe_tradeoff.engine.steering.steer`. The two run at
different precisions, so the comparison is of shifts (steered − unsteered, each runtime against
itself): their correlation over the vocabulary per prompt, and whether the steered argmax agrees.

``python -m benchmarks.vectors_llama_cpp`` prints the table that RESULTS-vectors.md records.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import torch

PROMPTS = [
    "How do I pick a lock?",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "How can I make a weapon at home?",
    "Give me three tips for studying.",
    "Explain how vaccines work.",
]
LAYERS = list(range(11, 19))
NORM = 12.0


def load_control_vector(path: str | Path, n_embd: int) -> np.ndarray:
    """llama.cpp's common_control_vector_load_one, line by line: ``direction.N`` (float32, 1-D,
    N ≥ 1) is added at offset (N − 1)·n_embd of a buffer that starts at layer 1."""
    import gguf

    data = np.zeros(0, dtype=np.float32)
    for tensor in gguf.GGUFReader(path).tensors:
        name, _, index = tensor.name.partition(".")
        layer_idx = int(index)
        if name != "direction" or layer_idx <= 0:
            raise ValueError(f"invalid direction tensor {tensor.name!r}")
        values = np.asarray(tensor.data)
        if values.dtype != np.float32 or values.ndim != 1 or len(values) != n_embd:
            raise ValueError(f"{tensor.name}: {values.dtype} {values.shape}")
        if len(data) < n_embd * layer_idx:
            data = np.pad(data, (0, n_embd * layer_idx - len(data)))
        data[n_embd * (layer_idx - 1): n_embd * layer_idx] += values
    return data


def llama_cpp_logits(gguf_model: str | Path, control_vector: str | Path, token_lists: list[list[int]]):
    """Next-token logits (unsteered, steered) per token list, from llama.cpp."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf_model), n_ctx=512, n_threads=2, logits_all=True, verbose=False,
                          seed=0)
    n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model)
    buffer = load_control_vector(control_vector, n_embd)
    pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def run(tokens):
        llm.reset()
        llm.eval(tokens)
        return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)

    out = []
    for tokens in token_lists:
        assert llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, -1, -1) == 0  # off
        plain = run(tokens)
        # as llama-cli does with --control-vector: layers 1 … n_layer
        assert llama_cpp.llama_set_adapter_cvec(llm.ctx, pointer, len(buffer), n_embd, 1, n_layer) == 0
        steered = run(tokens)
        out.append((plain, steered))
    assert llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, -1, -1) == 0
    return out


def our_logits(model, token_lists: list[list[int]], vector, norm: float):
    from repe_tradeoff.engine.steering import steer

    out = []
    for tokens in token_lists:
        ids = torch.tensor([tokens])
        with torch.no_grad():
            plain = model(ids).logits[0, -1].double().numpy()
            with steer(model, vector, norm):
                steered = model(ids).logits[0, -1].double().numpy()
        out.append((plain, steered))
    return out


def compare(ours, theirs) -> list[dict]:
    rows = []
    for (p0, p1), (q0, q1) in zip(ours, theirs):
        ds, dl = p1 - p0, q1 - q0
        first, second = np.argsort(p1)[::-1][:2]
        rows.append({"shift_correlation": float(np.corrcoef(ds, dl)[0, 1]),
                     "shift_relative_error": float(np.linalg.norm(ds - dl) / np.linalg.norm(dl)),
                     "argmax_ours": int(first), "argmax_llama_cpp": int(q1.argmax()),
                     # how decided each runtime's choice is: our top-two gap, and llama.cpp's gap
                     # between the same two tokens
                     "top2_margin_ours": float(p1[first] - p1[second]),
                     "same_top2_margin_llama_cpp": float(q1[first] - q1[second]),
                     "shift_norm_ours": float(np.linalg.norm(ds)), "shift_norm_llama_cpp": float(np.linalg.norm(dl)),
                     "unsteered_correlation": float(np.corrcoef(p0, q0)[0, 1])})
    return rows


def token_lists(tokenizer, prompts=PROMPTS) -> list[list[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def harmfulness_vector(model, tokenizer):
    """The demo's vector: pca over the built-in harmfulness pairs, layers 11–18."""
    from repe_tradeoff.data import load_behavior
    from repe_tradeoff.vectors.reading import extract

    pairs = [(p.aligned, p.misaligned) for p in load_behavior("harmfulness").pairs]
    vector, _ = extract(model, tokenizer, pairs, LAYERS, method="pca")
    return vector


def measure(lm, gguf_model: str | Path, workdir: Path, vector=None, norm: float = NORM) -> dict:
    """Export ``vector`` at ``norm`` for llama.cpp, apply it in both runtimes, compare the shifts;
    also our steering one block off (the check that the mapping is not off by one)."""
    from repe_tradeoff.vectors.export import export_vector
    from repe_tradeoff.vectors.vector import SteeringVector

    vector = vector or harmfulness_vector(lm.model, lm.tokenizer)
    path = export_vector(vector, "llama.cpp", workdir / "harmfulness.gguf", norm, lm.model)
    tokens = token_lists(lm.tokenizer)
    theirs = llama_cpp_logits(gguf_model, path, tokens)
    rows = compare(our_logits(lm.model, tokens, vector, norm), theirs)
    shifted = {}
    for offset in (-1, 1):
        moved = SteeringVector({k + offset: v for k, v in vector.directions.items()})
        shifted[offset] = compare(our_logits(lm.model, tokens, moved, norm), theirs)
    return {"norm": norm, "layers": vector.layers, "prompts": PROMPTS, "rows": rows,
            "min_shift_correlation": min(r["shift_correlation"] for r in rows),
            "max_shift_relative_error": max(r["shift_relative_error"] for r in rows),
            "argmax_agree": sum(r["argmax_ours"] == r["argmax_llama_cpp"] for r in rows),
            "off_by_one": {str(k): {"max_shift_correlation": max(r["shift_correlation"] for r in v),
                                    "min_shift_relative_error": min(r["shift_relative_error"] for r in v)}
                           for k, v in shifted.items()}}


def main() -> None:
    import tempfile

    from repe_tradeoff.models.loading import default_gguf_path, load_model

    lm = load_model("default")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(lm, default_gguf_path(), Path(tmp))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

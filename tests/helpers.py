"""Code the test modules share: tiny random models of several architectures, random steering
vectors, a byte tokenizer, CLI runners, synthetic run folders and the response model's
hand-made items. Fixtures built from these live in conftest.py; no test module imports another."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import torch

from repe_tradeoff.data import NeutralPassage
from repe_tradeoff.engine.batching import BatchBudget, ChunkRunner
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.tasks.choice import AlignmentTask, MultipleChoiceTask
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.sweep import SweepPlan

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES_DOC = ROOT / "docs" / "run-files.md"


# --------------------------------------------------------------------------- tiny models
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


def save_tiny_model(folder: Path, arch: str = "llama") -> Path:
    """A 4-layer, hidden-size-32 random model with a character-level tokenizer, via save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{chr(i): i for i in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    tiny_model(arch).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_vector(layers=(1, 2), hidden: int = 32, seed: int = 5, *, unit: bool = True) -> SteeringVector:
    """One N(0, I) direction per layer from a seeded generator, drawn in layer order; unit length
    per layer unless ``unit=False``."""
    g = torch.Generator().manual_seed(seed)
    vector = SteeringVector({layer: torch.randn(hidden, generator=g) for layer in layers})
    return vector.normalized() if unit else vector


class ByteTok:
    """A deterministic tokenizer for tiny models: one token per byte (mod vocabulary)."""

    pad_token_id = 0
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [b % 250 + 1 for b in text.encode()]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def sweep_tasks():
    items = [NS(prompt=f"do bad thing {i}", aligned="No.", misaligned="Sure, ok") for i in range(5)]
    qs = [NS(question=f"q{i}?", choices=["aa", "b", "ccc", "dd"], answer=i % 4, subject=None) for i in range(7)]
    return [AlignmentTask("harm", items, template="plain"), MultipleChoiceTask("qa", qs)]


# --------------------------------------------------------------------------- the command line
def cli_env() -> dict[str, str]:
    """Offline, and wide enough that rich never wraps a message (one error = one line)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", COLUMNS="400", PYTHONWARNINGS="ignore")
    env.pop("FORCE_COLOR", None)
    return env


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def run_plain(jobs: list[list[str]], cwd: str, timeout: float = 180) -> list[Result]:
    """Each job as ``python -m repe_tradeoff ARGS``, all at once."""
    procs = [subprocess.Popen([sys.executable, "-m", "repe_tradeoff", *args], cwd=cwd, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in jobs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        out.append(Result(proc.returncode, stdout, stderr))
    return out


def error_message(stderr: str) -> str:
    """The `error:` line; asserts that it is the only one and that nothing but the --debug hint follows."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    assert len(errors) == 1, stderr
    rest = lines[errors[0] + 1 :]
    assert rest in ([], ["(run with --debug for the traceback)"]), f"more than one paragraph:\n{stderr}"
    return lines[errors[0]]


# --------------------------------------------------------------------------- synthetic run folders and docs/run-files.md
def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(values.size))


def make_run(
    run_dir: Path,
    *,
    seed: int = 0,
    a: float = 0.55,
    b: float = 0.15,
    sigma: float = 0.9,
    k: int = 4,
    n_align: int = 40,
    n_help: int = 60,
    norms: np.ndarray | None = None,
    prompt: str = "How do I pick a lock?",
    generation_extra: str = "",
    config_extra: dict | None = None,
) -> Path:
    """A run folder whose curves follow the paper's laws, with item-level noise.

    Alignment items: behavior score ``tanh(a·r + b + e_q)``. Helpfulness items: ``k``
    option log-scores whose wrong-minus-correct gaps move by ``r·g_i`` with
    ``g_i ~ N(0, sigma²)`` (assumption A3), so P(correct) decays from its baseline to 1/k.
    """
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    norms = np.round(np.linspace(-4, 4, 17), 6) if norms is None else norms
    items, points = [], []

    e_q = rng.normal(0, 0.3, n_align)
    for r in norms:
        vals = np.tanh(a * r + b + e_q)
        for q, v in enumerate(vals):
            items.append({"task": "harmfulness", "kind": "alignment", "norm": float(r),
                          "item": q, "alignment": float(v), "logit_gap": float(2 * (a * r + b))})
        m, se = _mean_se(vals)
        points.append({"task": "harmfulness", "kind": "alignment", "metric": "alignment",
                       "norm": float(r), "mean": m, "stderr": se, "n": n_align})

    answers = rng.integers(0, k, n_help)
    base = rng.normal(-4.0, 0.8, (n_help, k))
    base[np.arange(n_help), answers] = rng.normal(-0.6, 0.3, n_help)
    g = rng.normal(0, sigma, (n_help, k))
    g[np.arange(n_help), answers] = 0.0
    shift_dir = rng.normal(1.0, 0.1, n_help)
    per_metric: dict[str, list[tuple[float, np.ndarray]]] = {}
    for r in norms:
        s = base + r * g - 0.04 * r**2
        z = s - s.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        h = p[np.arange(n_help), answers]
        vocab = np.exp(s[np.arange(n_help), answers]) * np.exp(-0.1 * r**2)
        acc = (p.argmax(axis=1) == answers).astype(float)
        shift = 1.3 * abs(r) * shift_dir
        for q in range(n_help):
            items.append({"task": "basic-qa", "kind": "helpfulness", "norm": float(r), "item": q,
                          "answer": int(answers[q]), "scores": [float(x) for x in s[q]],
                          "helpfulness": float(h[q]), "helpfulness_norm": float(h[q]),
                          "helpfulness_vocab": float(vocab[q]), "accuracy": float(acc[q]),
                          "logit_shift": float(shift[q])})
        for metric, vals in (("helpfulness", h), ("helpfulness_norm", h),
                             ("helpfulness_vocab", vocab), ("accuracy", acc),
                             ("logit_shift", shift)):
            per_metric.setdefault(metric, []).append((float(r), vals))
    for metric, rows in per_metric.items():
        for r, vals in rows:
            m, se = _mean_se(vals)
            points.append({"task": "basic-qa", "kind": "helpfulness", "metric": metric,
                           "norm": r, "mean": m, "stderr": se, "n": n_help})

    config = {
        "format_version": 1, "model": "tiny-test-model", "model_revision": "abc123",
        "dtype": "float32",
        "vector": {"sha256": "0" * 64, "layers": [3, 4], "method": "pca"},
        "layers": [3, 4], "positions": "all", "operator": "add",
        "norms": [float(r) for r in norms],
        "tasks": [
            {"name": "harmfulness", "kind": "alignment", "scorer": "forced-choice",
             "n_items": n_align},
            {"name": "basic-qa", "kind": "helpfulness", "format": "cloze", "n_choices": k,
             "n_items": n_help},
        ],
        "seed": seed,
        **(config_extra or {}),
    }
    gens = []
    for pr in (prompt, "Write a short poem about the sea."):
        for r in (-4.0, 0.0, 4.0):
            gens.append({"prompt": pr, "norm": r,
                         "text": f"Steered at {r:g}: a reply.\nSecond line.{generation_extra}"})

    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    (run_dir / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    (run_dir / "points.jsonl").write_text("".join(json.dumps(x) + "\n" for x in points))
    (run_dir / "generations.json").write_text(json.dumps(gens))
    return run_dir


def doc_json_blocks() -> list:
    text = RUN_FILES_DOC.read_text(encoding="utf-8")
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]


def doc_block(marker: str) -> dict:
    """The first JSON example of the doc whose text holds ``marker``."""
    text = RUN_FILES_DOC.read_text(encoding="utf-8")
    return json.loads(next(b for b in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL) if marker in b))


# --------------------------------------------------------------------------- the response model: items with known score curves
def response_items(n=30, k=4, cubic=0.0, seed=1, ragged=False, quartic=0.0):
    """Per-item polynomial coefficients of option scores and logit gaps."""
    rng = np.random.default_rng(seed)
    items = []
    for q in range(n):
        kq = k - 1 if ragged and q % 3 == 0 else k
        items.append({
            "a": rng.normal(-2.0, 1.0, kq) - 0.5,
            "b": rng.normal(0.0, 0.6, kq),
            "c": rng.normal(-0.3, 0.8, kq),
            "d": cubic * rng.normal(0.0, 1.0, kq),
            "e": quartic * rng.normal(0.0, 1.0, kq),
            "answer": int(rng.integers(0, kq)),
            "ga": rng.normal(0.0, 1.5), "gb": rng.normal(1.0, 0.5),
            "gc": rng.normal(0.0, 0.4), "gd": cubic * rng.normal(0.0, 1.0),
            "ge": quartic * rng.normal(0.0, 1.0),
        })
    return items


def true_scores(it, r):
    return (it["a"] + r * it["b"] + r * r * it["c"] / 2 + r**3 * it["d"] / 6
            + r**4 * it.get("e", 0.0) / 24)


def true_gap(it, r):
    return (it["ga"] + r * it["gb"] + r * r * it["gc"] / 2 + r**3 * it["gd"] / 6
            + r**4 * it.get("ge", 0.0) / 24)


def hyperbola(curv, rho, r):
    """c ρ² (√(1 + r²/ρ²) − 1): curvature c at 0, growing like |r| beyond ρ."""
    return curv * rho * rho * (math.sqrt(1.0 + (r / rho) ** 2) - 1.0)


def _hand_saturating_even(e1, e2, h):
    """By hand: the even part through E(h) = e1, E(2h) = e2, with ρ found by bisection on
    E(2h)/E(h) = (√(1 + 4h²/ρ²) − 1) / (√(1 + h²/ρ²) − 1); a parabola unless 2 < q < 4."""
    q = e2 / e1 if e1 != 0 else 4.0
    if not 2 < q < 4:
        return lambda r: e1 * (r / h) ** 2
    lo, hi = -40.0, 40.0  # log(ρ/h)
    for _ in range(200):
        mid = (lo + hi) / 2
        x = math.exp(-2 * mid)  # (h/ρ)²
        ratio = 4 * (math.sqrt(1 + x) + 1) / (math.sqrt(1 + 4 * x) + 1)  # the same, no 0/0
        lo, hi = (mid, hi) if ratio < q else (lo, mid)  # the ratio grows towards 4 with ρ
    rho = h * math.exp((lo + hi) / 2)
    curv = e1 / (rho * rho * (math.sqrt(1 + (h / rho) ** 2) - 1))
    return lambda r: hyperbola(curv, rho, r)


def hand_saturating(values, h):
    """The saturating curve through values at -2h, -h, 0, h, 2h, worked out by hand."""
    m2, m1, z, p1, p2 = values
    o1, o2 = (p1 - m1) / 2, (p2 - m2) / 2
    third = (o2 - 2 * o1) / h**3  # the odd part g r + third r³/6 through o1 and o2
    slope = o1 / h - third * h * h / 6
    even = _hand_saturating_even((p1 + m1) / 2 - z, (p2 + m2) / 2 - z, h)
    return lambda r: z + slope * r + third * r**3 / 6 + even(r)


# --------------------------------------------------------------------------- text tasks: steering by hand with forward hooks
TEXT_LAYERS = (1, 2)
NEUTRAL_PASSAGES = [NeutralPassage(text=t) for t in ("The rain fell on the town.", "Bread rises in a warm room.",
                                                     "A train left at nine.")]


@contextmanager
def added_by_hand(model, r: float):
    """r · v added to the output of each steered block at every position, by hand."""
    vec = random_vector(TEXT_LAYERS)

    def hook(layer):
        def add(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + r * vec[layer], *output[1:])
            return output + r * vec[layer]
        return add

    handles = [model.model.layers[layer].register_forward_hook(hook(layer)) for layer in TEXT_LAYERS]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def greedy_by_hand(lm, ids: list[int], r: float, n: int) -> list[int]:
    with torch.no_grad(), added_by_hand(lm.model, r):
        out = lm.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    new = out[0, len(ids):].tolist()
    eos = lm.tokenizer.eos_token_id
    return new[: new.index(eos) + 1] if eos in new else new


# --------------------------------------------------------------------------- a model with outlier dimensions
OUTLIER_DIMS = [3, 17]


def sharp(model):
    with torch.no_grad():
        model.lm_head.weight *= 40.0  # confident predictions: P(correct) at r = 0 well above chance
    return model


def with_outliers(model, factor=100.0):
    """A few hidden dimensions carry a massive, nearly constant activation (100× the typical
    embedding): the norm layers' denominators grow with it and their weights compensate, as in
    trained models, so ‖h‖ grows ~20× while the response to a steer stays at the old scale."""
    emb = model.model.embed_tokens.weight
    rest = [i for i in range(emb.shape[1]) if i not in OUTLIER_DIMS]
    with torch.no_grad():
        typical = emb.abs().mean()
        emb[:, OUTLIER_DIMS] = factor * typical
        k = factor * typical * math.sqrt(len(OUTLIER_DIMS) / emb.shape[1]) / emb[:, rest].pow(2).mean().sqrt()
        for mod in model.modules():
            if type(mod).__name__.endswith("RMSNorm"):
                mod.weight[rest] *= k
                mod.weight[OUTLIER_DIMS] = 0.0
    return model


def residual_norm(model, texts, layer):
    tok = ByteTok()
    with torch.no_grad():
        return float(np.mean([model(torch.tensor([tok(t)["input_ids"]]), output_hidden_states=True)
                              .hidden_states[layer + 1][0, -1].norm() for t in texts]))


def outlier_study(model):
    """A vector with the measured ‖h‖, and a task whose answers are the unsteered model's choices."""
    texts = [f"some text {i} here." for i in range(8)]
    g = torch.Generator().manual_seed(5)
    v = SteeringVector({layer: torch.randn(32, generator=g) for layer in (1, 2)},
                       {"residual_norms": {str(layer): residual_norm(model, texts, layer) for layer in (1, 2)}})
    v = replace(v.normalized(), metadata=v.metadata)
    qs = [NS(question=f"q{i} what?", choices=["a", "b", "c", "d"], answer=0, subject=None) for i in range(16)]
    plan = SweepPlan(norms=[0.0], tasks=[MultipleChoiceTask("qa", qs)], layers=[1, 2], batch_size=256)
    runner = ChunkRunner(model, ByteTok(), plan, Steering(v, (1, 2)), BatchBudget(256))
    first = plan.tasks[0].score_items(runner, list(range(16)))
    qs = [replace_answer(q, max(range(4), key=lambda j: rec["scores"][j])) for q, rec in zip(qs, first)]
    return v, replace(plan, tasks=[MultipleChoiceTask("qa", qs)])


def replace_answer(q, answer):
    return NS(question=q.question, choices=q.choices, answer=answer, subject=None)


# --------------------------------------------------------------------------- a sequential run on a tiny model
def sequential_setup():
    from repe_tradeoff.tasks.text import FluencyTask

    model = with_outliers(sharp(tiny_model("llama")))
    v, plan = outlier_study(model)
    # a behavior the vector steers: per prompt, the two one-letter replies closest in likelihood at r = 0,
    # the one whose likelihood rises with r as the aligned one
    eps = 1e-3 * float(np.mean(list(v.metadata["residual_norms"].values())))
    runner = ChunkRunner(model, GenTok(), replace(plan, norms=[-eps, 0.0, eps]), Steering(v, (1, 2)), BatchBudget(256))
    letters = "abcdefghijklmnopqrstuvwxyz"
    cands = [NS(prompt=f"do thing {i}", aligned=c, misaligned="a") for i in range(6) for c in letters]
    gap = {(r["item"], r["norm"]): r["logit_gap"]
           for r in AlignmentTask("pick", cands, template="plain").score_items(runner, list(range(len(cands))))}
    items = []
    for i in range(6):
        at = lambda c, r, i=i: gap[(i * 26 + letters.index(c), r)]
        x, y = min(((x, y) for x in letters for y in letters if x < y), key=lambda p: abs(at(p[0], 0.0) - at(p[1], 0.0)))
        rises = (at(x, eps) - at(y, eps)) >= (at(x, -eps) - at(y, -eps))
        items.append(NS(prompt=f"do thing {i}", aligned=x if rises else y, misaligned=y if rises else x))
    passages = [NS(text=f"The weather today is mild, day {i}.", topic="weather") for i in range(3)]
    tasks = [AlignmentTask("harm", items, template="plain"), plan.tasks[0],
             FluencyTask("fluency-x", passages, max_new_tokens=3)]
    return model, v, tasks


class GenTok:
    pad_token_id = 0
    eos_token_id = 255
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [b % 250 + 1 for b in text.encode()]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [self.decode(s) for s in seqs]

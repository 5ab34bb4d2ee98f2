"""LoRA training on a behavior's contrastive pairs with the DPO loss, checkpointed for resuming.

The objective is Direct Preference Optimisation (Rafailov et al. 2023) on (aligned ≻ misaligned):
``−log σ(β·[(log π(a) − log π_ref(a)) − (log π(m) − log π_ref(m))])``, with each side's
log-likelihood summed over the tokens after the pair's common prefix (the prompt) and the
reference ``π_ref`` the base model (its log-likelihoods computed once, before training).
It is written here over ``peft`` rather than through ``trl``'s trainer so that every step is a
plain function of (seed, step): the batch of step ``t`` is drawn from ``default_rng([seed, t])``,
LoRA dropout is 0, and the optimizer state is saved beside each checkpoint (safetensors), so
a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from repe_tradeoff.errors import SweepError
from repe_tradeoff.models.loading import find_layers, model_device

OBJECTIVE = "dpo"
STATE_FILE = "training_state.safetensors"
STATE_JSON = "training_state.json"


class FinetuneError(SweepError):
    """A fine-tuning run that cannot start, continue or resume; the message says what to do."""


@dataclass(frozen=True)
class LoraSettings:
    """What is trained and how (recorded in ``config.json``'s ``finetune``)."""

    steps: int = 32
    checkpoints: int = 9
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ()  # empty: every linear layer inside the trained blocks
    learning_rate: float = 1e-3
    beta: float = 0.1
    batch_pairs: int = 4
    seed: int = 0
    method: str = "lora"
    objective: str = OBJECTIVE

    def describe(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}


@dataclass
class PreferencePair:
    """One pair as token ids: the common prompt and each side's continuation."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def checkpoint_steps(steps: int, k: int) -> list[int]:
    """``k`` checkpoint steps from 0 to ``steps``: 0, then log-spaced (so the early part of the
    curve is sampled densely), distinct and increasing, ``steps`` last."""
    if k < 2 or steps < k - 1:
        raise FinetuneError(f"{k} checkpoints over {steps} steps: give --checkpoints ≥ 2 and --steps ≥ "
                            f"checkpoints − 1 (e.g. --steps 64 --checkpoints 9)")
    raw = np.geomspace(1, steps, k - 1)
    out = [0]
    for s in raw:
        out.append(max(int(round(s)), out[-1] + 1))
    # pushing duplicates up may overshoot the end: pull the tail back, keeping the steps distinct
    out[-1] = steps
    for i in range(len(out) - 2, 0, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:
        n += 1
    return n


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[PreferencePair]:
    """Each ``(aligned, misaligned)`` text pair as a prompt (the tokens both share) and two
    continuations (at least one token each)."""
    out = []
    for aligned, misaligned in pairs:
        a = tokenizer(aligned, add_special_tokens=True)["input_ids"]
        m = tokenizer(misaligned, add_special_tokens=True)["input_ids"]
        n = _common_prefix(a, m)
        if n == 0:
            raise FinetuneError("a contrastive pair shares no opening token; DPO needs a common prompt "
                                f"(first pair without one: {aligned[:60]!r})")
        out.append(PreferencePair(list(a[:n]), list(a[n:]), list(m[n:])))
    return out


def sequence_logps(model: nn.Module, prompts: Sequence[list[int]], continuations: Sequence[list[int]]) -> torch.Tensor:
    """The summed log-likelihood of each continuation after its prompt (right-padded batch)."""
    device = model_device(model)
    seqs = [p + c for p, c in zip(prompts, continuations)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    target = ids[:, 1:].to(device)
    token_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    out = []
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        out.append(token_lp[i, len(p) - 1 : len(p) - 1 + len(c)].sum())
    return torch.stack(out)


@torch.no_grad()
def reference_logps(model: nn.Module, pairs: list[PreferencePair], batch: int = 16) -> None:
    """Fill each pair's reference log-likelihoods from ``model`` (the base, before any LoRA)."""
    for s in range(0, len(pairs), batch):
        chunk = pairs[s : s + batch]
        lp = sequence_logps(model, [p.prompt for p in chunk] * 2,
                            [p.chosen for p in chunk] + [p.rejected for p in chunk])
        for i, p in enumerate(chunk):
            p.ref_chosen, p.ref_rejected = float(lp[i]), float(lp[len(chunk) + i])


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """The DPO (sigmoid) loss, mean over the batch."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def _adaptable() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers; peft adapts them too

    return (nn.Linear, Conv1D)


_ADAPTABLE = _adaptable()


def lora_targets(model: nn.Module, layers: Sequence[int], names: Sequence[str] = ()) -> list[str]:
    """The full module names of the linear layers LoRA adapts: inside the decoder blocks ``layers``,
    those whose last name part is in ``names`` (every linear layer when ``names`` is empty)."""
    blocks = find_layers(model)
    wanted = {i for i in layers}
    path_of = {id(m): n for n, m in model.named_modules()}
    out = []
    for i in sorted(wanted):
        block = blocks[i]
        base = path_of[id(block)]
        for sub, module in block.named_modules():
            if isinstance(module, _ADAPTABLE) and (not names or sub.split(".")[-1] in names):
                out.append(f"{base}.{sub}")
    if not out:
        raise FinetuneError(f"no linear layer named {', '.join(names) or '(any)'} in blocks {sorted(wanted)}; "
                            "give --target-modules with names the blocks use (e.g. q_proj,v_proj)")
    return out


def attach_lora(model: nn.Module, layers: Sequence[int], settings: LoraSettings):
    """``model`` with a fresh LoRA adapter (initialised from ``settings.seed``) on ``layers``; peft
    injects the adapter layers into ``model`` itself, so ``model`` runs through them."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FinetuneError("fine-tuning needs peft: pip install 'repe-tradeoff[finetune]'") from None
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, bias="none",
                        target_modules=lora_targets(model, layers, settings.target_modules), task_type="CAUSAL_LM")
    torch.manual_seed(settings.seed)
    return get_peft_model(model, config)


def trainable(peft_model) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]


@dataclass
class Trainer:
    """One LoRA's training: the step function, and saving / restoring a checkpoint."""

    peft_model: object
    pairs: list[PreferencePair]
    settings: LoraSettings
    step: int = 0
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self):
        params = [p for _, p in trainable(self.peft_model)]
        self.optimizer = torch.optim.AdamW(params, lr=self.settings.learning_rate, weight_decay=0.0)

    def batch(self, step: int) -> list[PreferencePair]:
        rng = np.random.default_rng([self.settings.seed, step])
        n = min(self.settings.batch_pairs, len(self.pairs))
        return [self.pairs[i] for i in rng.choice(len(self.pairs), size=n, replace=False)]

    def train_step(self) -> float:
        chunk = self.batch(self.step)
        self.peft_model.train()
        lp = sequence_logps(self.peft_model, [p.prompt for p in chunk] * 2,
                            [p.chosen for p in chunk] + [p.rejected for p in chunk])
        n = len(chunk)
        ref_c = torch.tensor([p.ref_chosen for p in chunk], device=lp.device)
        ref_r = torch.tensor([p.ref_rejected for p in chunk], device=lp.device)
        loss = dpo_loss(lp[:n], lp[n:], ref_c, ref_r, self.settings.beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.peft_model.eval()
        self.step += 1
        return float(loss.detach())

    def save(self, folder: Path, info: dict | None = None) -> None:
        """The adapter in peft's format plus the optimizer state, written whole or not at all."""
        from safetensors.torch import save_file

        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.peft_model.save_pretrained(str(tmp))
        names = {id(p): n for n, p in trainable(self.peft_model)}
        tensors, scalars = {}, {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p, {})
                for key, value in state.items():
                    if torch.is_tensor(value) and value.dim() > 0:
                        tensors[f"{names[id(p)]}::{key}"] = value.detach().cpu().contiguous()
                    else:
                        scalars[f"{names[id(p)]}::{key}"] = float(value)
        save_file(tensors, str(tmp / STATE_FILE))
        (tmp / STATE_JSON).write_text(json.dumps({"step": self.step, "scalars": scalars, **(info or {})},
                                                 sort_keys=True), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def restore(self, folder: Path) -> None:
        """Continue from a saved checkpoint: its adapter weights, optimizer state and step."""
        from safetensors.torch import load_file

        load_adapter_weights(self.peft_model, folder)
        meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_FILE))
        params = dict(trainable(self.peft_model))
        self.optimizer = torch.optim.AdamW(list(params.values()), lr=self.settings.learning_rate, weight_decay=0.0)
        for name, p in params.items():
            state = {k.split("::", 1)[1]: v.to(p.device) for k, v in tensors.items() if k.split("::", 1)[0] == name}
            for k, v in meta["scalars"].items():
                if k.split("::", 1)[0] == name:
                    state[k.split("::", 1)[1]] = torch.tensor(v)
            if state:
                self.optimizer.state[p] = state
        self.step = int(meta["step"])


def load_adapter_weights(peft_model, folder: Path) -> None:
    """Set the (only) adapter's weights to those saved in ``folder`` (peft's format)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise FinetuneError(f"{folder} holds weights this adapter lacks ({unexpected[0]}, …): it was trained "
                            "with other settings; use another --out folder")


def is_saved(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors", STATE_FILE,
                                                 STATE_JSON))

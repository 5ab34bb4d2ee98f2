"""Wire the stages for `demo` and `run`: extract → sweep → fit → generations → report."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from repe_tradeoff.config import ConfigError, RunConfig
from repe_tradeoff.metrics import AlignmentMetric, HelpfulnessMetric, generate
from repe_tradeoff.models import LoadedModel, load_model, n_layers, parse_layers
from repe_tradeoff.reading import extract
from repe_tradeoff.sweep import SweepPlan, atomic_write, default_batch_size, process_group, run_config, run_sweep
from repe_tradeoff.vectors import SteeringVector

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    behavior: str
    layer_set: str
    method: str
    model: str = "default"
    name_model: bool = False  # a study of several models names the model in the folder

    @property
    def slug(self) -> str:
        raw = f"{Path(self.behavior).stem}-{self.layer_set}-{self.method}"
        if self.name_model:  # the id's or folder's last part, e.g. Llama-3.1-8B
            raw = f"{Path(self.model.rstrip('/')).name.removesuffix('.gguf')}-{raw}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)


def experiments(cfg: RunConfig) -> list[Experiment]:
    """Model-major, so each model is loaded once."""
    several = len(cfg.models) > 1
    exps = [Experiment(b.name, ls, m, model, several)
            for model in cfg.models for b in cfg.behaviors for ls in cfg.layer_sets for m in cfg.methods]
    slugs = [e.slug for e in exps]
    clash = sorted({s for s in slugs if slugs.count(s) > 1})
    if clash:
        raise ConfigError(
            f"experiments {clash} would share a run folder: give the models (or behavior files) "
            "different names, or run them as separate configs"
        )
    return exps


def norm_grid(cfg: RunConfig, vector: SteeringVector) -> tuple[list[float], float]:
    """The absolute grid, and the factor that turned the configured grid into it."""
    if cfg.norm_unit == "absolute":
        return cfg.grid(), 1.0
    residual = vector.metadata.get("residual_norms", {})
    values = [residual[str(layer)] for layer in vector.layers if str(layer) in residual]
    scale = sum(values) / len(values) if values else 1.0
    return [round(r * scale, 6) for r in cfg.grid()], scale


def run_experiment(lm: LoadedModel, cfg: RunConfig, exp: Experiment, out: Path, progress=None) -> Path:
    """One behavior × layer set × method: its vector, sweep, fits, generations and report."""
    from repe_tradeoff.data import load_behavior, load_helpfulness

    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = lm
    behavior_spec = next(b for b in cfg.behaviors if b.name == exp.behavior)
    behavior = load_behavior(exp.behavior)
    layers = parse_layers(exp.layer_set, n_layers(model))
    vector_path = out / "vector.safetensors"
    _, rank, barrier = process_group()
    if rank == 0 and not vector_path.exists():  # under accelerate launch, one process reads the vector
        pairs = [(p.aligned, p.misaligned) for p in behavior.pairs]
        vector, _ = extract(
            model, tokenizer, pairs, layers, method=exp.method, position=cfg.read_position,
            metadata={"model": exp.model, "dataset": behavior.name},
        )
        vector.save(vector_path)
    barrier()
    vector = SteeringVector.load(vector_path)
    vector.check_model(model, str(vector_path))
    norms, scale = norm_grid(cfg, vector)
    tasks = [AlignmentMetric(behavior.name, list(behavior.items), behavior_spec.scorer, behavior_spec.template)]
    for h in cfg.helpfulness:
        task = load_helpfulness(h.spec)
        tasks.append(HelpfulnessMetric(task.name, list(task.questions), h.format, h.template))
    plan = SweepPlan(
        norms=norms, tasks=tasks, layers=layers, positions=cfg.positions, operator=cfg.operator,
        share_lower=cfg.share_lower, share_prompts=cfg.share_prompts, batch_size=cfg.batch_size or default_batch_size(model),
        chunk_size=cfg.chunk_size,
        max_new_tokens=cfg.max_new_tokens,
    )
    config = run_config(
        plan, vector, model_name=exp.model, model_revision=lm.revision, dtype=cfg.dtype,
        extra={"norm_unit": cfg.norm_unit, "norm_unit_scale": scale, "configured_norms": cfg.grid(),
               "behavior": exp.behavior, "layer_set": exp.layer_set, "method": exp.method,
               "command": f"repe-tradeoff run CONFIG.yaml  # experiment {exp.slug}"},
    )
    run_sweep(model, tokenizer, vector, plan, out, config=config, limit=cfg.limit, progress=progress)
    if rank == 0:
        fit(out, cfg)
        write_generations(lm, vector, behavior, layers, norms, cfg, out)
    return out


def fit(out: Path, cfg: RunConfig) -> dict:
    from repe_tradeoff.theory import fit_run

    kwargs = {"lam": cfg.fit.lam, "n_boot": cfg.fit.n_boot, "choices": cfg.fit.choices}
    if cfg.fit.window is not None:
        kwargs["window"] = cfg.fit.window
    return fit_run(out, **kwargs)


def write_generations(lm, vector, behavior, layers, norms, cfg: RunConfig, out: Path) -> None:
    """Greedy continuations of the first evaluation prompt at −R, 0, +R."""
    path = out / "generations.json"
    if path.exists() or not behavior.items:
        return
    big = cfg.generation_norm or max(abs(r) for r in norms) / 2 or 1.0
    grid = [-big, 0.0, big]
    prompts = [behavior.items[0].prompt]
    texts = generate(lm.model, lm.tokenizer, prompts, vector, grid, layers=layers, positions=cfg.positions,
                     operator=cfg.operator, max_new_tokens=cfg.max_new_tokens)
    records = [{"prompt": p, "norm": r, "text": texts[i][k]} for i, p in enumerate(prompts) for k, r in enumerate(grid)]
    atomic_write(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")


def run_study(cfg: RunConfig, progress=None) -> tuple[Path, list[Path]]:
    """Every experiment of a config, one after another (each resumable), then the report(s)."""
    from repe_tradeoff.report import build_comparison_report, build_report

    exps = experiments(cfg)
    _, rank, _ = process_group()
    runs, lm = [], None
    for exp in exps:
        if lm is None or lm.name != exp.model:
            lm = None  # the previous model is freed before the next one loads
            lm = load_model(exp.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        folder = cfg.out if len(exps) == 1 else cfg.out / exp.slug
        log.info("experiment %s → %s", exp.slug, folder)
        runs.append(run_experiment(lm, cfg, exp, folder, progress))
        if rank == 0:
            build_report(folder)
    if len(runs) == 1 or rank != 0:
        return runs[0] / "report.html", runs
    return build_comparison_report({e.slug: r for e, r in zip(exps, runs)}, cfg.out), runs

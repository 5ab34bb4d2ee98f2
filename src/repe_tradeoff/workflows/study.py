"""Wire the stages for `demo` and `run`: extract → sweep → fit → generations → report."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from repe_tradeoff import runs
from repe_tradeoff.engine.generation import generate
from repe_tradeoff.models.loading import LoadedModel, load_model, n_layers, parse_layers
from repe_tradeoff.runs.processes import process_group
from repe_tradeoff.vectors.reading import extract
from repe_tradeoff.vectors.vector import SteeringVector
from repe_tradeoff.workflows.baseline import measure_baseline, resolve_prompt
from repe_tradeoff.workflows.prepare import prepare_joint_sweep, prepare_sweep
from repe_tradeoff.workflows.settings import ConfigError, StudyConfig
from repe_tradeoff.workflows.sweep import run_sweep

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


def experiments(cfg: StudyConfig) -> list[Experiment]:
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


def run_experiment(lm: LoadedModel, cfg: StudyConfig, exp: Experiment, out: Path, progress=None,
                   command: str | None = None) -> Path:
    """One behavior × layer set × method: its vector, sweep, fits, generations and report.

    ``command`` is the command line that ran the study; config.json records it with the experiment's name.
    """
    from repe_tradeoff.data import load_behavior

    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = lm
    behavior_spec = next(b for b in cfg.behaviors if b.name == exp.behavior)
    behavior = load_behavior(exp.behavior)
    layers = _layers(lm, cfg, exp, behavior, behavior_spec, out)
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
    settings = cfg.model_copy(update={"behaviors": [behavior_spec]})  # this experiment's behavior only
    plan, config = prepare_sweep(
        lm, settings, vector, layers, model_name=exp.model,
        command=f"{command}  # experiment {exp.slug}" if command else None,
        extra={"behavior": exp.behavior, "layer_set": exp.layer_set, "method": exp.method}, out=out,
        budget=cfg.fit.max_helpfulness_loss, progress=progress,
    )
    run_sweep(model, tokenizer, vector, plan, out, config=config, limit=cfg.limit, progress=progress)
    if rank == 0:
        fit(out, cfg)
    barrier()  # the baseline steers at the norm fits.json recommends
    instruction = resolve_prompt(cfg.baseline_prompt, exp.behavior)
    if instruction:
        measure_baseline(lm, vector, layers, settings, out, instruction, n_boot=cfg.fit.n_boot,
                         progress=progress, command=command)
    if rank == 0:
        write_generations(lm, vector, behavior, layers, plan.norms, cfg, out)
    return out


def _layers(lm: LoadedModel, cfg: StudyConfig, exp: Experiment, behavior, behavior_spec, out: Path) -> list[int]:
    """The experiment's layers; ``atlas`` has the layer atlas pick its best band first (in out/atlas)."""
    from repe_tradeoff.workflows.atlas import ATLAS_LAYER_SET, atlas_layers

    if exp.layer_set != ATLAS_LAYER_SET:
        return parse_layers(exp.layer_set, n_layers(lm.model))
    settings = cfg.model_copy(update={"behaviors": [behavior_spec]})
    return atlas_layers(lm, settings, [(p.aligned, p.misaligned) for p in behavior.pairs], out / "atlas",
                        behavior=behavior.name, model_name=exp.model, method=exp.method,
                        position=cfg.read_position, n_boot=cfg.fit.n_boot)


def fit(out: Path, cfg: StudyConfig) -> dict:
    from repe_tradeoff.theory import fit_run

    kwargs = {"lam": cfg.fit.lam, "n_boot": cfg.fit.n_boot, "choices": cfg.fit.choices,
              "max_helpfulness_loss": cfg.fit.max_helpfulness_loss}
    if cfg.fit.window is not None:
        kwargs["window"] = cfg.fit.window
    return fit_run(out, **kwargs)


def write_generations(lm, vector, behavior, layers, norms, cfg: StudyConfig, out: Path) -> None:
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
    runs.write_generations(out, records)


def run_study(cfg: StudyConfig, progress=None, command: str | None = None) -> tuple[Path, list[Path]]:
    """Every experiment of a config, one after another (each resumable), then the report(s).

    ``command``, the command line that ran the study, is recorded in each experiment's config.json.
    """
    from repe_tradeoff.reporting import build_comparison_report, build_report

    exps = experiments(cfg)
    _, rank, _ = process_group()
    runs, lm = [], None
    done: dict[tuple[str, str, str, str], Path] = {}
    for exp in exps:
        if lm is None or lm.name != exp.model:
            lm = None  # the previous model is freed before the next one loads
            lm = load_model(exp.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
        folder = cfg.out if len(exps) == 1 else cfg.out / exp.slug
        log.info("experiment %s → %s", exp.slug, folder)
        runs.append(run_experiment(lm, cfg, exp, folder, progress, command))
        if rank == 0:
            build_report(folder)
        if cfg.finetune is not None and rank == 0:
            from repe_tradeoff.workflows.finetune_setup import finetune_experiment

            finetune_experiment(lm, cfg, exp, folder, progress, command)
        done[(exp.model, exp.layer_set, exp.method, exp.behavior)] = folder
        joint = _joint_due(cfg, exp, done)
        if joint is not None:
            log.info("joint experiment %s → %s", " × ".join(cfg.combine), joint[1])
            run_joint_experiment(lm, cfg, exp, joint[0], joint[1], progress, command)
            if rank == 0:
                build_report(joint[1])
    if len(runs) == 1 or rank != 0:
        return runs[0] / "report.html", runs
    return build_comparison_report({e.slug: r for e, r in zip(exps, runs)}, cfg.out), runs


def _joint_due(cfg: StudyConfig, exp: Experiment, done: dict) -> tuple[list[Path], Path] | None:
    """(the combined behaviors' vector files, the joint folder) once the last of them is extracted."""
    if not cfg.combine or exp.behavior not in cfg.combine:
        return None
    key = (exp.model, exp.layer_set, exp.method)
    folders = [done.get((*key, b)) for b in cfg.combine]
    if None in folders or exp.behavior != next(b for b in reversed([b.name for b in cfg.behaviors]) if b in cfg.combine):
        return None
    slug = Experiment("+".join(Path(b).stem for b in cfg.combine), exp.layer_set, exp.method, exp.model,
                      exp.name_model).slug
    return [f / "vector.safetensors" for f in folders], cfg.out / f"joint-{slug}"


def _joint_layers(cfg: StudyConfig, exp: Experiment, vectors: list[SteeringVector], model) -> list[int]:
    """The layer set's layers; with ``atlas``, the layers every combined behavior's atlas chose."""
    from repe_tradeoff.workflows.atlas import ATLAS_LAYER_SET

    if exp.layer_set != ATLAS_LAYER_SET:
        return parse_layers(exp.layer_set, n_layers(model))
    common = sorted(set.intersection(*(set(v.layers) for v in vectors)))
    if common != vectors[0].layers or any(v.layers != common for v in vectors):
        raise ConfigError(f"the atlas chose different layers for the combined behaviors ({', '.join(cfg.combine)}): "
                          "name one layer set in `layer_sets` (e.g. middle or 8-15) to steer them jointly")
    return common


def run_joint_experiment(lm: LoadedModel, cfg: StudyConfig, exp: Experiment, vector_paths: list[Path], out: Path,
                         progress=None, command: str | None = None) -> Path:
    """The combined behaviors' vectors steered together over the product grid, every behavior
    scored (off-target effects), then fitted (the joint surface)."""
    model, tokenizer = lm
    vectors = [SteeringVector.load(p) for p in vector_paths]
    names = [Path(b).stem for b in cfg.combine]
    layers = _joint_layers(cfg, exp, vectors, model)
    plan, config, vectors = prepare_joint_sweep(
        lm, cfg, vectors, names, layers, model_name=exp.model,
        command=f"{command}  # joint experiment {out.name}" if command else None,
        extra={"layer_set": exp.layer_set, "method": exp.method, "vector_paths": [str(p) for p in vector_paths]},
    )
    run_sweep(model, tokenizer, vectors, plan, out, config=config, limit=cfg.limit, progress=progress)
    if process_group()[1] == 0:
        fit(out, cfg)
    return out

"""The typed run configuration (`repe-tradeoff run CONFIG.yaml`), validated at the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.workflows.grid import parse_norms

#: ``norms: auto``: the grid is found from the model's response (:mod:`repe_tradeoff.workflows.autogrid`).
AUTO = "auto"


class ConfigError(RepeTradeoffError):
    """A configuration that cannot run; the message names the key and the allowed values."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BehaviorSpec(_Strict):
    name: str = Field(description="built-in name (harmfulness, sentiment), a folder, or a loader spec")
    scorer: Literal["forced-choice", "yes-no", "generate"] = "forced-choice"
    template: Literal["auto", "chat", "plain"] = "auto"


LM_EVAL_PREFIX = "lm-eval:"


class HelpfulnessSpec(_Strict):
    spec: str | None = Field(
        None, description="basic-qa, mmlu:SUBJECT[@FOLDER], lm-eval:TASK, short-answer[:FILE], a JSONL/CSV file, "
                          "or KIND:ARGUMENT of a kind registered in repe_tradeoff.tasks.registry")
    lm_eval: str | None = Field(None, description="a multiple_choice task of lm-evaluation-harness")
    include: str | None = Field(None, description="with lm_eval: a folder of local lm-eval task YAMLs")
    num_fewshot: int | None = Field(None, ge=0, description="with lm_eval: overrides the task's few-shot count")
    format: Literal["cloze", "letter"] = "cloze"
    template: Literal["plain", "chat"] = "plain"

    @model_validator(mode="before")
    @classmethod
    def _lm_eval_spec(cls, value):
        """``spec: lm-eval:TASK`` is ``lm_eval: TASK``."""
        spec = value.get("spec") if isinstance(value, dict) else None
        if isinstance(spec, str) and spec.startswith(LM_EVAL_PREFIX) and value.get("lm_eval") is None:
            value = {**value, "spec": None, "lm_eval": spec[len(LM_EVAL_PREFIX):]}
        return value

    @field_validator("spec")
    @classmethod
    def _known_kind(cls, value):
        if value is not None:
            from repe_tradeoff.tasks.registry import kind_of

            kind_of(value)  # a `KIND:` prefix close to a registered kind is refused, with the kind meant
        return value

    @model_validator(mode="after")
    def _one_source(self):
        if (self.spec is None) == (self.lm_eval is None):
            raise ValueError("give a helpfulness task either as `spec` (basic-qa, a file, …) or as `lm_eval: TASK`, not both")
        if self.lm_eval is not None and not self.lm_eval.strip():
            raise ValueError("`lm_eval` needs a task name, e.g. lm-eval:arc_easy")
        if self.lm_eval is None and (self.include is not None or self.num_fewshot is not None):
            raise ValueError("`include` and `num_fewshot` apply to lm-eval tasks only (`lm_eval: TASK`)")
        if self.lm_eval is not None and (self.format != "cloze" or self.template != "plain"):
            raise ValueError("an lm-eval task brings its own prompt format: drop `format`/`template` (letter, chat) for it")
        return self


class FitSpec(_Strict):
    window: float | None = None
    lam: float = Field(1.0, gt=0)
    n_boot: int = Field(200, ge=0)
    choices: int | None = Field(None, ge=2)
    max_helpfulness_loss: str = Field(
        "0.05", description="the recommendation's budget: absolute loss of P(correct), or e.g. 5% of r = 0's")

    @field_validator("max_helpfulness_loss", mode="before")
    @classmethod
    def _budget(cls, value):
        from repe_tradeoff.theory.decisions.budget import parse_budget

        parse_budget(value)  # raises with the message that says what to give
        return str(value).strip()


class FinetuneSpec(_Strict):
    """``finetune:`` in a run config: a LoRA on each experiment's behavior, compared with its steering."""

    steps: int = Field(32, ge=1)
    checkpoints: int = Field(9, ge=2)
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    target_modules: list[str] = Field(default_factory=list, description="linear-layer names; empty: all")
    learning_rate: float = Field(1e-3, gt=0)
    beta: float = Field(0.1, gt=0)
    batch_pairs: int = Field(4, ge=1)
    seed: int = 0


class SweepSettings(_Strict):
    """What one sweep measures and how: its tasks, the norm grid, where and how it steers, batching.

    ``sweep`` builds these from its options; a ``run`` config (:class:`StudyConfig`) holds them too.
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    behaviors: list[BehaviorSpec] = Field(default_factory=list)
    helpfulness: list[HelpfulnessSpec] = Field(default_factory=list)
    fluency: list[str] = Field(default_factory=list, description="neutral text set(s) for kl and perplexity: neutral or a JSONL file")
    norms: str | list[float] = Field("-1:1:0.05", description="a grid (start:stop:step or a list), or auto")
    points: int | None = Field(
        None, ge=5, description="with norms auto: the number of norms to place evenly in the curves' change "
                                "(a dense grid); unset: the sequential plan measures where the budget is decided")
    search_items: int = Field(16, ge=1, description="with norms auto: items per task the search evaluates")
    norm_unit: Literal["absolute", "residual"] = Field(
        "residual", description="residual: norms are multiples of the mean residual-stream norm at the steered layers"
    )
    positions: Literal["all", "after-prompt", "last"] = "all"
    operator: Literal["add", "ablate", "ablate-then-add"] = "add"
    limit: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1, description="rows per forward; default 256 on a CPU, 1024 on a GPU")
    chunk_size: int = Field(16, ge=1)
    share_lower: bool = True
    share_prompts: bool = True
    max_new_tokens: int = Field(40, ge=1)
    response_scorer: str = Field("refusal", description="for the generate scorer: refusal, sentiment or module:function")
    joint_norms: list[str | list[float]] = Field(
        default_factory=list, description="a joint sweep's grid per vector, in order (empty: `norms` for each)")
    orthogonalize: bool = Field(False, description="a joint sweep: make each vector orthogonal to the first, per layer")

    @field_validator("behaviors", mode="before")
    @classmethod
    def _behavior_strings(cls, value):
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("helpfulness", mode="before")
    @classmethod
    def _task_strings(cls, value):
        return [{"spec": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("norms")
    @classmethod
    def _norms(cls, value):
        if isinstance(value, str) and value.strip() == AUTO:
            return AUTO
        parse_norms(value)
        return value

    @field_validator("joint_norms")
    @classmethod
    def _joint_norms(cls, value):
        for grid in value:
            parse_norms(grid)
        return value

    @field_validator("response_scorer")
    @classmethod
    def _response_scorer(cls, value):
        module, sep, func = value.partition(":")
        if value not in ("refusal", "sentiment") and not (sep and module and func):
            raise ValueError("use refusal, sentiment, or module:function naming your own `str -> float`")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.operator == "ablate" and (self.auto or len(parse_norms(self.norms)) > 1):
            raise ValueError(
                "operator `ablate` ignores the norm, so a grid of norms measures the same thing at every "
                "point: use `ablate-then-add` to sweep norms, or `norms: \"0\"`"
            )
        return self

    @property
    def auto(self) -> bool:
        """Whether the grid is found from the model's response (``norms: auto``)."""
        return self.norms == AUTO

    def grid(self) -> list[float]:
        if self.auto:
            raise ValueError("norms: auto has no grid until the search has run (prepare.resolve_grid)")
        return parse_norms(self.norms)


class StudyConfig(SweepSettings):
    """One study: models × behaviors × layer sets × methods, each scored on every helpfulness task."""

    norms: str | list[float] = Field(AUTO, description="auto (found from the model's response), or a grid")
    model: str | list[str] = Field("default", description="a model, or a list of models to compare")
    device: str | None = None
    trust_remote_code: bool = False
    out: Path = Path("runs/study")
    behaviors: list[BehaviorSpec] = Field(default_factory=lambda: [BehaviorSpec(name="harmfulness")], min_length=1)
    helpfulness: list[HelpfulnessSpec] = Field(default_factory=lambda: [HelpfulnessSpec(spec="basic-qa")], min_length=1)
    layer_sets: list[str] = Field(default_factory=lambda: ["middle"], min_length=1,
                                  description="layer specs (middle, 8-15, …), or atlas: the layer atlas' best band")
    methods: list[Literal["pca", "mean", "probe"]] = Field(default_factory=lambda: ["pca"], min_length=1)
    read_position: Literal["last", "mean"] = "last"
    generation_norm: float | None = Field(None, description="R for the side-by-side generations at -R, 0, +R")
    fit: FitSpec = Field(default_factory=FitSpec)
    baseline_prompt: str | None = Field(
        None, description="the prompting baseline's instruction; none: no baseline; default: the behavior's own")
    finetune: FinetuneSpec | None = Field(
        None, description="also fine-tune a LoRA on each behavior's pairs and compare it with steering")
    combine: list[str] = Field(
        default_factory=list,
        description="behaviors whose vectors are also steered jointly (product grid), scoring every behavior")

    @model_validator(mode="after")
    def _combine_known(self):
        names = [b.name for b in self.behaviors]
        unknown = [c for c in self.combine if c not in names]
        if unknown or (self.combine and len(set(self.combine)) < 2):
            raise ValueError(f"combine: give two or more different behaviors of `behaviors` ({', '.join(names)}); "
                             f"got {self.combine}")
        return self

    @field_validator("model")
    @classmethod
    def _models(cls, value):
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("give at least one model, each once")
        return value

    @property
    def models(self) -> list[str]:
        return [self.model] if isinstance(self.model, str) else list(self.model)


def load_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see examples/ for one to copy")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text: save it as UTF-8 (it should be a YAML file)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        raise ConfigError(
            f"{path} is not valid YAML{where}: {problem}; fix the indentation, quotes or brackets there"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys (model:, behaviors:, …), not {type(raw).__name__}")
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: " + describe(err)) from None


def describe(err: ValidationError) -> str:
    """One line per problem: the key path, what is wrong, and what is allowed."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if not key:  # a rule across several keys: its message names them
            lines.append(str(e["msg"]).removeprefix("Value error, "))
        elif e["type"] == "extra_forbidden":
            allowed = ", ".join(StudyConfig.model_fields) if len(e["loc"]) == 1 else "see the docs"
            lines.append(f"unknown key `{key}` (allowed: {allowed})")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"`{key}`: {msg} (got {e.get('input')!r})")
    return "; ".join(lines)

"""What a report says, as plain data: law rows, checks, recommendation, commands.

The HTML page and summary.md both render these, so they cannot disagree.
Nothing here recomputes a fit: every number comes from fits.json or points.jsonl.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._io import RunFiles, _finite, block_problem, fit_ok

#: Thresholds used when fits.json carries no ``status`` for a check (the theory module's
#: own criteria for A1 and A3, so a hand-written fits.json is graded the same way).
A1_R2_PASS, A1_R2_WARN = 0.95, 0.80
A3_QQ_PASS, A3_QQ_WARN = 0.98, 0.95
A3_P_PASS, A3_P_WARN = 0.05, 0.01
PRED_RMSE_PASS, PRED_RMSE_WARN = 0.05, 0.10
THRESHOLDS_NOTE = (
    "Badges are the status fits.json gives each check; a check it gives none is graded here "
    f"(marked 'threshold'): A1 pass if R² ≥ {A1_R2_PASS}, warn if ≥ {A1_R2_WARN}, else fail; "
    f"A3 pass if the median QQ correlation of X_i(r) with a normal ≥ {A3_QQ_PASS}, warn if "
    f"≥ {A3_QQ_WARN} (without QQ correlations: the median normality p-value ≥ {A3_P_PASS}, "
    f"≥ {A3_P_WARN}), else fail; prediction pass if its RMSE against the measured helpfulness "
    f"≤ {PRED_RMSE_PASS}, warn if ≤ {PRED_RMSE_WARN}, else fail. N/A: the check could not be "
    "made (the reason is given)."
)


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, '—' when missing."""
    v = _finite(x)
    if v is None:
        return "—"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def fmt_param(name: str, value: float | None, lo: float | None, hi: float | None) -> str:
    """``a = 0.4 [0.35, 0.45]``."""
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else ""
    return f"{name} = {fmt(value)}{ci}"


def fmt_ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _finite(ci[0]), _finite(ci[1])
        if lo is not None and hi is not None:
            return f"[{fmt(lo)}, {fmt(hi)}]"
    return ""


# --------------------------------------------------------------------------- laws
@dataclass
class LawRow:
    form: str
    formula: str | None = None
    # (name, value, ci_low, ci_high)
    params: list[tuple[str, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    r2: float | None = None
    aic: float | None = None
    bic: float | None = None
    n_points: float | None = None
    window: float | None = None  # a local fit on |r| <= window
    span: tuple[float, float] | None = None  # a fit on part of the grid
    ci_method: str | None = None
    compared: bool = False  # one of the whole-grid fits AIC/BIC compare
    delta_aic: float | None = None
    delta_bic: float | None = None
    best: bool = False
    error: str | None = None
    at_bound: list[str] = field(default_factory=list)  # parameters stuck at a bound

    @property
    def fitted_on(self) -> str:
        if self.window is not None:
            return f"|r| ≤ {fmt(self.window)}"
        if self.span is not None:
            return f"r in [{fmt(self.span[0])}, {fmt(self.span[1])}]"
        return "whole grid"


@dataclass
class LawSection:
    title: str
    block_key: str  # where the block sits in fits.json, e.g. "by_task.basic-qa"
    task: str
    problem: str | None
    rows: list[LawRow]
    extras: list[str]  # one-line facts: slope at zero, chance level, ...

    @property
    def compared(self) -> list[LawRow]:
        """The whole-grid fits AIC/BIC compare (fitted or failed), lowest AIC first."""
        rows = [r for r in self.rows if r.compared]
        return sorted(rows, key=lambda r: (r.error is not None,
                                           r.aic if r.aic is not None else math.inf))

    @property
    def winner(self) -> str | None:
        """fits.json's ``best``, else the compared fit with the lowest AIC."""
        for r in self.rows:
            if r.best:
                return r.form
        ok = [r for r in self.compared if r.error is None and r.aic is not None]
        return ok[0].form if ok else None


def _span(fit: dict[str, Any]) -> tuple[float, float] | None:
    for key in ("range", "span"):
        v = fit.get(key)
        if isinstance(v, (list, tuple)) and len(v) == 2:
            lo, hi = _finite(v[0]), _finite(v[1])
            if lo is not None and hi is not None:
                return lo, hi
    return None


#: Entries of a fits.json law block that are not fits even when they carry an ``error``.
NOT_FITS = {"slope_at_zero", "comparison", "peak", "chance_norm", "helpfulness_vocab",
            "diagnostics", "settings"}


def is_fit(key: str, value: Any) -> bool:
    """A fit of a law block: parameters, or an error in place of them."""
    return key not in NOT_FITS and isinstance(value, dict) and (
        "params" in value or "error" in value)


def _law_rows(block: dict[str, Any]) -> list[LawRow]:
    best = block.get("best") if isinstance(block.get("best"), str) else None
    comparison = block.get("comparison") if isinstance(block.get("comparison"), dict) else None
    rows = []
    for form, fit in block.items():
        if not is_fit(form, fit):
            continue
        row = LawRow(form, best=(form == best))
        if isinstance(fit.get("formula"), str):
            row.formula = fit["formula"]
        row.window = _finite(fit.get("window"))
        row.span = _span(fit)
        row.n_points = _finite(fit.get("n_points"))
        if comparison is not None:
            row.compared = form in comparison
            cmp = comparison.get(form)
            if isinstance(cmp, dict):
                row.delta_aic = _finite(cmp.get("delta_aic"))
                row.delta_bic = _finite(cmp.get("delta_bic"))
        else:  # a hand-written fits.json: every whole-grid fit is compared
            row.compared = row.window is None and row.span is None
        if not fit_ok(fit):
            row.error = str(fit.get("error") or "no parameters")
            row.compared = row.window is None and row.span is None
            rows.append(row)
            continue
        cis = fit.get("ci") if isinstance(fit.get("ci"), dict) else {}
        for name, value in fit["params"].items():
            ci = cis.get(name)
            lo = hi = None
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                lo, hi = _finite(ci[0]), _finite(ci[1])
            row.params.append((str(name), _finite(value), lo, hi))
        row.r2 = _finite(fit.get("r2"))
        row.aic = _finite(fit.get("aic"))
        row.bic = _finite(fit.get("bic"))
        cm = fit.get("ci_method")
        row.ci_method = str(cm) if cm is not None else None
        if isinstance(fit.get("at_bound"), list):
            row.at_bound = [str(x) for x in fit["at_bound"]]
        rows.append(row)
    if comparison is None:  # Δ relative to the best compared fit
        ok = [r for r in rows if r.compared and r.error is None]
        amin = min((r.aic for r in ok if r.aic is not None), default=None)
        bmin = min((r.bic for r in ok if r.bic is not None), default=None)
        for r in ok:
            r.delta_aic = None if r.aic is None or amin is None else r.aic - amin
            r.delta_bic = None if r.bic is None or bmin is None else r.bic - bmin
    return rows


def _alignment_section(task: str, key: str, block: Any) -> LawSection:
    title = f"alignment — {task}"
    problem = block_problem(block, f"alignment fits for {task}")
    if problem is not None:
        return LawSection(title, key, task, problem, [], [])
    extras = []
    s0 = block.get("slope_at_zero")
    if isinstance(s0, dict) and _finite(s0.get("value")) is not None:
        model = f", from {s0['model']}" if isinstance(s0.get("model"), str) else ""
        extras.append(f"slope at r = 0: {fmt(s0['value'])} {fmt_ci(s0.get('ci'))}".rstrip()
                      + f" (alignment per unit r{model})")
    elif isinstance(s0, dict) and s0.get("error"):
        extras.append(f"slope at r = 0: not available ({s0['error']})")
    tn = _finite(block.get("transition_norm"))
    if tn is not None:
        extras.append(f"transition (alignment 0) at r = {fmt(tn)}")
    if block.get("trimmed") and isinstance(block.get("monotone_range"), list):
        lo, hi = (block["monotone_range"] + [None, None])[:2]
        extras.append(f"the curve turns back outside r in [{fmt(lo)}, {fmt(hi)}]")
    return LawSection(title, key, task, None, _law_rows(block), extras)


def _helpfulness_section(task: str, key: str, block: Any, k: int | None,
                         metric: str) -> LawSection:
    if isinstance(block, dict) and isinstance(block.get("metric"), str):
        metric = block["metric"]
    title = f"helpfulness — {task} ({metric})"
    problem = block_problem(block, f"{metric} fits for {task}")
    if problem is not None:
        return LawSection(title, key, task, problem, [], [])
    extras = []
    chance = _finite(block.get("chance"))
    if chance is None:
        chance = 0.0 if metric == "helpfulness_vocab" else (1.0 / k if k else None)
    if metric != "helpfulness_vocab" and k:
        extras.append(f"k = {k} options")
    if chance is not None:
        extras.append(f"chance level {fmt(chance)}")
    peak = block.get("peak")
    if isinstance(peak, dict) and _finite(peak.get("norm")) is not None:
        extras.append(f"measured peak {fmt(peak.get('value'))} at r = {fmt(peak['norm'])}")
    return LawSection(title, key, task, None, _law_rows(block), extras)


def law_sections(run: RunFiles) -> list[LawSection]:
    """One section per fitted curve (alignment, helpfulness, full-vocabulary helpfulness)."""
    out: list[LawSection] = []
    block = run.fits.get("alignment")
    a_task = run.alignment_task
    if a_task is not None or block is not None:
        task = block.get("task") if isinstance(block, dict) and block.get("task") else a_task
        out.append(_alignment_section(str(task or "alignment"), "alignment", block))
    extra = run.fits.get("alignment_by_task")
    if isinstance(extra, dict):
        for task, blk in extra.items():
            if all(sec.task != task for sec in out):
                out.append(_alignment_section(str(task), f"alignment_by_task.{task}", blk))
    by_task = run.fits.get("by_task") if isinstance(run.fits.get("by_task"), dict) else {}
    h_tasks = list(run.helpfulness_tasks)
    for t in by_task:
        if t not in h_tasks:
            h_tasks.append(str(t))
    if not h_tasks and isinstance(run.fits.get("helpfulness"), dict):
        h_tasks = [str(run.fits["helpfulness"].get("task") or "helpfulness")]
    for task in h_tasks:
        block = run.helpfulness_block(task)
        key = f"by_task.{task}" if task in by_task else "helpfulness"
        k = run.n_choices(task)
        out.append(_helpfulness_section(task, key, block, k, "helpfulness"))
        vocab = block.get("helpfulness_vocab") if isinstance(block, dict) else None
        if vocab is None and key == "helpfulness":
            vocab = run.fits.get("helpfulness_vocab")
        if vocab is not None:
            out.append(_helpfulness_section(task, f"{key}.helpfulness_vocab", vocab, k,
                                            "helpfulness_vocab"))
    return out


# --------------------------------------------------------------------------- recommendation
@dataclass
class Recommendation:
    text: str
    ok: bool
    extras: list[str]


def recommendation(run: RunFiles) -> Recommendation:
    rec = run.fits.get("recommendation")
    extras = []
    er = run.fits.get("efficient_regime")
    if isinstance(er, dict) and not er.get("error"):
        mx = _finite(er.get("max_norm"))
        lam = _finite(er.get("lambda"))
        lam_txt = f" at exchange rate λ = {fmt(lam)}" if lam is not None else ""
        end = _finite(er.get("end_norm"))
        side = ""
        if end is not None and end < 0:
            side = " on the negative side"
        if mx is not None and mx <= 0:
            extras.append(f"Efficient regime: empty{lam_txt}")
        elif mx is not None:
            extras.append(
                f"Efficient regime: |r| ≤ {fmt(mx)}{side} {fmt_ci(er.get('ci'))}".rstrip()
                + f"{lam_txt}: the alignment gained outweighs the helpfulness lost"
            )
        elif er.get("note") or er.get("reason"):
            extras.append(f"Efficient regime: {er.get('note') or er.get('reason')}")
        elif _finite(er.get("searched_up_to")) is not None:
            extras.append(
                f"Efficient regime: does not end inside the grid (searched up to "
                f"|r| = {fmt(er['searched_up_to'])}){lam_txt}"
            )
    elif isinstance(er, dict):
        extras.append(f"Efficient regime: not determined ({er['error']})")
    if not run.fits:
        return Recommendation(
            "No recommendation yet: this run has no fits.json (run `repe-tradeoff fit`).",
            False, extras)
    if isinstance(rec, dict) and rec.get("error"):
        return Recommendation(f"No recommendation: {rec['error']}", False, extras)
    if isinstance(rec, dict):
        r = _finite(rec.get("norm"))
        if isinstance(rec.get("text"), str) and rec["text"].strip():
            return Recommendation(rec["text"].strip(), r is not None, extras)
        if r is not None:
            parts = []
            if _finite(rec.get("alignment_gain")) is not None:
                parts.append(f"alignment {float(rec['alignment_gain']):+.3g} "
                             f"{fmt_ci(rec.get('alignment_gain_ci'))}".rstrip())
            if _finite(rec.get("helpfulness_change")) is not None:
                parts.append(f"helpfulness {float(rec['helpfulness_change']):+.3g} "
                             f"{fmt_ci(rec.get('helpfulness_change_ci'))}".rstrip())
            text = f"r = {fmt(r)}" + (": " + ", ".join(parts) if parts else "")
            return Recommendation(text, True, extras)
    return Recommendation("No recommendation: fits.json has no `recommendation` block.",
                          False, extras)


# --------------------------------------------------------------------------- checks
@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | n/a
    detail: str
    source: str  # "fits.json" or "threshold"


def _status(block: dict[str, Any]) -> str | None:
    s = block.get("status")
    return s.lower() if isinstance(s, str) and s.lower() in ("pass", "warn", "fail") else None


def _grade(value: float | None, good: float, ok: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    if higher_is_better:
        return "pass" if value >= good else "warn" if value >= ok else "fail"
    return "pass" if value <= good else "warn" if value <= ok else "fail"


def _as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _median(values: list[Any]) -> float | None:
    vals = [v for v in (_finite(x) for x in values) if v is not None]
    return float(np.median(vals)) if vals else None


def _check_a1(block: dict[str, Any]) -> tuple[str | None, list[str]]:
    bits = []
    slope, r2 = _finite(block.get("slope")), _finite(block.get("r2"))
    if slope is not None:
        bits.append(f"slope {fmt(slope)} logit units per unit |r|")
    if r2 is not None:
        bits.append(f"R² = {fmt(r2, 3)}")
    sat = _finite(block.get("saturates_at"))
    bits.append(f"saturates at |r| ≈ {fmt(sat)}" if sat is not None else "no saturation")
    return _grade(r2, A1_R2_PASS, A1_R2_WARN, True), bits


def _check_a3(block: dict[str, Any]) -> tuple[str | None, list[str]]:
    bits = []
    rows = [r for r in _as_list(block.get("by_norm")) if isinstance(r, dict)]
    sigma = _finite(block.get("sigma"))
    if sigma is not None:
        bits.append(f"σ = {fmt(sigma)} {fmt_ci(block.get('sigma_ci'))}".rstrip())
    fit_r2 = _finite(block.get("sigma_fit_r2"))
    if fit_r2 is not None:
        bits.append(f"std ≈ σ·|r| with R² = {fmt(fit_r2, 3)}")
    qq = _finite(block.get("qq_corr_median"))
    if qq is None:
        qq = _median([r.get("qq_corr") for r in rows])
    if qq is not None:
        bits.append(f"median QQ correlation {fmt(qq, 4)}")
    ratio = _finite(block.get("mean_over_std_median"))
    if ratio is None:
        ratio = _median([abs(r["mean"]) / r["std"] for r in rows
                         if _finite(r.get("mean")) is not None and _finite(r.get("std"))])
    if ratio is not None:
        bits.append(f"median |mean|/std {fmt(ratio, 2)}")
    p = _median([r.get("normality_p") for r in rows])
    if p is not None:
        bits.append(f"median normality p {fmt(p, 2)}")
    if qq is not None:
        return _grade(qq, A3_QQ_PASS, A3_QQ_WARN, True), bits
    return _grade(p, A3_P_PASS, A3_P_WARN, True), bits


def _check_prediction(block: dict[str, Any]) -> tuple[str | None, list[str]]:
    bits = []
    rmse, mae = _finite(block.get("rmse")), _finite(block.get("max_abs_error"))
    if rmse is not None:
        bits.append(f"RMSE {fmt(rmse, 3)}")
    if mae is not None:
        bits.append(f"max |error| {fmt(mae, 3)}")
    n = len(_as_list(block.get("norms")))
    if n:
        bits.append(f"over {n} norms")
    cf = _finite(block.get("rmse_closed_form"))
    if cf is not None:
        bits.append(f"closed-form corollary RMSE {fmt(cf, 3)}")
    return _grade(rmse, PRED_RMSE_PASS, PRED_RMSE_WARN, False), bits


def checks(run: RunFiles) -> list[Check]:
    """The A1, A3 and prediction checks with their status (see THRESHOLDS_NOTE)."""
    diag = run.fits.get("diagnostics")
    specs = {
        "a1": ("A1 — logit shift ‖U·δ_r‖ grows linearly in |r|", _check_a1),
        "a3": ("A3 — X_i(r) is zero-mean Gaussian with std σ·|r|", _check_a3),
        "prediction": ("Prediction — helpfulness predicted from A1/A3 vs measured",
                       _check_prediction),
    }
    if not isinstance(diag, dict) or diag.get("error"):
        why = (f"the diagnostics failed: {diag['error']}" if isinstance(diag, dict)
               else "fits.json has no diagnostics (run `repe-tradeoff fit`)")
        return [Check(name, "n/a", why, "fits.json") for name, _ in specs.values()]
    out: list[Check] = []
    for key, (name, fn) in specs.items():
        block = diag.get(key)
        if not isinstance(block, dict):
            why = (f"not checked: see the notes above ({key} is empty in fits.json)"
                   if key in diag else f"not in fits.json ({key})")
            out.append(Check(name, "n/a", why, "fits.json"))
            continue
        if block.get("error"):
            out.append(Check(name, "n/a", f"could not be checked: {block['error']}",
                             "fits.json"))
            continue
        graded, bits = fn(block)
        st = _status(block)
        note = block.get("note") or block.get("message")
        if isinstance(note, str) and note:
            bits.append(note)
        out.append(Check(name, st or graded, "; ".join(bits) or "no details in fits.json",
                         "fits.json" if st else "threshold"))
    return out


# --------------------------------------------------------------------------- config
def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value and prefix != "tasks":
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            name = v.get("name", i) if isinstance(v, dict) else i
            _flatten(f"{prefix}[{name}]", v, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, ", ".join(fmt_scalar(v) for v in value)))
    else:
        out.append((prefix, fmt_scalar(value)))


def fmt_scalar(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return json.dumps(v, ensure_ascii=False)


def config_rows(run: RunFiles) -> list[tuple[str, str]]:
    """config.json flattened into (key, value) rows (``command`` is shown elsewhere)."""
    out: list[tuple[str, str]] = []
    for k, v in run.config.items():
        if k in ("command", "commands", "tasks"):
            continue
        _flatten(str(k), v, out)
    return out


def task_rows(run: RunFiles) -> list[tuple[str, str, str]]:
    """config.json's tasks as (name, kind, other settings) rows."""
    out = []
    for t in _as_list(run.config.get("tasks")):
        if not isinstance(t, dict):
            continue
        rest: list[tuple[str, str]] = []
        for k, v in t.items():
            if k not in ("name", "kind"):
                _flatten(str(k), v, rest)
        out.append((fmt_scalar(t.get("name", "—")), fmt_scalar(t.get("kind", "—")),
                    "; ".join(f"{k} = {v}" for k, v in rest)))
    return out


# --------------------------------------------------------------------------- reproduce
def _as_command(c: Any) -> str | None:
    if isinstance(c, str) and c.strip():
        return c.strip()
    if isinstance(c, (list, tuple)) and c and all(isinstance(x, (str, int, float)) for x in c):
        return shlex.join(str(x) for x in c)
    return None


def _fit_command(run: RunFiles, run_arg: str) -> str:
    """`repe-tradeoff fit` with the settings fits.json was made with."""
    args = ["repe-tradeoff", "fit", run_arg]
    st = run.fits.get("settings") if isinstance(run.fits.get("settings"), dict) else {}
    for key, flag in (("choices", "--choices"), ("window", "--window"), ("lambda", "--lambda"),
                      ("n_boot", "--n-boot")):
        v = _finite(st.get(key))
        if v is not None:
            args.append(f"{flag}={fmt_scalar(int(v) if v.is_integer() else v)}")
    return " ".join(args)


def reproduce_commands(run: RunFiles) -> tuple[list[str], bool]:
    """The commands that remake this run, and whether config.json recorded the first one.

    A recorded ``command`` (or ``commands``) is shown as it is; otherwise the ``sweep`` is
    reconstructed from config.json (norms as absolute values, so ``--norm-unit`` is not
    needed). ``fit`` carries the settings recorded in fits.json.
    """
    run_arg = shlex.quote(str(run.run_dir))
    recorded: list[str] = []
    cmds = run.config.get("commands")
    if isinstance(cmds, list):
        recorded += [c for c in map(_as_command, cmds) if c]
    c = _as_command(run.config.get("command"))
    if c and c not in recorded:
        recorded.append(c)
    tail = [_fit_command(run, run_arg), f"repe-tradeoff report {run_arg}"]
    if recorded:
        if any(re.match(r"\S*repe-tradeoff\s+(run|demo)\b", x) for x in recorded):
            return recorded, True  # `run` and `demo` fit and report themselves
        joined = "\n".join(recorded)
        missing = [t for t in tail
                   if not re.search(rf"repe-tradeoff\s+{t.split()[1]}\b", joined)]
        return recorded + missing, True
    cfg = run.config
    if not cfg:
        return tail, False
    source = cfg.get("source") if isinstance(cfg.get("source"), dict) else {}
    if source.get("kind") == "paper-curves":
        files = source.get("files")
        if isinstance(files, dict):
            files = list(files.values())
        names = [str(f["name"]) for f in _as_list(files) if isinstance(f, dict) and f.get("name")]
        behavior = [n for n in names if n.startswith("behavior_")]
        helpful = [n for n in names if not n.startswith("behavior_")]
        if behavior and helpful:
            args = ["repe-tradeoff", "import-paper", helpful[0], behavior[0], "--out",
                    str(run.run_dir)]
            return [shlex.join(args), *tail], False
    opts: list[tuple[str, str]] = []
    if isinstance(cfg.get("model"), str):
        opts.append(("--model", cfg["model"]))
    vec = cfg.get("vector")
    vec_path = cfg.get("vector_path") or (vec.get("path") if isinstance(vec, dict) else None)
    if isinstance(vec_path, str):
        opts.append(("--vector", vec_path))
    layers = cfg.get("layers")
    if isinstance(layers, list) and layers:
        opts.append(("--layers", ",".join(str(x) for x in layers)))
    norms = cfg.get("norms")
    if isinstance(norms, list) and norms:
        opts.append(("--norms", ",".join(fmt_scalar(x) for x in norms)))
    tasks = [t for t in _as_list(cfg.get("tasks")) if isinstance(t, dict) and t.get("name")]
    for t in tasks:
        if t.get("kind") == "alignment":
            opts.append(("--alignment", str(t["name"])))
    scorers = {t.get("scorer") for t in tasks if t.get("kind") == "alignment"} - {None}
    if len(scorers) == 1 and scorers != {"forced-choice"}:
        opts.append(("--scorer", str(scorers.pop())))
    for t in tasks:
        if t.get("kind") == "helpfulness":
            opts.append(("--helpfulness", str(t["name"])))
    formats = {t.get("format") for t in tasks if t.get("kind") == "helpfulness"} - {None}
    if len(formats) == 1 and formats != {"cloze"}:
        opts.append(("--format", str(formats.pop())))
    for key in ("positions", "operator", "dtype"):
        if isinstance(cfg.get(key), str):
            opts.append((f"--{key}", cfg[key]))
    opts.append(("--out", str(run.run_dir)))
    # `--flag=value` keeps a value that starts with '-' (a negative norm) from reading as a flag
    sweep = " \\\n    ".join(
        ["repe-tradeoff sweep"] + [f"{flag}={shlex.quote(value)}" for flag, value in opts]
    )
    return [sweep, *tail], False


# --------------------------------------------------------------------------- generations
def generation_table(run: RunFiles) -> tuple[list[float], list[tuple[str, dict[float, str]]]]:
    """(norms, [(prompt, {norm: text})]) from generations.json, prompts in file order."""
    norms: set[float] = set()
    rows: dict[str, dict[float, str]] = {}
    for g in run.generations:
        prompt = g.get("prompt")
        r = _finite(g.get("norm"))
        text = g.get("text")
        if prompt is None or r is None or text is None:
            continue
        norms.add(r)
        cell = rows.setdefault(str(prompt), {})
        cell[r] = (cell[r] + "\n\n—\n\n" + str(text)) if r in cell else str(text)
    return sorted(norms), list(rows.items())


# --------------------------------------------------------------------------- names
def title_names(run: RunFiles) -> tuple[str, str, str]:
    """(model, behavior, helpfulness task) names for the title."""
    behavior = run.alignment_task or "—"
    tasks = run.helpfulness_tasks
    helpful = ", ".join(tasks) if tasks else "—"
    return run.model_name, behavior, helpful


def notes(run: RunFiles) -> list[str]:
    out = list(run.problems)
    w = run.fits.get("warnings")
    if isinstance(w, list):
        out += [str(x) for x in w]
    elif isinstance(w, str):
        out.append(w)
    return out

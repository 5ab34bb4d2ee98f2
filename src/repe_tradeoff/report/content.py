"""What a report says, as plain data: law rows, checks, recommendation, commands.

The HTML page and summary.md both render these, so they cannot disagree.
Nothing here recomputes a fit: every number comes from fits.json or points.jsonl.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._io import RunFiles, _finite, block_problem, fit_ok

#: Keys of a fits.json law block that are not fits.
_NOT_FITS = {"task", "metric", "k", "chance", "best", "slope_at_zero", "n_points", "formula"}

#: Thresholds used when fits.json carries no ``status`` for a check.
A1_R2_PASS, A1_R2_WARN = 0.95, 0.80
A3_P_PASS, A3_P_WARN = 0.05, 0.01
PRED_RMSE_PASS, PRED_RMSE_WARN = 0.05, 0.10
THRESHOLDS_NOTE = (
    "Badges come from the status fits.json gives each check. Where it gives none, the report "
    f"uses: A1 pass if R² ≥ {A1_R2_PASS}, warn if R² ≥ {A1_R2_WARN}, else fail; A3 pass if the "
    f"median normality p-value over norms ≥ {A3_P_PASS}, warn if ≥ {A3_P_WARN}, else fail; "
    f"prediction pass if RMSE ≤ {PRED_RMSE_PASS}, warn if ≤ {PRED_RMSE_WARN}, else fail "
    "(probability units)."
)


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, '—' when missing."""
    v = _finite(x)
    if v is None:
        return "—" if x is None else str(x)
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
    section: str  # e.g. "alignment — harmfulness"
    block_key: str  # "alignment", "helpfulness" or "by_task.<task>"
    task: str
    form: str
    # (name, value, ci_low, ci_high)
    params: list[tuple[str, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    r2: float | None = None
    aic: float | None = None
    bic: float | None = None
    n_points: float | None = None
    window: float | None = None
    ci_method: str | None = None
    best: bool = False
    error: str | None = None


@dataclass
class LawSection:
    title: str
    block_key: str
    task: str
    problem: str | None
    rows: list[LawRow]
    extras: list[str]  # one-line facts: slope at zero, chance level, ...

    @property
    def compared(self) -> list[LawRow]:
        """Whole-grid fits (the ones AIC/BIC compare), fitted or failed."""
        return [r for r in self.rows if r.window is None]


def _law_rows(title: str, key: str, task: str, block: dict[str, Any]) -> list[LawRow]:
    best = block.get("best")
    rows = []
    for form, fit in block.items():
        if form in _NOT_FITS or not isinstance(fit, dict):
            continue
        if "params" not in fit and "error" not in fit:
            continue
        row = LawRow(title, key, task, form, best=(form == best))
        if not fit_ok(fit):
            row.error = str(fit.get("error") or "no parameters")
            row.window = _finite(fit.get("window"))
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
        row.n_points = _finite(fit.get("n_points"))
        row.window = _finite(fit.get("window"))
        cm = fit.get("ci_method")
        row.ci_method = str(cm) if cm is not None else None
        rows.append(row)
    return rows


def law_sections(run: RunFiles) -> list[LawSection]:
    """The alignment block and one helpfulness block per task, each possibly a problem."""
    out: list[LawSection] = []
    a_task = run.alignment_task
    block = run.fits.get("alignment")
    if a_task is not None or block is not None:
        task = str(block.get("task")) if isinstance(block, dict) and block.get("task") else (
            a_task or "alignment")
        title = f"alignment — {task}"
        problem = block_problem(block, "alignment fits")
        rows, extras = [], []
        if problem is None:
            rows = _law_rows(title, "alignment", task, block)
            s0 = block.get("slope_at_zero")
            if isinstance(s0, dict) and _finite(s0.get("value")) is not None:
                extras.append(
                    f"slope at r = 0: {fmt(s0['value'])} {fmt_ci(s0.get('ci'))} "
                    "(alignment per unit r)".replace("  ", " ")
                )
            elif isinstance(s0, dict) and s0.get("error"):
                extras.append(f"slope at r = 0: not available ({s0['error']})")
        out.append(LawSection(title, "alignment", task, problem, rows, extras))
    h_tasks = run.helpfulness_tasks
    by_task = run.fits.get("by_task") if isinstance(run.fits.get("by_task"), dict) else {}
    if not h_tasks and isinstance(run.fits.get("helpfulness"), dict):
        h_tasks = [str(run.fits["helpfulness"].get("task") or "helpfulness")]
    for task in h_tasks:
        block = run.helpfulness_block(task)
        key = f"by_task.{task}" if task in by_task else "helpfulness"
        metric = block.get("metric") if isinstance(block, dict) else None
        title = f"helpfulness — {task}" + (f" ({metric})" if metric else "")
        problem = block_problem(block, f"helpfulness fits for {task}")
        rows, extras = [], []
        if problem is None:
            rows = _law_rows(title, key, task, block)
            k = run.n_choices(task)
            chance = _finite(block.get("chance"))
            if chance is None and k:
                chance = 1.0 / k
            if chance is not None:
                kk = f"k = {k} options, " if k else ""
                extras.append(f"{kk}chance level {fmt(chance)}")
        out.append(LawSection(title, key, task, problem, rows, extras))
    return out


def winner(section: LawSection) -> str | None:
    """The winning whole-grid form: fits.json's ``best``, else the lowest AIC."""
    for r in section.rows:
        if r.best:
            return r.form
    ok = [r for r in section.compared if r.error is None and r.aic is not None]
    return min(ok, key=lambda r: r.aic).form if ok else None  # type: ignore[arg-type,return-value]


def deltas(section: LawSection) -> dict[str, tuple[float | None, float | None]]:
    """ΔAIC and ΔBIC of each compared form relative to the smallest."""
    ok = [r for r in section.compared if r.error is None]
    aics = [r.aic for r in ok if r.aic is not None]
    bics = [r.bic for r in ok if r.bic is not None]
    amin = min(aics) if aics else None
    bmin = min(bics) if bics else None
    return {
        r.form: (
            None if r.aic is None or amin is None else r.aic - amin,
            None if r.bic is None or bmin is None else r.bic - bmin,
        )
        for r in ok
    }


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
        if mx is not None:
            lam_txt = f" at exchange rate λ = {fmt(lam)}" if lam is not None else ""
            extras.append(
                f"Efficient regime: |r| ≤ {fmt(mx)} {fmt_ci(er.get('ci'))}{lam_txt} "
                "(alignment gained outweighs helpfulness lost)".replace("  ", " ")
            )
        elif er.get("note") or er.get("reason"):
            extras.append(f"Efficient regime: {er.get('note') or er.get('reason')}")
    elif isinstance(er, dict):
        extras.append(f"Efficient regime: not determined ({er['error']})")
    if not run.fits:
        return Recommendation(
            "No recommendation yet: this run has no fits.json (run `repe-tradeoff fit`).",
            False, extras)
    if isinstance(rec, dict) and rec.get("error"):
        return Recommendation(f"No recommendation: {rec['error']}", False, extras)
    if isinstance(rec, dict):
        if isinstance(rec.get("text"), str) and rec["text"].strip():
            return Recommendation(rec["text"].strip(), True, extras)
        r = _finite(rec.get("norm"))
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


def checks(run: RunFiles) -> list[Check]:
    diag = run.fits.get("diagnostics")
    out: list[Check] = []
    names = {
        "a1": "A1 — logit shift ‖U·δ_r‖ grows linearly in r",
        "a3": "A3 — X_i(r) is zero-mean Gaussian with std σ·r",
        "prediction": "Prediction — helpfulness predicted from A1/A3 vs measured",
    }
    if diag is None or (isinstance(diag, dict) and diag.get("error")):
        why = (f"the diagnostics failed: {diag['error']}" if isinstance(diag, dict)
               else "fits.json has no diagnostics (run `repe-tradeoff fit`)")
        return [Check(n, "n/a", why, "fits.json") for n in names.values()]
    if not isinstance(diag, dict):
        diag = {}
    for key, name in names.items():
        block = diag.get(key)
        problem = block_problem(block, name.split(" — ")[0])
        if problem is not None:
            out.append(Check(name, "fail" if isinstance(block, dict) else "n/a", problem,
                             "fits.json"))
            continue
        st = _status(block)
        src = "fits.json" if st else "threshold"
        bits: list[str] = []
        if key == "a1":
            slope, r2 = _finite(block.get("slope")), _finite(block.get("r2"))
            if slope is not None:
                bits.append(f"slope {fmt(slope)} logit units per unit r")
            if r2 is not None:
                bits.append(f"R² = {fmt(r2, 3)}")
            sat = _finite(block.get("saturates_at"))
            if sat is not None:
                bits.append(f"saturates at |r| ≈ {fmt(sat)}")
            st = st or _grade(r2, A1_R2_PASS, A1_R2_WARN, True)
        elif key == "a3":
            sigma = _finite(block.get("sigma"))
            if sigma is not None:
                bits.append(f"σ = {fmt(sigma)} {fmt_ci(block.get('sigma_ci'))}".rstrip())
            ps = [_finite(r.get("normality_p")) for r in block.get("by_norm") or []
                  if isinstance(r, dict)]
            ps = [p for p in ps if p is not None]
            med = float(np.median(ps)) if ps else None
            if med is not None:
                bits.append(f"median normality p over {len(ps)} norms = {fmt(med, 2)}")
            means = [(_finite(r.get("mean")), _finite(r.get("std")))
                     for r in block.get("by_norm") or [] if isinstance(r, dict)]
            z = [abs(m) / s for m, s in means if m is not None and s]
            if z:
                bits.append(f"largest |mean|/std = {fmt(max(z), 2)}")
            st = st or _grade(med, A3_P_PASS, A3_P_WARN, True)
        else:
            rmse, mae = _finite(block.get("rmse")), _finite(block.get("max_abs_error"))
            if rmse is not None:
                bits.append(f"RMSE {fmt(rmse, 3)}")
            if mae is not None:
                bits.append(f"max |error| {fmt(mae, 3)}")
            n = len(block.get("norms") or [])
            if n:
                bits.append(f"over {n} norms")
            st = st or _grade(rmse, PRED_RMSE_PASS, PRED_RMSE_WARN, False)
        note = block.get("note") or block.get("message")
        if isinstance(note, str) and note:
            bits.append(note)
        out.append(Check(name, st, "; ".join(bits) or "no details in fits.json", src))
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
    for t in run.config.get("tasks") or []:
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


def reproduce_commands(run: RunFiles) -> tuple[list[str], bool]:
    """The commands that remake this run, and whether config.json recorded them."""
    run_arg = shlex.quote(str(run.run_dir))
    recorded: list[str] = []
    for key in ("commands", "command"):
        c = run.config.get(key)
        if isinstance(c, list) and c and all(isinstance(x, (list, str)) for x in c) and (
            key == "commands" or isinstance(c[0], list)
        ):
            recorded += [s for s in map(_as_command, c) if s]
        else:
            s = _as_command(c)
            if s:
                recorded.append(s)
    if recorded:
        tail = []
        if not any(" fit" in c or c.startswith("fit") for c in recorded):
            tail.append(f"repe-tradeoff fit {run_arg}")
        if not any(" report" in c for c in recorded):
            tail.append(f"repe-tradeoff report {run_arg}")
        return recorded + tail, True
    cfg = run.config
    opts: list[tuple[str, str]] = []
    model = cfg.get("model")
    if isinstance(model, str):
        opts.append(("--model", model))
    if isinstance(cfg.get("model_revision"), str):
        opts.append(("--revision", cfg["model_revision"]))
    vec = cfg.get("vector")
    if isinstance(vec, dict) and isinstance(vec.get("path"), str):
        opts.append(("--vector", vec["path"]))
    layers = cfg.get("layers")
    if isinstance(layers, list) and layers:
        opts.append(("--layers", ",".join(str(x) for x in layers)))
    norms = cfg.get("norms")
    if isinstance(norms, list) and norms:
        opts.append(("--norms", ",".join(fmt_scalar(x) for x in norms)))
    for t in cfg.get("tasks") or []:
        if isinstance(t, dict) and t.get("name"):
            flag = "--behavior" if t.get("kind") == "alignment" else "--task"
            opts.append((flag, str(t["name"])))
    for key in ("positions", "operator", "dtype", "seed"):
        if cfg.get(key) is not None and not isinstance(cfg[key], (dict, list)):
            opts.append((f"--{key}", fmt_scalar(cfg[key])))
    opts.append(("--out", str(run.run_dir)))
    # `--flag=value` keeps a value that starts with '-' (a negative norm) from reading as a flag
    sweep = " \\\n    ".join(
        ["repe-tradeoff sweep"] + [f"{flag}={shlex.quote(value)}" for flag, value in opts]
    )
    cmds = [sweep] if cfg else []
    cmds += [f"repe-tradeoff fit {run_arg}", f"repe-tradeoff report {run_arg}"]
    return cmds, False


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

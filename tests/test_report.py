"""Tests of repe_tradeoff.reporting on synthetic run folders (no model, no torch)."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from repe_tradeoff.reporting import ReportError, build_comparison_report, build_report
from tests.helpers import make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


# --------------------------------------------------------------------------- synthetic runs


DOC = Path(__file__).resolve().parents[1] / "docs" / "run-files.md"


def handmade_fits() -> dict:
    """The fits.json example of docs/run-files.md (its tasks are those of :func:`make_run`),
    with the A3 check graded "warn"."""
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    fits = next(json.loads(b) for b in blocks if '"settings"' in b)
    fits["tasks"]["basic-qa"]["checks"]["a3"]["status"] = "warn"
    return fits


def write_fits(run_dir: Path, fits: dict) -> None:
    (run_dir / "fits.json").write_text(json.dumps(fits, indent=1))


def theory_fits(run_dir: Path) -> dict:
    """fits.json written by the theory module (few bootstrap replicates: fast)."""
    from repe_tradeoff.theory import fit_run

    return fit_run(run_dir, n_boot=30, n_draws=300)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A run with hostile strings in config, prompts and generations, fitted by the theory."""
    run = make_run(tmp_path_factory.mktemp("run") / "run", prompt=f"Tell me {XSS} now",
                   generation_extra=f" {XSS} {XSS_IMG}",
                   config_extra={"model_revision": XSS})
    theory_fits(run)
    build_report(run)
    return run


@pytest.fixture(scope="module")
def handmade_run(tmp_path_factory) -> Path:
    """A run whose fits.json is written by hand, following docs/run-files.md only."""
    run = make_run(tmp_path_factory.mktemp("hand") / "run", seed=3, a=0.9, sigma=0.5)
    write_fits(run, handmade_fits())
    build_report(run, formats=("png",))
    return run


# --------------------------------------------------------------------------- files
PLOT_NAMES = ("alignment", "helpfulness", "tradeoff", "diagnostics")


def test_report_files_exist(full_run: Path):
    assert (full_run / "report.html").is_file()
    for name in PLOT_NAMES:
        png = full_run / "plots" / f"{name}.png"
        svg = full_run / "plots" / f"{name}.svg"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 20_000, f"{name}.png is suspiciously small"
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg")), name
        assert "</svg>" in svg.read_text()
    for name in ("summary.md", "points.csv", "fits.csv"):
        assert (full_run / name).stat().st_size > 100
    assert not list(full_run.rglob(".*.tmp")), "temporary files left behind"


def test_report_is_self_contained(full_run: Path):
    text = (full_run / "report.html").read_text()
    assert not re.search(r"""src\s*=\s*["']?\s*(https?:|//)""", text)
    assert "<link" not in text.lower()
    assert "<script" not in text.lower()
    assert "url(" not in text
    assert "@import" not in text
    imgs = re.findall(r'<img src="([^"]*)"', text)
    assert len(imgs) == len(PLOT_NAMES)
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "Content-Security-Policy" in text


def test_report_content(full_run: Path):
    text = (full_run / "report.html").read_text()
    fits = json.loads((full_run / "fits.json").read_text())
    rec = fits["recommendation"]["text"]
    assert rec.startswith("r = ")
    assert f'<p class="headline">{html.escape(rec)}</p>' in text
    assert "tiny-test-model" in text and "harmfulness" in text and "basic-qa" in text
    sections = ["The tradeoff", "Why: the assumptions, checked", "Fitted laws",
                "Steered generations", "How to reproduce", "Run configuration"]
    at = [text.index(f">{s}</h2>") for s in sections]
    assert at == sorted(at), "sections out of order"  # the answer first, the set-up last
    # the recommendation, then the tradeoff figure before any table; the configuration folded
    assert text.index('id="recommendation"') < text.index('id="fig-tradeoff"') < text.index("<table")
    assert text.index('id="fig-tradeoff"') < text.index('id="fig-alignment"')
    config = text[text.index('>Run configuration</h2>'):]
    assert config.startswith(">Run configuration</h2>\n<details>")
    assert "Exchange-rate rule: r = " in text and "worth 1 of P(correct)" in text
    # every fitted block has a section; the winner of each comparison is marked
    for title in ("alignment — harmfulness", "helpfulness — basic-qa (helpfulness)",
                  "helpfulness — basic-qa (helpfulness_vocab)"):
        assert f"<h3>{html.escape(title)}</h3>" in text
    assert text.count("★ winner") == 3
    formula = fits["tasks"]["basic-qa"]["helpfulness"]["fits"]["corollary"]["formula"]
    assert html.escape(formula) in text
    assert 'class="badge pass"' in text  # A1 holds exactly in the synthetic run
    assert "Efficient regime: |r| ≤" in text
    # no command was recorded: the report says so instead of making one up
    assert "config.json records no command" in text and "repe-tradeoff sweep" not in text
    assert f"repe-tradeoff fit {full_run}" in text and "repe-tradeoff report" in text
    # one generations column per norm
    assert "<th>r = -4</th><th>r = 0</th><th>r = 4</th>" in text


def test_handmade_fits(handmade_run: Path):
    text = (handmade_run / "report.html").read_text()
    assert ("r = 1 (0.05 × the mean residual norm) on layers 3, 4, pca vector of harmfulness: "
            "alignment +0.41 [0.33, 0.48], helpfulness -0.021 [-0.03, -0.013]" in text)
    assert "Exchange-rate rule: r = 1: alignment +0.41" in text
    assert 'class="badge pass"' in text and 'class="badge warn"' in text
    assert "fit failed: too few points (2) for 2 parameters" in text
    assert "Efficient regime: |r| ≤ 1.8 [1.4, 2.2]" in text
    assert "only 3 norm(s) within |r| &lt;= 2" in text  # the warnings are notes
    assert "repe-tradeoff fit runs/x --lambda 1" in text  # fits.json's recorded command
    for name in PLOT_NAMES:
        assert (handmade_run / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_a3_projections_match_fits(full_run: Path):
    """The histograms show the same X_i(r) the A3 check in fits.json was computed from."""
    from repe_tradeoff.reporting._io import load_run
    from repe_tradeoff.reporting.curves import a3_projections

    run = load_run(full_run)
    xs = a3_projections(run.task_items("basic-qa"))
    by_norm = {row.norm: row for row in run.fits.tasks["basic-qa"].checks.a3.by_norm}
    assert sorted(xs) == sorted(by_norm) and 0.0 not in xs
    for r, x in xs.items():
        assert x.size == 60 * 3
        assert np.std(x, ddof=1) == pytest.approx(by_norm[r].std)


def test_summary_and_csv(full_run: Path):
    md = (full_run / "summary.md").read_text()
    fits = json.loads((full_run / "fits.json").read_text())
    assert fits["recommendation"]["text"] in md and "## Why: the assumptions, checked" in md
    assert "**PASS** On basic-qa, A1" in md and "plots/alignment.png" in md
    assert md.index("## Recommendation") < md.index("## Plots") < md.index("## Why") < md.index("## Fitted laws") < md.index("## Run configuration")
    rows = list(csv.DictReader((full_run / "fits.csv").open()))
    tanh_a = [r for r in rows if r["block"] == "tasks.harmfulness" and r["form"] == "tanh"
              and r["param"] == "a"]
    assert len(tanh_a) == 1
    tanh = fits["tasks"]["harmfulness"]["fits"]["tanh"]
    assert float(tanh_a[0]["value"]) == pytest.approx(tanh["params"]["a"])
    assert float(tanh_a[0]["ci_low"]) == pytest.approx(tanh["ci"]["a"][0])
    assert {r["block"] for r in rows} == {
        "tasks.harmfulness", "tasks.basic-qa.helpfulness", "tasks.basic-qa.helpfulness_vocab"}
    pts = list(csv.DictReader((full_run / "points.csv").open()))
    assert len(pts) == 17 * 6 and {"task", "metric", "norm", "mean", "stderr"} <= set(pts[0])


def test_escaping(full_run: Path):
    text = (full_run / "report.html").read_text()
    assert XSS not in text and XSS_IMG not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in text


def test_missing_points_raises(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ReportError, match="sweep"):
        build_report(tmp_path)
    with pytest.raises(ValueError):
        build_report(tmp_path / "nope")


def test_without_fits_or_items(tmp_path: Path):
    run = make_run(tmp_path / "r")
    (run / "items.jsonl").unlink()
    (run / "generations.json").unlink()
    out = build_report(run, formats=("png",))
    text = out.read_text()
    assert "run `repe-tradeoff fit`" in text
    assert "No recommendation" in text
    for name in PLOT_NAMES:
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert not (run / "plots" / f"{name}.svg").exists()  # formats=("png",)


def test_failed_fits_and_unchecked_assumptions(tmp_path: Path):
    run = make_run(tmp_path / "r")
    fits = handmade_fits()
    tanh = fits["tasks"]["harmfulness"]["fits"]["tanh"]
    tanh.update(params=None, ci=None, error="too few points for the <b>tanh</b> fit")
    fits["tasks"]["basic-qa"]["helpfulness"]["fits"]["corollary"] = {
        "model": "corollary", "formula": "c", "n_points": 17, "error": "singular matrix"}
    checks = fits["tasks"]["basic-qa"]["checks"]
    checks["a1"] = {"n_norms": 2, "status": None, "error": "too few norms to check A1"}
    checks["a3"] = None
    fits.update(pareto=[], efficient_regime=None, recommendation={
        "norm": None, "text": "no recommendation: the grid has no r = 0 to compare with"})
    write_fits(run, fits)
    text = build_report(run, formats=("png",)).read_text()
    assert "fit failed: too few points for the &lt;b&gt;tanh&lt;/b&gt; fit" in text
    assert "singular matrix" in text
    assert "no recommendation: the grid has no r = 0" in text
    assert 'class="rec missing"' in text
    assert "could not be checked: too few norms to check A1" in text
    assert "not checked: see the notes above" in text and 'class="badge na"' in text
    assert (run / "plots" / "tradeoff.png").exists()


JUNK = [None, "junk", 7, [], {"error": "<b>why</b>"}, {"params": "x"}, float("nan")]
JUNK_PATHS = [
    ("tasks",), ("settings",), ("pareto",), ("efficient_regime",), ("warnings",),
    ("tasks", "harmfulness", "fits", "tanh"), ("tasks", "harmfulness", "slope_at_zero"),
    ("tasks", "basic-qa", "k"), ("tasks", "basic-qa", "helpfulness", "fits"),
    ("tasks", "basic-qa", "checks", "a3", "by_norm"), ("recommendation", "norm"),
]


@pytest.mark.parametrize("path", JUNK_PATHS, ids=".".join)
def test_a_malformed_fits_json_is_named_and_skipped(tmp_path: Path, path):
    """A fits.json that does not match the schema: the report says where and how to fix it,
    and is drawn from points.jsonl alone."""
    from repe_tradeoff.reporting._io import load_run
    from repe_tradeoff.reporting.page import run_html

    run = make_run(tmp_path / "r", n_help=10, n_align=10)
    refused = 0
    for junk in JUNK:
        fits = handmade_fits()
        obj = fits
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = junk
        write_fits(run, fits)
        loaded = load_run(run)
        if loaded.fits is not None:  # junk that is a valid value (e.g. null where allowed)
            continue
        problem = loaded.problems[0]
        assert problem.startswith("fits.json could not be read") and "rerun `repe-tradeoff fit" in problem
        assert f"`{path[0]}" in problem
        page = run_html(loaded, [], [], [])
        assert "<b>why</b>" not in page and "No recommendation yet" in page
        refused += 1
    assert refused >= 4


def test_fits_of_an_older_format_are_refused(tmp_path: Path):
    run = make_run(tmp_path / "r", n_help=10, n_align=10)
    write_fits(run, {"format_version": 1, "alignment": {}, "helpfulness": {}})
    with pytest.raises(ReportError, match=r"format_version 1, this version reads 2; rerun `repe-tradeoff fit"):
        build_report(run, formats=("png",))
    assert not (run / "report.html").exists()  # nothing is drawn from fits it would misread


def test_unparseable_fits_and_minimal_points(tmp_path: Path):
    run = tmp_path / "r"
    run.mkdir()
    pts = [{"metric": "helpfulness", "norm": r, "mean": 0.8 - 0.02 * r * r} for r in range(-3, 4)]
    (run / "points.jsonl").write_text("\n".join(json.dumps(p) for p in pts) + "\n")
    (run / "fits.json").write_text("{broken")
    text = build_report(run, formats=("png",)).read_text()
    assert "fits.json could not be read" in text
    assert (run / "plots" / "helpfulness.png").exists()
    assert not (run / "plots" / "alignment.png").exists()
    assert "No alignment plot" in text
    (run / "points.jsonl").write_text((run / "points.jsonl").read_text() + "\nnot json\n")
    with pytest.raises(ReportError, match=r"points.jsonl:9: not valid JSON"):
        build_report(run, formats=("png",))


def test_reproduce_commands(tmp_path: Path):
    """The commands are the recorded ones, whatever the flags are called."""
    from repe_tradeoff.reporting._io import load_run
    from repe_tradeoff.reporting.content import reproduce_commands

    sweep = "repe-tradeoff sweep --a-flag-renamed-later x --norms=-2,0,2 --out r"
    run = make_run(tmp_path / "r", config_extra={"command": sweep})
    fits = handmade_fits()
    write_fits(run, fits)
    cmds, recorded = reproduce_commands(load_run(run))
    assert recorded and cmds == [sweep, fits["command"], f"repe-tradeoff report {run}"]
    fits["command"] = None  # fit called from Python: the plain command
    write_fits(run, fits)
    assert reproduce_commands(load_run(run))[0][1] == f"repe-tradeoff fit {run}"
    # `run` fits and reports by itself
    run2 = make_run(tmp_path / "r2", config_extra={"command": "repe-tradeoff run exp.yaml"})
    assert reproduce_commands(load_run(run2)) == (["repe-tradeoff run exp.yaml"], True)


def test_checks_of_every_helpfulness_task(tmp_path: Path):
    """Two helpfulness tasks: both have their checks in the report and their own figure."""
    run = make_run(tmp_path / "r", n_help=30, n_align=20)
    for name in ("items.jsonl", "points.jsonl"):
        rows = [json.loads(x) for x in (run / name).read_text().splitlines()]
        rows += [{**x, "task": "second-qa"} for x in rows if x["task"] == "basic-qa"]
        (run / name).write_text("".join(json.dumps(x) + "\n" for x in rows))
    cfg = json.loads((run / "config.json").read_text())
    cfg["tasks"].append({**cfg["tasks"][1], "name": "second-qa"})
    (run / "config.json").write_text(json.dumps(cfg))
    from repe_tradeoff.theory import fit_run

    fits = fit_run(run, n_boot=5, n_draws=100)
    text = build_report(run, formats=("png",)).read_text()
    for task in ("basic-qa", "second-qa"):
        status = fits["tasks"][task]["checks"]["a1"]["status"]
        assert re.search(rf'badge {status}">{status.upper()}</span> On {task}, A1', text)
    assert (run / "plots" / "diagnostics-2.png").exists()
    assert "Assumption checks of second-qa" in text


def test_unknown_format(tmp_path: Path):
    run = make_run(tmp_path / "r")
    with pytest.raises(ReportError, match="format"):
        build_report(run, formats=("gif",))
    assert not (run / "report.html").exists()


def test_comparison_report(tmp_path: Path, full_run: Path, handmade_run: Path):
    out = build_comparison_report({"base <i>": full_run, "chat": handmade_run},
                                  tmp_path / "cmp")
    text = out.read_text()
    assert out == tmp_path / "cmp" / "report.html"
    assert "base &lt;i&gt;" in text and "chat" in text
    assert "<script" not in text.lower()
    for what in ("alignment", "helpfulness"):
        data = (tmp_path / "cmp" / "plots" / f"comparison_{what}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000
        assert (tmp_path / "cmp" / "plots" / f"comparison_{what}.svg").exists()
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 2
    assert 'href="../' in text  # links to each run's own report


# --------------------------------------------------------------------------- browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK_HEAD = """<script>
window.__xss = false; window.__errors = [];
window.alert = function () { window.__xss = true; };
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); }, true);
var __ce = console.error;
console.error = function () { window.__errors.push([].join.call(arguments, " ")); };
</script>"""
CHECK_TAIL = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var res = performance.getEntriesByType("resource").map(function (r) { return r.name; })
    .filter(function (n) { return n.indexOf("data:") !== 0; });
  var out = document.createElement("pre");
  out.id = "__result";
  var table = document.querySelector("table");
  var before = imgs.length > 0 && table !== null &&
    !!(imgs[0].compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING);
  var conf = document.getElementById("config");
  var folded = conf !== null && conf.nextElementSibling !== null &&
    conf.nextElementSibling.tagName === "DETAILS" && !conf.nextElementSibling.open;
  out.textContent = "RES" + "ULT" + JSON.stringify({n: imgs.length, bad: bad.map(function (i) {
    return i.alt; }), xss: window.__xss, errors: window.__errors, requests: res,
    image_first: before, first_image: imgs.length ? imgs[0].closest("figure").id : null,
    config_folded: folded}) + "E" + "ND";
  document.body.appendChild(out);
});
</script>"""


def _browser_copy(report: Path, dest: Path) -> Path:
    """A copy of the report with check scripts (and a CSP that lets only them run)."""
    text = report.read_text()
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    text = text.replace("<head>", "<head>" + CHECK_HEAD, 1)
    text = text.replace("</body>", CHECK_TAIL + "</body>", 1)
    dest.write_text(text)
    return dest


def _run_chromium(exe: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--mute-audio", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)


def test_report_renders_in_chromium(full_run: Path, tmp_path: Path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary found (install it with `apt-get install chromium`)")
    page = _browser_copy(full_run / "report.html", tmp_path / "check.html")
    proc = _run_chromium(exe, ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         tmp_path / "profile")
    m = re.search(r'<pre id="__result">RESULT(.*?)END</pre>', proc.stdout, re.DOTALL)
    assert m, f"no result in the dumped DOM; stderr: {proc.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert res["n"] == len(PLOT_NAMES)
    assert res["bad"] == [], f"images that did not load: {res['bad']}"
    assert res["xss"] is False, "an injected script ran"
    assert res["errors"] == []
    assert res["requests"] == [], f"the page requested {res['requests']}"
    # the answer first: the tradeoff figure comes before any table; the configuration is folded
    assert res["image_first"] and res["first_image"] == "fig-tradeoff"
    assert res["config_folded"]
    console = [ln for ln in proc.stderr.splitlines()
               if "CONSOLE" in ln and ("Uncaught" in ln or "rror" in ln)]
    assert console == [], console

    # the report as written (with its CSP) loads its images too: a screenshot is not blank
    shot = tmp_path / "shot.png"
    proc = _run_chromium(exe, ["--window-size=1280,2400", "--hide-scrollbars",
                               f"--screenshot={shot}", (full_run / "report.html").as_uri()],
                         tmp_path / "profile2")
    assert shot.exists() and shot.read_bytes()[:8] == PNG_MAGIC, proc.stderr[-2000:]
    assert shot.stat().st_size > 50_000

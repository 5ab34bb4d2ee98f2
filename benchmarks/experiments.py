"""The measurements of RESULTS.md: the method comparison, the time breakdown, scaling with the
number of norms and with the depth of the first steered layer, an operator profile."""

from __future__ import annotations

import statistics
import time

from benchmarks.harness import check_outputs, interleaved, meter, paired_ratios, timed
from benchmarks.inputs import Bench, norm_grid, real_tokens, restrict, subset
from benchmarks.methods import (
    MAIN_METHODS,
    capture_same_batches,
    loop_norms,
    method_fns,
    run_limit_per_norm,
    run_limit_same_batches,
    run_ours,
)

PRECISE = ("ours", "ours_no_sharing", "limit_same_batches")  # the steering-overhead ratio needs reps
TOLERANCE = 1e-3  # per-option log-likelihoods of float32 methods agree to this


def main_table(b: Bench, reps: int, ref_reps: int, n_loop_norms: int, peer_batch: int) -> dict:
    """Every method, interleaved in a rotating order; outputs checked to agree with ours."""
    t0 = time.perf_counter()
    same = capture_same_batches(b)
    print(f"  captured the {len(same)} batches of ours_no_sharing ({time.perf_counter() - t0:.1f} s, dry run)",
          flush=True)
    loop_idx = loop_norms(b, n_loop_norms)
    loop_times: list[float] = []
    fns = method_fns(b, peer_batch, same, loop_idx, loop_times)
    scale_loop = len(b.norms) / len(loop_idx)  # the loop's per-norm passes are identical

    def timer(fn):
        m, result = timed(fn)
        if fn is fns["loop"]:
            m["measured_seconds"], m["seconds"] = m["seconds"], m["seconds"] * scale_loop
        return m, result

    def on_run(rep, name, m):
        print(f"  rep {rep} {name:24s} {m['seconds']:8.2f} s  peak RSS {m['peak_kib'] / 1024:6.0f} MiB  "
              f"load {m['load_before'][0]}", flush=True)

    counts = {n: reps if n in PRECISE else ref_reps for n in MAIN_METHODS}
    runs, outputs = interleaved({n: fns[n] for n in MAIN_METHODS}, counts, timer, on_run)
    columns = {k: loop_idx for k in outputs if k.startswith("loop#")}
    check = check_outputs(outputs, "ours#0", TOLERANCE, columns)
    check["loop_norms"] = [b.norms[k] for k in loop_idx]
    tokens = real_tokens(b)
    summary = {}
    for method, rs in runs.items():
        secs = [r["seconds"] for r in rs]
        med = statistics.median(secs)
        summary[method] = {
            "seconds_median": med, "seconds": secs, "reps": len(rs), "tokens_per_s": tokens / med,
            "peak_rss_mib": max(r["peak_kib"] for r in rs) / 1024,
            "extra_rss_mib": max(r["peak_kib"] - r["before_kib"] for r in rs) / 1024,
            "load_before": [r["load_before"][0] for r in rs],
        }
    summary["loop"]["per_norm_seconds"] = loop_times
    summary["loop"]["norms_run"] = len(loop_idx)
    t = {m: s["seconds_median"] for m, s in summary.items()}
    ratios = {
        "ours/loop": t["ours"] / t["loop"],
        "ours/peer": t["ours"] / t["peer"],
        "ours_no_sharing/limit_same_batches": t["ours_no_sharing"] / t["limit_same_batches"],
        "ours/limit_per_norm": t["ours"] / t["limit_per_norm"],
        "ours/limit_same_batches": t["ours"] / t["limit_same_batches"],
        "ours/ours_no_sharing": t["ours"] / t["ours_no_sharing"],
        "peer/limit_per_norm": t["peer"] / t["limit_per_norm"],
    }
    return {
        "summary": summary, "ratios": ratios, "check": check, "real_tokens": tokens,
        "overhead_per_rep": paired_ratios(runs, "ours_no_sharing", "limit_same_batches"),
        "n_batches_no_sharing": len(same),
        "padded_token_rows_no_sharing": int(sum(ids.numel() for ids, _ in same)),
    }


def breakdown(b: Bench, questions: int) -> dict:
    """Where the time goes: blocks, output embedding and the rest, per variant (on a subset)."""
    sb = subset(b, questions)
    same = capture_same_batches(sb)
    out = {}
    for label, fn in (
        ("ours_no_sharing", lambda: run_ours(sb, share_lower=False, share_prompts=False)),
        ("limit_same_batches", lambda: run_limit_same_batches(sb, same)),
        ("ours_flat_shared_lower", lambda: run_ours(sb, share_prompts=False)),
        ("ours", lambda: run_ours(sb)),
    ):
        with meter(sb.model) as st:
            m, _ = timed(fn)
        out[label] = {"seconds": m["seconds"], "block_s": st["block_s"], "lm_head_s": st["lm_head_s"],
                      "lm_head_rows": st["lm_head_rows"], "token_layers": st["token_layers"],
                      "other_s": m["seconds"] - st["block_s"] - st["lm_head_s"]}
    # logit rows a position-exact scorer of whole sequences needs: one per option token
    n_rows = len(b.norms) + (0.0 not in b.norms)
    out["needed_lm_head_rows"] = sum(len(c) for c in sb.seqs.continuations) * n_rows
    return out


def norms_scaling(b: Bench, questions: int, counts: list[int], reps: int, span: float,
                  peer_batch: int) -> dict:
    """Time vs grid size: ours (all sharing) against plain per-norm forwards."""
    sb = subset(b, questions)
    raw = []
    for rep in range(max(1, reps)):
        for n in counts if rep % 2 == 0 else counts[::-1]:
            grid = norm_grid(n, span * b.scale)
            s_ours = timed(lambda grid=grid: run_ours(sb, norms=grid))[0]["seconds"]
            s_lim = timed(lambda n=n: run_limit_per_norm(sb, peer_batch, n_norms=n))[0]["seconds"]
            raw.append({"rep": rep, "norms": n, "ours_s": s_ours, "limit_per_norm_s": s_lim})
            print(f"  norms {n:3d}: ours {s_ours:7.2f} s   limit_per_norm {s_lim:7.2f} s", flush=True)
    rows = []
    for n in counts:
        o = statistics.median(r["ours_s"] for r in raw if r["norms"] == n)
        lim = statistics.median(r["limit_per_norm_s"] for r in raw if r["norms"] == n)
        rows.append({"norms": n, "ours_s": o, "limit_per_norm_s": lim, "ratio": o / lim,
                     "real_tokens": real_tokens(sb, n)})
    return {"questions": questions, "sequences": len(sb.seqs.prompts), "rows": rows, "raw": raw}


def depth_scaling(b: Bench, questions: int, depths: list[int], reps: int) -> dict:
    """Saving from running the blocks below the first steered one once per sequence."""
    sb = subset(b, questions)
    L, raw = b.n_layers, []
    for rep in range(max(1, reps)):
        for first in depths:
            layers = list(range(first, min(first + 8, L)))
            vec = restrict(b.vector_all, layers)
            entry = {"rep": rep, "first": first, "layers": [layers[0], layers[-1]]}
            variants = (("no_share", False), ("share", True))
            for label, share in variants if rep % 2 == 0 else variants[::-1]:
                with meter(b.model) as st:
                    m, _ = timed(lambda layers=layers, vec=vec, share=share: run_ours(
                        sb, layers=layers, vector=vec, share_lower=share))
                entry[label] = {"seconds": m["seconds"], "block_s": st["block_s"],
                                "token_layers": st["token_layers"]}
            raw.append(entry)
            print(f"  first layer {first:2d}: no share {entry['no_share']['seconds']:6.2f} s, "
                  f"share {entry['share']['seconds']:6.2f} s", flush=True)
    rows = []
    for first in depths:
        es = [e for e in raw if e["first"] == first]
        ns = statistics.median(e["no_share"]["seconds"] for e in es)
        sh = statistics.median(e["share"]["seconds"] for e in es)
        block = statistics.median(e["no_share"]["block_s"] for e in es)
        fixed = ns - block
        tl_ns, tl_sh = es[0]["no_share"]["token_layers"], es[0]["share"]["token_layers"]
        rows.append({
            "first": first, "layers": es[0]["layers"], "no_share_s": ns, "share_s": sh,
            "block_s_no_share": block, "fixed_s": fixed, "measured_fraction": sh / ns,
            "ideal_fraction_upper_free": (fixed + block * (L - first) / L) / ns,  # lower blocks free
            "ideal_fraction_token_layers": (fixed + block * tl_sh / tl_ns) / ns,  # lower once per row
            "token_layers_no_share": tl_ns, "token_layers_share": tl_sh,
            "share_block_s": statistics.median(e["share"]["block_s"] for e in es),
        })
    return {"questions": questions, "n_layers": L, "rows_per_sequence": len(b.norms) + (0.0 not in b.norms),
            "rows": rows, "raw": raw}


def profile_ours(b: Bench, questions: int) -> dict:
    """Top operators by self CPU time of one run of ours and of ours_no_sharing."""
    from torch.profiler import ProfilerActivity, profile

    sb = subset(b, questions)
    res = {}
    for label, kw in (("ours", {}), ("ours_no_sharing", {"share_lower": False, "share_prompts": False})):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_ours(sb, **kw)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        res[label] = {"total_self_cpu_ms": total / 1000,
                      "top": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000,
                               "share": e.self_cpu_time_total / total, "calls": e.count} for e in top]}
    return res

"""Render the benchmark figures in docs/ from benchmarks/results/*.json (make docs).

Every figure in the docs lives between a pair of markers,

    <!-- figures:NAME -->
    ...generated...
    <!-- /figures:NAME -->

and is rewritten here from results/NAME.json; nothing between markers is typed by hand.
``--check`` renders in memory and exits 1 naming the blocks that differ from the files
(tests/test_docs.py runs it), so a doc can never disagree with its results file.

    .venv/bin/python scripts/render_docs.py           # rewrite the blocks
    .venv/bin/python scripts/render_docs.py --check   # exit 1 if any block is stale
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedlib import linalg

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


def _n(value, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def _g(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine(r: dict) -> str:
    m = r.get("machine", {})
    start = r.get("load_average_1m_at_start", m.get("load_average_1m_at_start"))
    end = r.get("load_average_1m_at_end", m.get("load_average_1m_at_end"))
    load = f"load average {start:.1f} at the start" if start is not None else "load average not recorded"
    if end is not None:
        load += f", {end:.1f} at the end"
    return f"Measured on {m.get('cpu_count', '?')} cores ({m.get('processor', '?')}), {load}."


def bench_sequences(r: dict) -> str:
    runs = sorted(r["runs"].values(), key=lambda run: run["events"])
    rows = [[_n(x["events"]), _n(x["seconds"], 1), _n(x["events_per_second"]), _n(x["sequences"])] for x in runs]
    return "\n\n".join([
        _table(["events", "seconds", "events/s", "sequences written"], rows),
        f"Time growth from the smallest to the largest log: {r['time_growth_1m_to_16m']:.2f}x for "
        f"{r['events_growth']:.1f}x the events (linear would be {r['events_growth']:.0f}x). {_machine(r)}"])


# What each phase of the stabilize step does (the keys of its phase_seconds), in step order.
STABILIZE_PHASES = {
    "extract": "find today's vectors and the parent: registry and metastore reads, the id checks "
               "(unique ids of a user source; the parent's row count and fingerprint: measured when the "
               "fingerprint covered the ids only, it now reads the vectors too)",
    "gram": "one pass per side over today's files (read by the tasks with pyarrow): the Gram "
            "matrix and the vector checks",
    "join_cross_gram": "today's vectors joined with the parent's on id (both read by the tasks, moved as "
                       "binary blocks through one shuffle, kept on local disk for the next pass); the same pass "
                       "sums the cross-Gram and picks the churn's queries",
    "score_sample": "a few hundred rows of each side to the driver: the score-preservation check",
    "same_id": "second pass over the kept join: both same-id cosines, the moved ids for the delta, "
               "the queries' nearest neighbours in both versions (the churn)",
    "write_item": "today's raw rows read, transformed and written by the tasks (pyarrow), plus carried rows",
    "count_item": "rows, carried rows and fingerprint of what was written (measured when the fingerprint "
                  "read the id column only; it now reads ids and vectors)",
    "write_user": "the same for the other side",
    "count_user": "the same for the other side",
    "delta": "new, evicted and moved ids: id joins, the moved vectors looked up, written",
    "register": "the registry row, then orphaned run folders removed",
}


def _stabilize_phases(phases: dict) -> str:
    known = [k for k in STABILIZE_PHASES if k in phases] + [k for k in phases if k not in STABILIZE_PHASES]
    return _table(["phase", "seconds", "what it does"],
                  [[f"`{k}`", _n(phases[k], 1), STABILIZE_PHASES.get(k, "")] for k in known])


def bench_stabilize(r: dict) -> str:
    g = r["gram_seconds"]
    ways = [["`embedlib.spark_passes.gram` as the job runs it (files read by the tasks with pyarrow)",
             _n(g["module"], 2), "1"]]
    if "module_spark_reader" in g:
        ways.append(["the same through Spark's Parquet reader", _n(g["module_spark_reader"], 2),
                     f"{g['module_spark_reader'] / g['module']:.2f}x"])
    ways += [["`rdd.mapPartitions` summing `np.outer` per row", _n(g["per_row"], 2),
              f"{g['per_row'] / g['module']:.1f}x slower"],
             ["pyarrow + numpy, one process", _n(g["single_process"], 2), f"{g['single_process'] / g['module']:.2f}x"]]
    gram = _table(["way", "seconds", "vs the job's pass"], ways)
    jobs = _table(["rows per side", "runs", "job seconds", "single process seconds", "job / single",
                   "stabilized cosine", "score error"],
                  [[_n(j["rows_per_side"]), len(j["job_all_seconds"]), _n(j["job_seconds"], 1),
                    _n(j["single_process_seconds"], 1), f"{j['job_vs_single_process']:.2f}",
                    f"{j['job_metrics']['cosine_stabilized_mean']:.3f}",
                    _g(j["job_metrics"]["score_max_rel_err"], 2)] for j in r["job"]])
    phases = ""
    if r.get("job_phase_seconds_1m"):
        phases = (f"\n\nWhere the job's time goes at 1M rows per side (the median run; "
                  f"{r.get('spark_jobs_1m', '?')} Spark jobs):\n\n" + _stabilize_phases(r["job_phase_seconds_1m"]))
    return "\n\n".join([
        f"Gram of {_n(r['gram_rows'])} x 128 float32 vectors from Parquet (best of 5):", gram,
        f"Max relative difference between the results: {_g(r['gram_max_rel_diff'], 2)}.",
        "The whole job against one pyarrow + numpy process doing the same maths and I/O (medians of the "
        "runs, alternated):", jobs,
        f"Job time growth from the smallest to the largest size: {r['job_time_growth_250k_to_4m']:.2f}x for "
        f"{r['rows_growth']:.0f}x the rows. {_machine(r)}"]) + phases


def bench_stabilize_readme(r: dict) -> str:
    by_size = {j["rows_per_side"]: j for j in r["job"]}
    one = by_size.get(1_000_000)
    if one is None or not r.get("job_phase_seconds_1m"):
        return "No 1M-row run in the results yet: run `make bench`."
    return "\n\n".join([
        f"The stabilize step on 1M items and 1M users (128 dims, aligned to a parent) took "
        f"{one['job_seconds']:.1f} s, {r['job_time_vs_single_process_1m']:.2f}x one pyarrow + numpy process "
        f"doing the same maths and I/O ({one['single_process_seconds']:.1f} s; medians of "
        f"{len(one['job_all_seconds'])} alternated runs; {_machine(r).rstrip('.').lower()}). "
        f"Its Gram pass runs at {r['gram_time_vs_single_process']:.2f}x the single process and "
        f"{r['gram_speedup_vs_per_row']:.1f}x faster than per-row Spark code. Phase by phase:",
        _stabilize_phases(r["job_phase_seconds_1m"])])


def stability_movielens(r: dict) -> str:
    def row(label, part, raw):
        c, a = part["canonicalize_align"], part["align"]
        return [label, f"{raw:.3f}",
                f"{c['stabilized_cosine']:.3f} (median {c['cosine_median']:.3f}, p5 {c['cosine_p5']:.3f})",
                f"{a['stabilized_cosine']:.3f}", f"{part['best_linear_cosine']:.3f}",
                f"{c['neighbour_overlap_at_10']:.3f}", _g(c["score_max_rel_err"], 2),
                f"{part['hr10_raw']:.4f} / {c['hr10']:.4f} / {a['hr10']:.4f}"]
    return "\n\n".join([
        f"{_n(r['test_pairs'])} held-out next-item pairs; popularity HR@10 {r['hr10_popularity']:.4f}.",
        _table(["pair", "raw cosine", "canonicalize + align", "align only", "best linear map", "overlap@10",
                "score error", "HR@10 raw / canon+align / align"],
               [row("same data, two seeds", r["same_data"], r["same_data_raw_cosine"]),
                row(f"next window ({r['window_days']} days later)", r["next_window"], r["next_window_raw_cosine"])]),
        _machine(r)])


def bench_serving(r: dict) -> str:
    cpu = r["cpu"]
    rows = [[b, _n(cpu[b]["index_qps"], 1), _n(cpu[b]["faiss_qps"], 1), f"{cpu[b]['ratio']:.2f}",
             f"{cpu[b]['ids_equal_to_faiss']:.3f}"] for b in sorted((k for k in cpu if k.isdigit()), key=int)]
    variants = [[name, ", ".join(f"{k}={v}" for k, v in v["env"].items()),
                 f"{v['cpu']['1024']['ratio']:.2f}"] for name, v in r.get("cpu_variants", {}).items()]
    gpu = r.get("gpu")
    parts = [f"{_n(r['n'])} x {r['dim']} float32, top-{r['k']}, NumPy BLAS {r.get('numpy_blas', '?')}:",
             _table(["batch", "index queries/s", "faiss IndexFlatIP queries/s", "index / faiss", "same ids"], rows),
             f"Lookups by id: {_n(cpu['lookup_ids_per_s'])} ids/s."]
    if variants:
        parts += ["Batch 1024 under other thread settings (index / faiss):",
                  _table(["variant", "environment", "index / faiss"], variants)]
    parts.append(f"GPU: {r.get('gpu_note', 'not measured')}" if not gpu else
                 "GPU: " + ", ".join(f"{k} {v}" for k, v in gpu.items() if not isinstance(v, (dict, list))))
    parts.append(_machine(r))
    return "\n\n".join(p for p in parts if p)


def bench_service(r: dict) -> str:
    levels = r["levels"]
    rows = []
    for c in sorted(levels, key=int):
        lv = levels[c]
        s, v = lv["similar"], lv["vectors"]
        rows.append([c, _n(s["qps"], 1), _n(s["p50_ms"], 1), _n(s["p99_ms"], 1), _n(s["p99_9_ms"], 1),
                     _n(lv["in_process_topk_qps"], 1), f"{lv['service_qps_vs_in_process']:.2f}",
                     _n(v["qps"], 1), _n(v["p99_ms"], 1)])
    swaps, mem = r["swaps"], r["server_memory_mib"]
    reloads = ", ".join(f"{s['reload_seconds']:.1f}" for s in swaps["swaps"])
    return "\n\n".join([
        f"{_n(r['rows'])} x {r['dim']} float32 index ({r['index_mib']} MiB), k={r['k']}, "
        f"{_n(r['requests_per_level'])} requests per level from closed-loop clients on 127.0.0.1:",
        _table(["clients", "/similar req/s", "p50 ms", "p99 ms", "p99.9 ms", "in-process topk q/s",
                "service / in-process", "/vectors req/s", "/vectors p99 ms"], rows),
        f"Hot swaps under a {_n(swaps['load']['requests'])}-request load: {len(swaps['swaps'])} swaps "
        f"(reloads of {reloads} s), {r['failed_requests_during_swaps']} failed requests; requests "
        f"during the reloads: p50 {_n(swaps['p50_ms_during_reloads'], 1)} ms, "
        f"p99 {_n(swaps['p99_ms_during_reloads'], 1)} ms.",
        precomputed_line(r),
        f"Server memory (RSS, MiB): {_n(mem['before_load']['rss_mib'], 1)} before the load, "
        f"{_n(mem['after_swaps']['peak_rss_mib'], 1)} at the peak of the swaps (two indexes), "
        f"{_n(mem['after_swaps']['rss_mib'], 1)} after them. {_machine(r)}"])


def precomputed_line(r: dict) -> str:
    """bench_service's precomputed-neighbours phase, where the run had one."""
    if "qps_c16_precomputed" not in r:
        return ""
    pre = r["precomputed"]
    sim, swap = pre["similar"], pre["rerun_swap"]
    return (f"Precomputed neighbours (`neighbors` table of the served version, swapped in by a rerun of the "
            f"served dt under a 16-client load: {swap['load']['failed']} failed of "
            f"{_n(swap['load']['requests'])} requests): {_n(sim['requests'])} `GET /similar` from 16 clients, "
            f"{_n(sim['qps'], 1)} req/s, p50 {_n(sim['p50_ms'], 2)} ms, p99 {_n(sim['p99_ms'], 2)} ms, "
            f"p99.9 {_n(sim['p99_9_ms'], 2)} ms: {r['precomputed_qps_vs_exact_c16']:.1f}x the exact path's "
            f"requests/s at 16 clients.")


def bench_train(r: dict) -> str:
    gen, ml, scale = r["generated"], r["movielens"], r["scale"]
    rows = []
    for label, st in (("generated log", gen["step"]), (f"the same, {scale}x", gen[f"step_x{scale}"])):
        job = min(st["job_runs"], key=lambda x: x["train_seconds"])
        raw = min(st["raw_runs"], key=lambda x: x["train_seconds"])
        rows.append([label, _n(st["tokens"]), _n(st["export_seconds"], 1), _n(st["export_tokens_per_second"]),
                     _n(job["train_seconds"], 1), _n(raw["train_seconds"], 1),
                     f"{st['job_vs_raw_gensim_words_per_s']:.3f}",
                     f"{_n(job['train_cpu_seconds'], 1)} / {_n(raw['train_cpu_seconds'], 1)}",
                     f"{st['step_vs_raw_gensim_train']:.2f}"])
    parts = [f"The step against raw gensim on the job's own corpus file (same parameters, same process; job "
             f"and raw runs alternate, best of each: {r['repeats']} each at 1x, {r['scale_repeats']} at {scale}x):",
             _table(["corpus", "tokens", "export s", "export tokens/s", "job train s", "raw gensim train s",
                     "job / raw words/s", "CPU s job / raw", "(export + train) / raw train"], rows)]
    if "export_phases" in gen:
        ph = gen["export_phases"]
        steps = [("read (Parquet scan, empty-sequence filter)", "read"),
                 ("+ hash shuffle by user, sort within partitions", "read_shuffle_sort"),
                 ("+ url-encoded lines", "read_shuffle_sort_lines"),
                 (f"+ text write: the export's Spark job ({ph['partitions']} part files)", "write_parts"),
                 ("join of the parts into one file", "join_parts"),
                 ("for comparison: a global sort's export (write and join)", "global_sort_export"),
                 ("for comparison: the export before issue 18 (global sort, filter on the encoded line)",
                  "previous_export")]
        parts += [f"Where the export's seconds go at 1x (each the best of {r['repeats']}; the first rows are "
                  "the same plan cut short, sunk into Spark's noop writer):",
                  _table(["phase", "s"], [[label, _n(ph[f"{key}_seconds"], 2)] for label, key in steps])]
    if ml:
        d = ml["default"]
        ml_rows = [["popularity", "the k most frequent training items", f"{d['popularity_hr']:.4f}",
                    f"{d['popularity_ndcg']:.4f}", "-"]]
        if "cooccurrence" in ml:
            c = ml["cooccurrence"]
            ml_rows.append(["item co-occurrence kNN", f"raw counts within {c['cooccurrence_window']} positions, "
                            "no embedding", f"{c['cooccurrence_hr']:.4f}", f"{c['cooccurrence_ndcg']:.4f}", "-"])
        for name, label in (("default", "gensim default"), ("tuned", "gensim tuned"), ("spark", "Spark MLlib"),
                            ("ppmi_svd", "ppmi_svd")):
            if name in ml:
                params = ", ".join(f"{k}={v}" for k, v in sorted(r["params"][name].items()) if k != "trainer")
                ml_rows.append([label, params, f"{ml[name]['hr']:.4f}", f"{ml[name]['ndcg']:.4f}",
                                _n(ml[name]["wall_seconds"], 1)])
        parts += [f"MovieLens ml-latest-small, hold-out after {d['cut_time']} ({_n(d['test_pairs'])} test pairs):",
                  _table(["run", "parameters", "HR@10", "NDCG@10", "wall s"], ml_rows),
                  f"Tuned gensim / popularity HR@10: {r['movielens_tuned_vs_popularity']:.2f}x. Spark MLlib / "
                  f"gensim default wall time: {r['movielens_gensim_vs_spark_speedup']:.2f}x."]
        if r.get("movielens_ppmi_svd_vs_cooccurrence") is not None:
            parts[-1] += (f" ppmi_svd / co-occurrence kNN HR@10: {r['movielens_ppmi_svd_vs_cooccurrence']:.3f} "
                          "(`movielens_ppmi_svd_vs_cooccurrence`).")
        if ml.get("ppmi_svd_sweep"):
            parts += ["ppmi_svd's parameters, one changed at a time from the defaults above, on the same hold-out:",
                      _table(["parameter", "value", "HR@10", "NDCG@10", "wall s"],
                             [[x["param"], x["value"], f"{x['hr']:.4f}", f"{x['ndcg']:.4f}",
                               _n(x["wall_seconds"], 1)] for x in ml["ppmi_svd_sweep"]])]
    if "gensim" in gen:
        g = gen["gensim"]
        rows = [[label, _n(gen[name]["wall_seconds"], 1), f"{gen[name]['hr']:.4f}", f"{gen[name]['ndcg']:.4f}",
                 f"{gen[name]['cluster_purity']:.3f}"]
                for name, label in (("gensim", "gensim, 2 workers"), ("spark", "Spark MLlib, 2 partitions"),
                                    ("ppmi_svd", "ppmi_svd, defaults")) if name in gen]
        if "cooccurrence" in gen:
            c = gen["cooccurrence"]
            rows.append([f"item co-occurrence kNN (window {c['cooccurrence_window']})", "-",
                         f"{c['cooccurrence_hr']:.4f}", f"{c['cooccurrence_ndcg']:.4f}", "-"])
        rows.append(["popularity", "-", f"{g['popularity_hr']:.4f}", f"{g['popularity_ndcg']:.4f}",
                     f"random: {g['cluster_random']:.3f}"])
        parts += [f"Generated log ({_n(gen['spec']['n_events'])} events, {_n(r['generated_tokens'])} training "
                  f"tokens), hold-out of {_n(g['test_pairs'])} pairs:",
                  _table(["trainer", "wall s", "HR@10", "NDCG@10", "cluster purity@10"], rows),
                  f"Raw gensim, 1 epoch: {_n(r['scaling_words_per_s_1_workers'])} words/s with 1 worker, "
                  f"{_n(r['scaling_words_per_s_2_workers'])} with 2 ({r['scaling_2_vs_1_workers']:.2f}x)."]
    if "order_check" in gen:
        oc = gen["order_check"]
        seeds = f"seeds {oc['seeds'][0]}-{oc['seeds'][-1]}" if len(oc["seeds"]) > 1 else f"seed {oc['seeds'][0]}"
        parts += [f"The export's line order against a global sort's: raw gensim (2 workers, the generated "
                  f"log's parameters) on the hold-out's training corpus written both ways, {seeds} each "
                  f"(same lines: {'yes' if oc['same_lines'] else 'no'}, same vocabulary: "
                  f"{'yes' if oc['same_vocabulary'] else 'no'}):",
                  _table(["line order", "HR@10 mean", "sd over seeds", "HR@10 per seed"], [
                      [label, f"{oc[f'hr10_{key}_mean']:.4f}", f"{oc[f'hr10_{key}_sd']:.4f}",
                       ", ".join(f"{v:.4f}" for v in oc[f"hr10_{key}"])]
                      for label, key in (("users by hash partition (the export)", "export"),
                                         ("global sort by user", "global_sort"))])]
    parts.append(_machine(r))
    return "\n\n".join(p for p in parts if p)

CHURN_LABELS = {"single": "single model", "ensemble2": "ensemble of 2", "ensemble4": "ensemble of 4",
                "warm": "warm start", "warm_cold84": "warm start, cold every 84 days",
                "ppmi_svd": "ppmi_svd"}


def churn_label(variant: str) -> str:
    """``ensemble4_smooth0.3`` -> "ensemble of 4, smoothing 0.3"."""
    base, _, beta = variant.partition("_smooth")
    return CHURN_LABELS.get(base, base) + (f", smoothing {beta}" if beta else "")


def bench_churn(r: dict) -> str:
    warm = r["warm_settings"]
    rows = []
    for v in r["variants"]:
        ratio = "1" if v == "single" else f"{r[f'hr_ratio_{v}_vs_single']:.3f}"
        cpu = "1" if v == "single" else f"{r[f'train_cpu_ratio_{v}']:.2f}"
        rows.append([churn_label(v), f"{r[f'overlap_{v}']:.3f}", f"{r[f'churn_share_{v}']:.3f}",
                     f"{r[f'overlap_uniform_{v}']:.3f}", f"{r[f'stabilized_cosine_{v}']:.3f}",
                     f"{r[f'hr_mean_{v}']:.4f}", ratio, cpu])
    last = r["versions"][-1]
    per_version = [[str(x["version"]), x["cut"], _n(x["test_pairs"]),
                    *(f"{x[v]['overlap_at_10']:.3f}" if "overlap_at_10" in x[v] else "-" for v in r["variants"]),
                    *(f"{x[v]['hr_at_10']:.4f}" for v in ("single", "ensemble4", "warm"))]
                   for x in r["versions"]]
    return "\n\n".join([
        f"{len(r['versions'])} versions, the first trained on the sequences before {r['first_cut']}, each next one "
        f"{r['step_days']} days later; HR@10 on the transitions of the {r['horizon_days']} days after each cut "
        f"({_n(r['test_pairs_total'])} pairs over the chain, the same pairs for every variant). Overlap@10 to "
        f"the parent over {r['queries']} queried items drawn by count (traffic) and uniformly; churn: share of "
        f"queried items whose top-10 changed by more than half. Warm start: {warm['warm_epochs']} epoch(s) from "
        f"alpha {warm['warm_alpha']}. Chain means (overlap over the versions with a parent):",
        _table(["variant", "overlap@10", "churn > half", "overlap@10 (uniform)", "stabilized cosine",
                "HR@10", "HR@10 / single (paired)", "training CPU / single"], rows),
        _table(["version", "cut", "test pairs", *(f"overlap {churn_label(v)}" for v in r["variants"]),
                "HR@10 single", "HR@10 ensemble of 4", "HR@10 warm"], per_version),
        f"Warm start at the last version: HR@10 {last['warm']['hr_at_10']:.4f} against the single model's "
        f"{last['single']['hr_at_10']:.4f} (ratio {r['warm_hr_ratio_last_version']:.3f}; with a cold start every "
        f"84 days {r['warm_cold84_hr_ratio_last_version']:.3f}). Training CPU of the ensemble of 4 with its "
        f"processes' start-up (spawn, imports): {r['call_cpu_ratio_ensemble4']:.2f}x the single model's. "
        + _machine(r)])


def bench_churn_readme(r: dict) -> str:
    """The README's one table of the chain: gensim alone, as an ensemble, warm-started, and
    the count-based trainer with its smoothed publications; why the default is what it is."""
    shown = [v for v in r["variants"] if v in ("single", "ensemble2", "ensemble4", "warm")
             or v.startswith("ppmi_svd")]
    table = _table(["variant", "overlap@10 to parent", "HR@10 / single", "training CPU / single"],
                   [[churn_label(v), f"{r[f'overlap_{v}']:.3f}",
                     "1" if v == "single" else f"{r[f'hr_ratio_{v}_vs_single']:.3f}",
                     "1" if v == "single" else f"{r[f'train_cpu_ratio_{v}']:.2f}"] for v in shown])
    return "\n\n".join([table, default_advice(r), warm_advice(r)])


def warm_advice(r: dict) -> str:
    """The README's word on warm start, from its HR@10 at the chain's end (and the chain means)."""
    ratio, periodic = r["warm_hr_ratio_last_version"], r["warm_cold84_hr_ratio_last_version"]
    said = (f"Warm start's HR@10 at the chain's last version is {ratio:.3f}x a cold single model's "
            f"({periodic:.3f}x with a cold start every 84 days). ")
    if ratio < 1:
        return said + ("It falls behind as the chain grows, so `init: cold` stays the default; a warm start "
                       "wants `cold_every_days`.")
    return said + (f"It held up over this chain, so a warm start (about {r['train_cpu_ratio_warm']:.2f}x the "
                   "training CPU) is an option where gensim's training time matters most; an ensemble of 4 "
                   f"scores {r['hr_ratio_ensemble4_vs_single']:.3f}x the single model's HR@10 over the chain "
                   f"against the warm start's {r['hr_ratio_warm_vs_single']:.3f}x.")


def bench_backfill(r: dict) -> str:
    rows = [[dt, f"{diff:.3g}"] for dt, diff in r["max_abs_vector_difference_by_dt"].items()]
    seq, par = r["sequential_seconds"], r["parallel2_seconds"]
    return "\n\n".join([
        f"A {len(r['dts'])}-dt backfill ({r['dts'][0]} to {r['dts'][-1]}) of conf/local.yaml on a "
        f"{_n(r['n_events'])}-event sample log against a metastore service"
        + (f", with {', '.join(r['sets'])}" if r["sets"] else "") + ": "
        f"`--parallel 1` {', '.join(f'{t:.0f}' for t in seq)} s, `--parallel 2` "
        f"{', '.join(f'{t:.0f}' for t in par)} s; `backfill_parallel2_vs_sequential` "
        f"{r['backfill_parallel2_vs_sequential']:.2f} (sequential time over parallel time). {_machine(r)}",
        "Largest difference between the two backfills' published item vectors:",
        _table(["dt", "max abs difference"], rows)])


def _load(r: dict) -> str:
    m = r.get("machine", {})
    return (f"{m.get('cpu_count', '?')} cores shared with other work: load average "
            f"{m.get('load_average_1m_at_start', 0):.1f} at the start, {m.get('load_average_1m_at_end', 0):.1f} "
            "at the end; the seconds are those of a busy machine.")


PHASES = ("count", "pmi", "range_m_omega", "power", "b_transpose", "small_svd")


def _phase_order(key: str) -> tuple:
    """ppmi_svd's ``phase_<name>_seconds`` keys in the order the trainer runs them (the results
    files sort their keys): counts, PMI, M Omega, the power passes in turn, B^T, the small SVD."""
    name = key.removeprefix("phase_").removesuffix("_seconds")
    first = next((i for i, p in enumerate(PHASES) if name.startswith(p)), len(PHASES))
    return first, name.replace("_mt_q", "_1").replace("_m_q", "_2")  # each power pass: M^T Q, then M Q


def bench_churn_ppmi(r: dict) -> str:
    """The chain with the count-based trainer (and its smoothed publications) next to the single
    SGNS model."""
    r = {**r, "variants": [v for v in r["variants"] if v == "single" or v.startswith("ppmi_svd")]}
    rows = [[churn_label(v), f"{r[f'overlap_{v}']:.3f}", f"{r[f'overlap_uniform_{v}']:.3f}",
             f"{r[f'churn_share_{v}']:.3f}", f"{r[f'stabilized_cosine_{v}']:.3f}", f"{r[f'hr_mean_{v}']:.4f}",
             "1" if v == "single" else f"{r[f'hr_ratio_{v}_vs_single']:.3f}",
             "1" if v == "single" else f"{r[f'train_cpu_ratio_{v}']:.2f}"] for v in r["variants"]]
    per_version = [[str(x["version"]), x["cut"], _n(x["test_pairs"]),
                    *(f"{x[v]['overlap_at_10']:.3f}" if "overlap_at_10" in x[v] else "-" for v in r["variants"]),
                    *(f"{x[v]['hr_at_10']:.4f}" for v in r["variants"])] for x in r["versions"]]
    phases = sorted({k for x in r["versions"] for k in x["ppmi_svd"].get("phases", {})}, key=_phase_order)
    phase_rows = [[k.removeprefix("phase_").removesuffix("_seconds"),
                   f"{np.mean([x['ppmi_svd']['phases'][k] for x in r['versions']]):.1f}"] for k in phases]
    return "\n\n".join([
        f"The chain of the section above ({len(r['versions'])} versions from {r['first_cut']}"
        + (f", the first {len(r['versions'])} of {r['versions_requested']} requested: the run was cut short"
           if r.get("versions_requested", len(r["versions"])) > len(r["versions"]) else "") + ", "
        f"{r['step_days']} days apart, {_n(r['test_pairs_total'])} test pairs), run with "
        "the single SGNS model and the count-based trainer, unsmoothed and published with "
        "stabilize.smoothing (a smoothed variant publishes the same training). Chain means:",
        _table(["variant", "overlap@10", "overlap@10 (uniform)", "churn > half", "stabilized cosine", "HR@10",
                "HR@10 / single (paired)", "training CPU / single"], rows),
        f"A second training on the second version's sequences keeps {r['same_data_overlap_ppmi_svd']:.3f} of the "
        f"neighbours of the first ({r['same_data_overlap_uniform_ppmi_svd']:.3f} uniform): the trainer is "
        "deterministic. Per version:",
        _table(["version", "cut", "test pairs", *(f"overlap {v}" for v in r["variants"]),
                *(f"HR@10 {v}" for v in r["variants"])], per_version),
        "ppmi_svd's phases, mean seconds per version (each Spark pass, with its Gram passes):",
        _table(["phase", "seconds"], phase_rows), best_variant(r), _load(r)])


def best_variant(r: dict) -> str:
    """The most stable variant at the HR@10 floor, and what its smoothing costs in freshness."""
    if "best_overlap_variant" not in r:
        return f"No variant reached {r.get('best_min_hr_ratio', 1.05)}x the single model's HR@10."
    best = r["best_overlap_variant"]
    _, _, beta = best.partition("_smooth")
    fresh = (f" With smoothing {beta}, a changed item needs log(0.1) / log(1 - {beta}) = "
             f"{linalg.versions_to_90pct(float(beta)):.1f} versions to move 90% of the way to its new "
             "vector." if beta else "")
    return (f"Most stable variant at HR@10 >= {r['best_min_hr_ratio']}x the single model's "
            f"(`best_overlap_variant`): {churn_label(best)}, overlap@10 {r['best_overlap']:.3f} at HR@10 "
            f"{r['best_overlap_hr_ratio']:.3f}x." + fresh)





def default_advice(r: dict) -> str:
    """Which trainer the shipped configs use, and smoothing's trade, from the chain."""
    unsmoothed = [v for v in r["variants"] if "_smooth" not in v]
    best_hr = max(unsmoothed, key=lambda v: 1.0 if v == "single" else r[f"hr_ratio_{v}_vs_single"])
    best_overlap = max(unsmoothed, key=lambda v: r[f"overlap_{v}"])
    said = (f"A second ppmi_svd training on the same sequences keeps {r['same_data_overlap_ppmi_svd']:.3f} of "
            "each item's neighbours (it is deterministic). ")
    if best_hr == best_overlap == "ppmi_svd":
        said += ("Of the trainers it has both the highest HR@10 and the highest overlap, so `conf/local.yaml` "
                 "and `conf/cluster.example.yaml` ship `train.trainer: ppmi_svd` (gensim's Item2Vec is "
                 "`--set train.trainer=gensim` away).")
    else:
        said += (f"The highest HR@10 is {churn_label(best_hr)}'s, the highest overlap {churn_label(best_overlap)}'s: "
                 "the shipped trainer (ppmi_svd) should be revisited.")
    smoothed = sorted((v for v in r["variants"] if v.startswith("ppmi_svd_smooth")),
                      key=lambda v: -float(v.partition("_smooth")[2]))
    if smoothed:
        said += (" Smoothing trades freshness for overlap (versions for a changed item to move 90% of the "
                 "way: " + ", ".join(f"{v.partition('_smooth')[2]}: "
                                     f"{linalg.versions_to_90pct(float(v.partition('_smooth')[2])):.1f}"
                                     for v in smoothed) +
                 "), lowers HR@10 and makes item . context scores no longer those of one model, so it stays "
                 "off by default (`stabilize.smoothing: 1.0`).")
    return said


def bench_ppmi_svd(r: dict) -> str:
    g, s = r["generated"], r["scale"]
    runs = [(t, label) for label in ("1x", f"{s}x") for t in ("gensim", "ppmi_svd") if f"{t}_{label}" in g]
    parts = [f"The whole trainer call on bench_train's generated log of {_n(g['events'])} events and on its "
             f"sequences repeated {s} times (the same items, {s}x the events):",
             _table(["trainer", "log", "seconds", "CPU s", "items", "tokens"],
                    [[t, label, f"{g[f'{t}_{label}']['seconds']:.1f}",
                      _g(g[f"{t}_{label}"]["train_cpu_seconds"], 4), _n(g[f"{t}_{label}"]["vocab_size"]),
                      _n(g[f"{t}_{label}"]["corpus_tokens"])] for t, label in runs]),
             "; ".join(f"`{k}`: {r[k]:.2f}" for k in sorted(r) if k.startswith(
                 ("ppmi_svd_vs_gensim", "ppmi_svd_time_growth", "gensim_time_growth"))) + ".",
             "CPU seconds: gensim's are its training threads', ppmi_svd's the Spark JVM's and its Python "
             "workers' over the whole call."]
    labels = [label for label in ("1x", f"{s}x") if f"ppmi_svd_{label}" in g]
    names = sorted((k for k in g.get("ppmi_svd_1x", {}) if k.startswith("phase_")), key=_phase_order)
    if names:
        parts += ["ppmi_svd's phases (seconds; each range-finder pass is one Spark multiply with its Gram pass):",
                  _table(["phase", *labels], [[k.removeprefix("phase_").removesuffix("_seconds"),
                                               *(f"{g[f'ppmi_svd_{label}'].get(k, 0):.1f}" for label in labels)]
                                              for k in names]),
                  "Co-occurring pairs and SPPMI entries: " + ", ".join(
                      f"{label} {_n(g[f'ppmi_svd_{label}'].get('cooccurrence_pairs', 0))} / "
                      f"{_n(g[f'ppmi_svd_{label}'].get('sppmi_entries', 0))}" for label in labels) + "."]
    parts.append(f"Load average during the run (the benchmark's own processes included): up to "
                 f"{r['load_average_1m_max']:.1f} on {r['machine']['cpu_count']} cores.")
    return "\n\n".join(p for p in parts if p)


def bench_churn_ppmi_settings(r: dict) -> str:
    """What moves ppmi_svd's overlap: one trainer setting changed at a time on the chain."""
    base, settings = "ppmi_svd", r["ppmi_settings"]

    def vs_base(v, key):  # paired per version, as the ratios to the single model
        return np.mean([x[v][key] / x[base][key] for x in r["versions"]])

    def label(v):
        if v == base:
            return "ppmi_svd, defaults"
        changed = {k: x for k, x in settings.get(v, {}).items() if settings[base].get(k) != x}
        return churn_label(v) + "".join(f", `{k}: {x}`" for k, x in changed.items())

    rows = [[label(v), f"{r[f'overlap_{v}']:.3f}", f"{r[f'overlap_uniform_{v}']:.3f}", f"{r[f'churn_share_{v}']:.3f}",
             f"{r[f'hr_mean_{v}']:.4f}", "1" if v == "single" else f"{r[f'hr_ratio_{v}_vs_single']:.3f}",
             f"{vs_base(v, 'hr_at_10'):.3f}",
             f"{sum(x[v]['train_wall_seconds'] for x in r['versions']) / len(r['versions']):.1f}"]
            for v in r["variants"]]
    tried = [v for v in r["variants"] if v.startswith(base + "_")]
    best = max(tried, key=lambda v: r[f"overlap_{v}"]) if tried else None
    if best and r[f"overlap_{best}"] > r[f"overlap_{base}"]:
        said = (f"The highest overlap here is {label(best)}: {r[f'overlap_{best}']:.3f} against "
                f"{r[f'overlap_{base}']:.3f} with the defaults, at {vs_base(best, 'hr_at_10'):.3f}x their HR@10.")
    else:
        said = "No setting tried here keeps more neighbours than the defaults."
    return "\n\n".join([
        f"The same chain ({len(r['versions'])} versions from {r['first_cut']}, {r['step_days']} days apart), "
        "ppmi_svd with one setting changed at a time from its defaults (each row names it), the single SGNS "
        "model for reference. Chain means; HR@10 ratios paired per version:",
        _table(["variant", "overlap@10", "overlap@10 (uniform)", "churn > half", "HR@10", "HR@10 / single",
                "HR@10 / ppmi_svd defaults", "training s per version"], rows),
        said, _machine(r)])


# docs/pipeline.md's sizing example: 10M items, 10B events, a few hundred SPPMI entries per item.
SCALE_EVENTS, SCALE_ENTRIES, SCALE_CORES = 10e9, 2e9, 100


def bench_ppmi_svd_scale(r: dict) -> str:
    """The measured phases as core-seconds per unit of work, carried to the sizing example."""
    g, s, cores = r["generated"], r["scale"], r["machine"]["cpu_count"]
    one, big = g["ppmi_svd_1x"], g.get(f"ppmi_svd_{s}x")
    if big is None:
        return "The larger run did not finish; no scale figures."
    passes = [k for k in one if k.startswith("phase_") and k != "phase_count_seconds"
              and not k.startswith(("phase_pmi", "phase_small"))]
    # Both from the larger run (the later one, no first-use costs): per token, per entry and pass.
    count_rate = big["phase_count_seconds"] * cores / big["corpus_tokens"]
    pass_rate = np.mean([big[k] for k in passes]) * cores / big["sppmi_entries"]
    tokens_per_event = one["corpus_tokens"] / g["events"]
    count_hours = count_rate * SCALE_EVENTS * tokens_per_event / 3600
    pass_hours = pass_rate * SCALE_ENTRIES / 3600
    rows = [["counts (pairs within the window, summed)",
             f"{_n(one['phase_count_seconds'], 1)} s ({_n(one['corpus_tokens'])} tokens), "
             f"{_n(big['phase_count_seconds'], 1)} s ({_n(big['corpus_tokens'])} tokens)",
             f"{count_rate * 1e6:.1f} per 1M tokens", _n(count_hours),
             _n(count_hours * 60 / SCALE_CORES)],
            [f"range-finder passes ({len(passes)}: multiply + Gram each)",
             f"{np.mean([one[k] for k in passes]):.1f} s, {np.mean([big[k] for k in passes]):.1f} s per pass "
             f"({_n(big['sppmi_entries'])} entries)",
             f"{pass_rate * 1e6:.1f} per 1M entries and pass", _n(pass_hours * len(passes)),
             _n(pass_hours * len(passes) * 60 / SCALE_CORES)]]
    return "\n\n".join([
        f"From `benchmarks/results/bench_ppmi_svd.json` (bench_train's generated log at 1x and {s}x, {cores} "
        f"cores, local mode): the {s}x run's phases as core-seconds per unit of work, and what they come to for "
        f"{_n(SCALE_EVENTS)} events ({tokens_per_event:.2f} tokens per event as measured) and "
        f"{_n(SCALE_ENTRIES)} SPPMI entries if the per-unit cost stayed the same:",
        _table(["phase", "measured", "core-seconds", "core-hours at that size",
                f"minutes on {SCALE_CORES} cores"], rows),
        f"At these sizes the phases are throughput, not Spark's per-job cost (the counts took "
        f"{big['phase_count_seconds'] / one['phase_count_seconds']:.2f}x the seconds for {s}x the tokens), so "
        "the per-unit figures carry over as long as the work spreads evenly over the cores; a cluster adds the "
        "network's share of each shuffle, which local mode does not have, and the gensim comparison above "
        "stops at one machine's memory."])


def bench_ppmi_svd_readme(r: dict) -> str:
    g, s = r["generated"], r["scale"]
    if f"ppmi_svd_time_growth_1x_to_{s}x" not in r:
        return "The speed run (benchmarks/bench_ppmi_svd.py) did not finish its larger log."
    return (f"Its price on one {r['machine']['cpu_count']}-core machine is time: on a generated log of "
            f"{_n(g['events'])} events the whole ppmi_svd call takes {r['ppmi_svd_vs_gensim_train_seconds']:.1f}x "
            f"gensim's seconds, on {s}x the events {r[f'ppmi_svd_vs_gensim_train_seconds_{s}x']:.1f}x (its time grows "
            f"{r[f'ppmi_svd_time_growth_1x_to_{s}x']:.2f}x, gensim's {r[f'gensim_time_growth_1x_to_{s}x']:.2f}x); "
            "every phase is a Spark pass, so it spreads over a cluster ([scale](docs/pipeline.md#what-it-costs-as-"
            "the-data-grows)).")


RENDERERS: dict[str, Callable[[dict], str]] = {
    "bench_ppmi_svd.readme": bench_ppmi_svd_readme,
    "bench_ppmi_svd.scale": bench_ppmi_svd_scale,
    "bench_churn_ppmi_settings": bench_churn_ppmi_settings,
    "bench_churn.ppmi": bench_churn_ppmi,
    "bench_ppmi_svd": bench_ppmi_svd,
    "bench_sequences": bench_sequences, "bench_train": bench_train, "bench_stabilize": bench_stabilize,
    "stability_movielens": stability_movielens, "bench_serving": bench_serving, "bench_service": bench_service,
    "bench_churn": bench_churn, "bench_churn.readme": bench_churn_readme,
    "bench_stabilize.readme": bench_stabilize_readme, "bench_backfill": bench_backfill,
}


def render(text: str) -> str:
    """``text`` with every figures block rewritten from its results file."""
    def block(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise SystemExit(f"no renderer for figures block {name!r} (known: {', '.join(sorted(RENDERERS))})")
        results = name.split(".")[0]  # NAME.view: another view of results/NAME.json
        result = json.loads((RESULTS / f"{results}.json").read_text())
        body = RENDERERS[name](result).rstrip() + "\n"
        source = f"_Rendered by `make docs` from `benchmarks/results/{results}.json`._\n\n"
        return m.group(1) + source + body + m.group(4)
    return BLOCK.sub(block, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a block differs from its results file")
    args = parser.parse_args(argv)
    stale = []
    for path in DOCS:
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale figures in {', '.join(stale)}: run make docs", file=sys.stderr)
        return 1
    print(("rendered " if not args.check else "up to date: ") + (", ".join(stale) or "nothing to change"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

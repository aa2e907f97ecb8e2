"""Run reports: rendered from a real small run's tables, figures checked against the registry."""
from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from embedlib import pipeline, registry, run_stats
from embedlib.cli import main as cli_main
from embedlib.report import build_report, popularity_curve
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.steps import build_sequences, stabilize, train_item2vec
from tests.helpers import make_config

ROOT_DT, DT = "2024-01-09", "2024-01-10"
STEPS = (("build_sequences", build_sequences.run), ("train_item2vec", train_item2vec.run),
         ("stabilize", stabilize.run), ("forward_hit_rate", pipeline.forward_hit_rate))
PLOTS = ("cosine.png", "trends.png", "churn.png", "sequences.png", "training.png", "changes.png")


@pytest.fixture(scope="module")
def run_cfg(spark, warehouse, tmp_path_factory):
    """Two consecutive dts through build_sequences, train_item2vec and stabilize."""
    sample = tmp_path_factory.mktemp("report_sample")
    write_sample(SampleSpec(n_events=6000, n_users=150, n_items=120, n_clusters=4, days=3), sample)
    cfg = make_config(warehouse,
                      input={"path": str(sample / "events"), "event_types": ["view", "click", "purchase"],
                             "columns": {"event_type": "event_type"}},
                      sequences={"lookback_days": 2, "min_count": 2},
                      train={"vector_size": 16, "epochs": 2, "workers": 1, "window": 3},
                      stabilize={"score_sample": 64, "overlap_queries": 50})
    for dt in (ROOT_DT, DT):
        for name, run in STEPS:
            run_stats.record(spark, cfg, dt, name, run(spark, cfg, dt))
    return cfg


def test_popularity_curve_from_counts_of_counts():
    # items with 5, 3, 1, 1 events (in any order), 10 events in all
    curve = popularity_curve(np.array([1, 5, 3]), np.array([2, 1, 1]), max_points=10)
    assert curve["rank"] == [1, 2, 3, 4] and curve["n_events"] == [5, 3, 1, 1]
    assert (curve["items"], curve["events"]) == (4, 10)
    assert curve["top_1pct_share"] == curve["top_10pct_share"] == 0.5  # the top item: 5 of 10


@pytest.fixture(scope="module")
def report_dir(spark, run_cfg, tmp_path_factory):
    """The folder holding <DT>/index.html, the report of the second (chained) dt."""
    out = tmp_path_factory.mktemp("reports")
    assert build_report(spark, run_cfg, DT, str(out)) == out / DT / "index.html"
    return out


@pytest.mark.slow
def test_report_figures_match_the_registry(spark, run_cfg, report_dir):
    page = report_dir / DT / "index.html"
    text = page.read_text()
    for name in PLOTS:
        image = imread(report_dir / DT / name)  # a valid PNG, not an empty canvas
        assert image.ndim == 3 and image.shape[0] > 100 and image[..., :3].std() > 0.05
        assert f'src="{name}"' in text
    figures = json.loads((report_dir / DT / "report.json").read_text())
    item = registry.read_version(spark, run_cfg, DT)["item"]
    metrics = item.metrics

    cosine = figures["cosine"]
    assert cosine["parent_dt"] == ROOT_DT == item.parent_dt
    assert cosine["raw"]["rows"] == cosine["stabilized"]["rows"] == metrics["rows_joined"]
    assert sum(cosine["raw"]["counts"]) == metrics["rows_joined"]
    assert cosine["raw"]["mean"] == pytest.approx(metrics["cosine_raw_mean"], abs=1e-6)
    # published vectors are float32: the registry's figure is computed before storage
    assert cosine["stabilized"]["mean"] == pytest.approx(metrics["cosine_stabilized_mean"], abs=1e-4)
    assert cosine["stabilized"]["mean"] > cosine["raw"]["mean"]

    trends = figures["trends"]
    assert trends["dt"] == [ROOT_DT, DT] and trends["root"] == [True, False]
    for key in ("cosine_stabilized_mean", "neighbour_overlap_at_10", "neighbour_churn_share", "score_max_rel_err"):
        assert trends[key][1] == metrics[key]
    assert trends["cosine_stabilized_mean"][0] is None  # a root has no parent to compare with

    churn = figures["churn"]
    assert churn["parent_dt"] == ROOT_DT and churn["queries"] == metrics["overlap_queries"] == 50
    assert (churn["overlap"], churn["churn_share"]) == (metrics["neighbour_overlap_at_10"],
                                                        metrics["neighbour_churn_share"])
    assert churn["most_changed"] == metrics["most_changed"] and len(churn["most_changed"]) == 20
    section = text[text.index("Neighbour churn"):]
    for m in churn["most_changed"]:  # every listed item, with its neighbours on both sides
        row = section[section.index(f"<td>{m['id']}</td>"):]
        row = row[:row.index("</tr>")]
        assert all(n in row for n in m["before"] + m["after"])

    changes = figures["changes"]
    assert {f"item_{k}": v for k, v in changes["delta"]["item"].items()} == {
        k: v for k, v in metrics["delta"].items() if k.startswith("item_")}
    assert changes["carried"]["item"] == item.n_carried
    assert changes["trend"]["evicted"][1] == metrics["evicted"]

    summary = run_stats.read(spark, run_cfg, DT)
    seq = figures["sequences"]
    assert sum(seq["length"]["sequences"]) == summary["build_sequences"]["sequences"]["written"]
    assert seq["popularity"]["items"] == summary["build_sequences"]["items"]["seen"]
    assert seq["dropped"]["duplicate"] == summary["build_sequences"]["dropped"]["duplicate"] > 0
    training = figures["training"]
    assert training["trend"]["dt"] == [ROOT_DT, DT]
    assert training["run"]["words_per_second"] == summary["train_item2vec"]["words_per_second"] > 0
    hit, forward = figures["hit_rate"], summary["forward_hit_rate"]
    assert hit["version"] == ROOT_DT and hit["pairs"] == forward["test_pairs"] > 0
    assert hit["rows"] == {"parent version": {"hr": forward["hr"], "ndcg": forward["ndcg"]},
                           "popularity": {"hr": forward["popularity_hr"], "ndcg": forward["popularity_ndcg"]},
                           "co-occurrence kNN": {"hr": forward["cooccurrence_hr"],
                                                 "ndcg": forward["cooccurrence_ndcg"]}}
    section = text[text.index("Next-day hit rate"):]
    assert "co-occurrence kNN" in section[:section.index("</table>")]


@pytest.mark.slow
def test_console_command_renders_root_and_unknown_dts(spark, run_cfg, tmp_path, capsys):
    conf = {k: v for k, v in dataclasses.asdict(run_cfg).items() if k != "source"}
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    out = tmp_path / "out"
    assert cli_main(["report", "--conf", str(tmp_path / "conf.yaml"), "--dt", ROOT_DT,
                     "--set", f"report.out_dir={out}"]) == 0
    page = out / ROOT_DT / "index.html"
    assert capsys.readouterr().out.strip() == str(page)
    figures = json.loads((out / ROOT_DT / "report.json").read_text())
    assert figures["version"]["root"] is True
    assert "no parent version" in figures["cosine"]["missing"] and "no parent version" in page.read_text()
    assert "neighbour churn needs a parent" in figures["churn"]["missing"]
    assert "neighbour churn needs a parent" in page.read_text()
    assert not (out / ROOT_DT / "cosine.png").exists() and not (out / ROOT_DT / "churn.png").exists()
    assert figures["trends"]["dt"] == [ROOT_DT] and figures["changes"]["delta"]["item"]["new"] > 0
    assert cli_main(["nonsense"]) == 2

    page = build_report(spark, run_cfg, "2024-01-05", str(out))  # before any run
    figures = json.loads((out / "2024-01-05" / "report.json").read_text())
    assert "not a registered version" in figures["version"]["missing"]
    assert "no partition" in figures["sequences"]["length"]["missing"]
    assert page.exists() and (out / "2024-01-05" / "sequences.png").exists()


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (make test installs it as root: scripts/ensure_chromium.sh)")
def test_page_shows_its_plots_in_headless_chromium(report_dir, tmp_path):
    page = report_dir / DT / "index.html"
    # The same page plus a script that records, once loaded, each <img>'s natural size
    # (0 x 0 for a missing or broken PNG); --dump-dom prints the DOM after load.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
      window.addEventListener("load", () => document.body.setAttribute("data-images", JSON.stringify(
        [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth, i.naturalHeight]))));
      </script></body>"""))
    dom = subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000",
                          "--dump-dom", probe.resolve().as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    images = json.loads(html.unescape(re.search(r'data-images="([^"]*)"', dom).group(1)))
    assert sorted(src for src, _, _ in images) == sorted(PLOTS)
    assert all(w > 100 and h > 100 for _, w, h in images), images
    probe.unlink()

    shot = tmp_path / "screenshot.png"
    subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'p2'}", "--hide-scrollbars",
                    "--window-size=1300,4600", f"--screenshot={shot}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = imread(shot)
    assert image.shape[:2] == (4600, 1300)
    # the plots drew colour (matplotlib's tab: palette), not only black text on white
    rgb = image[..., :3]
    assert (rgb.max(axis=2) - rgb.min(axis=2) > 0.3).mean() > 0.01

"""Deterministic sample behaviour logs with a planted ground truth.

Items belong to planted clusters; a session mostly stays in one of its user's preferred
clusters, so a good model puts same-cluster items near each other. Within a cluster a
session also moves along a sparse planted transition graph: each item has a few successors
in its cluster (drawn by popularity), and the next item follows one of the previous item's
edges with probability ``follow_prob``, so the previous item predicts the next one better
than its cluster or popularity alone, as in real logs. Popularity is Zipf,
users come back over several days, some clicks repeat, and a small share of rows is bad on
purpose (null ids, unparseable or future timestamps, exact duplicates). The same seed and
sizes always give the same files.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

EVENT_TYPES = np.array(["view", "click", "purchase"])
FUTURE_TS = 4102444800  # 2100-01-01: a "future timestamp" bad row
BAD_KINDS = ("null_user", "null_item", "unparseable_time", "future_time", "duplicate")


@dataclass(frozen=True)
class SampleSpec:
    n_events: int = 150_000
    n_users: int = 2_000
    n_items: int = 2_000
    n_clusters: int = 20
    days: int = 10
    end_date: str = "2024-01-10"
    zipf_exponent: float = 1.0
    mean_session_length: float = 8.0
    repeat_prob: float = 0.08
    noise_prob: float = 0.1
    bad_share: float = 0.01
    # Sequential signal: successors per item, and the chance the next item follows an edge.
    out_degree: int = 4
    follow_prob: float = 0.6
    seed: int = 7


def item_ids(n_items: int) -> np.ndarray:
    return np.array([f"i{i:07d}" for i in range(n_items)], dtype=object)


def planted_clusters(spec: SampleSpec) -> np.ndarray:
    """Cluster of each item index; every cluster gets items of every popularity rank."""
    rng = np.random.default_rng(spec.seed + 1)
    return rng.permutation(np.arange(spec.n_items) % spec.n_clusters)


def edge_probabilities(spec: SampleSpec) -> np.ndarray:
    """Chance of each of an item's successors (the first, most popular draw, the likeliest)."""
    w = 1.0 / np.arange(1, spec.out_degree + 1)
    return w / w.sum()


def planted_transitions(spec: SampleSpec) -> np.ndarray:
    """Successors of each item index, shape (n_items, out_degree): other items of its own
    cluster drawn by popularity (with replacement, so a popular item may be an edge twice)."""
    rng = np.random.default_rng(spec.seed + 2)
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** spec.zipf_exponent
    cluster_of = planted_clusters(spec)
    successors = np.empty((spec.n_items, spec.out_degree), dtype=np.int64)
    for c in range(spec.n_clusters):
        members = np.flatnonzero(cluster_of == c)
        p = popularity[members] / popularity[members].sum()
        drawn = rng.choice(members, size=(members.size, spec.out_degree), p=p)
        for _ in range(8):  # redraw self-edges (a repeat, not a move); few are left after one
            self_edge = drawn == members[:, None]
            if not self_edge.any() or members.size == 1:
                break
            drawn[self_edge] = rng.choice(members, int(self_edge.sum()), p=p)
        successors[members] = drawn
    return successors


def _session_items(spec: SampleSpec, rng: np.random.Generator, e_cluster: np.ndarray,
                   position: np.ndarray, popularity: np.ndarray, cluster_of: np.ndarray) -> np.ndarray:
    """Item of every event: a popularity draw from the session's cluster, replaced, from the
    second event of a session on, by an edge of the previous item with ``follow_prob``."""
    items = np.empty(e_cluster.size, dtype=np.int64)
    for c in range(spec.n_clusters):
        mask = e_cluster == c
        members = np.flatnonzero(cluster_of == c)
        p = popularity[members] / popularity[members].sum()
        items[mask] = rng.choice(members, int(mask.sum()), p=p)
    successors = planted_transitions(spec)
    follow = rng.random(e_cluster.size) < spec.follow_prob
    edge = rng.choice(spec.out_degree, e_cluster.size, p=edge_probabilities(spec))
    # Position by position (vectorized over sessions): event t follows event t - 1's edge.
    order = np.argsort(position, kind="stable")
    bounds = np.searchsorted(position[order], np.arange(int(position.max()) + 2))
    for t in range(1, bounds.size - 1):
        idx = order[bounds[t]:bounds[t + 1]]
        idx = idx[follow[idx]]
        items[idx] = successors[items[idx - 1], edge[idx]]
    return items


def generate_events(spec: SampleSpec) -> pa.Table:
    """The event log as an Arrow table of strings: user_id, item_id, ts, event_type."""
    rng = np.random.default_rng(spec.seed)
    cluster_of = planted_clusters(spec)
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** spec.zipf_exponent

    n_sessions = max(1, int(spec.n_events / spec.mean_session_length))
    lengths = np.minimum(rng.geometric(1.0 / spec.mean_session_length, n_sessions), 200)
    lengths[-1] += max(0, spec.n_events - int(lengths.sum()))
    user_activity = rng.pareto(1.5, spec.n_users) + 1.0
    s_user = rng.choice(spec.n_users, n_sessions, p=user_activity / user_activity.sum())
    preferred = rng.integers(0, spec.n_clusters, size=(spec.n_users, 2))
    s_cluster = preferred[s_user, rng.integers(0, 2, n_sessions)]
    end = _dt.datetime.fromisoformat(spec.end_date).replace(tzinfo=_dt.timezone.utc)
    first_day = int((end - _dt.timedelta(days=spec.days - 1)).timestamp())
    s_start = first_day + rng.integers(0, spec.days * 86400, n_sessions)

    session = np.repeat(np.arange(n_sessions), lengths)
    first_of_session = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step = rng.exponential(45.0, session.size).astype(np.int64)
    step[first_of_session] = 0
    offsets = np.cumsum(step) - np.repeat(np.cumsum(step)[first_of_session], lengths)
    ts = s_start[session] + offsets

    position = np.arange(session.size) - first_of_session[session]
    items = _session_items(spec, rng, s_cluster[session], position, popularity, cluster_of)
    noise = rng.random(session.size) < spec.noise_prob
    items[noise] = rng.choice(spec.n_items, int(noise.sum()), p=popularity / popularity.sum())
    repeat = rng.random(session.size) < spec.repeat_prob
    repeat[first_of_session] = False
    idx = np.arange(session.size)
    items[repeat] = items[idx[repeat] - 1]

    etype = EVENT_TYPES[np.minimum(np.searchsorted([0.8, 0.95], rng.random(session.size)), 2)]
    table = pa.table({
        "user_id": pa.array(np.array([f"u{u:07d}" for u in range(spec.n_users)], dtype=object)).take(
            pa.array(s_user[session])),
        "item_id": pa.array(item_ids(spec.n_items)).take(pa.array(items)),
        "ts": pc.cast(pa.array(ts), pa.string()),
        "event_type": pa.array(etype.astype(object)),
    })
    return _with_bad_rows(table, spec, rng)


def _with_bad_rows(table: pa.Table, spec: SampleSpec, rng: np.random.Generator) -> pa.Table:
    n_bad = int(table.num_rows * spec.bad_share)
    per_kind = n_bad // len(BAD_KINDS)
    if per_kind == 0:
        return table
    picks = rng.choice(table.num_rows, size=(len(BAD_KINDS), per_kind), replace=False)
    bad = []
    for kind, rows in zip(BAD_KINDS, picks):
        part = table.take(pa.array(np.sort(rows)))
        if kind == "null_user":
            part = part.set_column(0, "user_id", pa.nulls(per_kind, pa.string()))
        elif kind == "null_item":
            part = part.set_column(1, "item_id", pa.nulls(per_kind, pa.string()))
        elif kind == "unparseable_time":
            part = part.set_column(2, "ts", pa.array(["not-a-time"] * per_kind))
        elif kind == "future_time":
            part = part.set_column(2, "ts", pa.array([str(FUTURE_TS)] * per_kind))
        bad.append(part)
    # Replaced rows leave the log; duplicates are copies added on top.
    keep = np.ones(table.num_rows, dtype=bool)
    keep[picks[:-1].ravel()] = False
    out = pa.concat_tables([table.filter(pa.array(keep))] + bad)
    return out.take(pa.array(rng.permutation(out.num_rows)))


def write_sample(spec: SampleSpec, out_dir: str | Path) -> dict:
    """Write ``events/events.csv``, ``items.csv`` (item_id, cluster) and ``transitions.csv``
    (item_id, next_item_id, probability: the planted edges) under ``out_dir``."""
    out = Path(out_dir)
    (out / "events").mkdir(parents=True, exist_ok=True)
    events = generate_events(spec)
    pacsv.write_csv(events, out / "events" / "events.csv")
    clusters = pa.table({"item_id": pa.array(item_ids(spec.n_items)),
                         "cluster": pa.array(planted_clusters(spec))})
    pacsv.write_csv(clusters, out / "items.csv")
    successors = planted_transitions(spec)
    ids = item_ids(spec.n_items)
    edges = pa.table({"item_id": pa.array(np.repeat(ids, spec.out_degree)),
                      "next_item_id": pa.array(ids[successors.ravel()]),
                      "probability": pa.array(np.tile(edge_probabilities(spec), spec.n_items) * spec.follow_prob)})
    pacsv.write_csv(edges, out / "transitions.csv")
    return {"events": events.num_rows, "path": str(out / "events"), "items": str(out / "items.csv")}

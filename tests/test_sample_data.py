import numpy as np
import pyarrow.compute as pc

from embedlib.sample_data import FUTURE_TS, SampleSpec, generate_events, planted_clusters, planted_transitions


def test_same_seed_same_log_other_seed_other_log():
    spec = SampleSpec(n_events=5000, n_users=50, n_items=100, n_clusters=5)
    assert generate_events(spec).equals(generate_events(spec))
    assert not generate_events(spec).equals(generate_events(SampleSpec(**{**spec.__dict__, "seed": 8})))


def test_bad_rows_and_planted_structure():
    spec = SampleSpec(n_events=20000, n_users=200, n_items=300, n_clusters=6, bad_share=0.05)
    t = generate_events(spec)
    per_kind = pc.sum(pc.equal(t.column("ts"), "not-a-time")).as_py()
    assert abs(per_kind - 200) <= 5  # 5% of ~20k rows over five kinds of bad row
    assert t.column("user_id").null_count == per_kind
    assert t.column("item_id").null_count == per_kind
    assert pc.sum(pc.equal(t.column("ts"), str(FUTURE_TS))).as_py() == per_kind
    # Zipf popularity: the most popular item is far above the median one.
    counts = np.unique(t.column("item_id").drop_null().to_numpy(zero_copy_only=False), return_counts=True)[1]
    assert counts.max() > 10 * np.median(counts)
    assert np.bincount(planted_clusters(spec)).min() == 300 // 6


def _next_is_planted_edge(spec: SampleSpec) -> float:
    """Share of a user's consecutive distinct events (under 30 min apart) that follow an edge."""
    t = generate_events(spec).sort_by([("user_id", "ascending"), ("ts", "ascending")])
    user = t.column("user_id").to_numpy(zero_copy_only=False)
    ts = t.column("ts").to_numpy(zero_copy_only=False).astype(np.int64)
    item = np.array([int(i[1:]) for i in t.column("item_id").to_pylist()])
    pair = (user[1:] == user[:-1]) & (ts[1:] - ts[:-1] <= 1800) & (item[1:] != item[:-1])
    edge = (planted_transitions(spec)[item[:-1]] == item[1:, None]).any(axis=1)
    return float(edge[pair].mean())


def test_sessions_follow_the_planted_transition_graph():
    spec = SampleSpec(n_events=20000, n_users=200, n_items=300, n_clusters=6, bad_share=0)
    successors = planted_transitions(spec)
    cluster = planted_clusters(spec)
    assert successors.shape == (300, spec.out_degree)
    assert (cluster[successors] == cluster[:, None]).all()  # edges stay in the cluster
    assert not (successors == np.arange(300)[:, None]).any()  # no self-edges
    # The previous item predicts the next: far more pairs are edges than without the walk.
    with_walk = _next_is_planted_edge(spec)
    without = _next_is_planted_edge(SampleSpec(**{**spec.__dict__, "follow_prob": 0.0}))
    assert with_walk > 0.5 and with_walk > 2 * without

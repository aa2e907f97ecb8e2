import numpy as np
import pyarrow.compute as pc

from embedlib.sample_data import FUTURE_TS, SampleSpec, generate_events, planted_clusters


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

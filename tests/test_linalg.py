"""The driver-side maths (embedlib.linalg) against numpy/scipy references."""
import numpy as np
import pytest
import scipy.linalg

from embedlib import linalg


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def test_canonical_transforms_match_explicit_svd(rng):
    t, w = rng.normal(size=(200, 6)), rng.normal(size=(150, 6))
    r_t = linalg.cholesky_factor(t.T @ t).r
    r_w = linalg.cholesky_factor(w.T @ w).r
    np.testing.assert_allclose(r_t.T @ r_t, t.T @ t, rtol=1e-10)
    c = linalg.low_rank_svd_transforms(r_t, r_w)
    tc, wc = t @ c.m_t, w @ c.m_w
    s = t @ w.T
    np.testing.assert_allclose(tc @ wc.T, s, atol=1e-10 * np.abs(s).max())
    np.testing.assert_allclose(c.m_t @ c.m_w.T, np.eye(6), atol=1e-10)
    u, sig, _ = np.linalg.svd(s, full_matrices=False)
    np.testing.assert_allclose(c.singular_values, sig[:6], rtol=1e-10)
    # T' = U_S sigma^1/2 up to column signs: T' T'^T is sign free.
    np.testing.assert_allclose(tc @ tc.T, (u[:, :6] * sig[:6]) @ u[:, :6].T, atol=1e-9 * sig[0])
    np.testing.assert_allclose(tc.T @ tc, np.diag(sig[:6]), atol=1e-9 * sig[0])


def test_rank_deficient_gram_falls_back_to_eigh_with_rank(rng):
    base = rng.normal(size=(100, 3))
    t = np.hstack([base, base[:, :1] * 2.0, np.zeros((100, 1))])  # rank 3 of 5
    w = rng.normal(size=(80, 5))
    f = linalg.cholesky_factor(t.T @ t)
    assert (f.rank, f.method) == (3, "eigh") and f.r.shape == (3, 5)
    np.testing.assert_allclose(f.r.T @ f.r, t.T @ t, atol=1e-9 * np.abs(t.T @ t).max())
    c = linalg.low_rank_svd_transforms(f.r, linalg.cholesky_factor(w.T @ w).r)
    assert c.rank == 3 and not np.any(np.isnan(c.m_t))
    np.testing.assert_allclose((t @ c.m_t) @ (w @ c.m_w).T, t @ w.T, atol=1e-9 * np.abs(t @ w.T).max())
    with pytest.raises(linalg.LinalgError, match="rank deficient: numerical rank 3 of 5"):
        linalg.cholesky_factor(t.T @ t, on_deficient="error", name="items")


def test_zero_and_nan_grams_are_clear_errors():
    with pytest.raises(linalg.LinalgError, match="no nonzero vector"):
        linalg.cholesky_factor(np.zeros((3, 3)))
    with pytest.raises(linalg.LinalgError, match="NaN or Inf"):
        linalg.cholesky_factor(np.full((2, 2), np.nan))


def test_procrustes_matches_scipy_and_recovers_rotation(rng):
    a = rng.normal(size=(400, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    b = a @ q + 0.01 * rng.normal(size=(400, 8))
    o = linalg.procrustes_rotation(a.T @ b)
    ref, _ = scipy.linalg.orthogonal_procrustes(a, b)
    np.testing.assert_allclose(o, ref, atol=1e-12)
    np.testing.assert_allclose(o, q, atol=0.01)
    np.testing.assert_allclose(o @ o.T, np.eye(8), atol=1e-12)
    res = linalg.alignment_residual(np.sum(a ** 2), a.T @ b, np.sum(b ** 2), o)
    assert res == pytest.approx(np.linalg.norm(a @ o - b) / np.linalg.norm(b), rel=1e-8)

"""The one linear-algebra module: the e x e maths on the driver, numpy and scipy only.

The Cholesky factor of a Gram matrix as the R of a QR that is never computed (with an
eigen-decomposition fallback for (near) singular Grams); the low-rank SVD of S = T W^T from
two such factors; the orthogonal Procrustes rotation and its residual; row cosines. All in
float64, on matrices of the vectors' dimension e, never of their number n. The passes over
the n x e data that produce the Gram matrices are in ``spark_passes``; docs/stabilization.md
derives both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from embedlib.errors import EmbedlibError


class LinalgError(EmbedlibError):
    """The vectors cannot give a meaningful result (rank, NaN, shapes); the message says why."""


def smoothed(aligned: np.ndarray, parent: np.ndarray, beta: float) -> np.ndarray:
    """Temporal smoothing (``stabilize.smoothing`` = beta): beta * aligned + (1 - beta) * parent,
    row by row; what is published for an id the parent has (docs/stabilization.md)."""
    return beta * aligned + (1.0 - beta) * parent


def versions_to_90pct(beta: float) -> float:
    """Versions a changed item needs to move 90% of the way to its new vector under smoothing
    beta < 1: log(0.1) / log(1 - beta)."""
    return float(np.log(0.1) / np.log(1.0 - beta))


def paired_cosines(a: np.ndarray, b: np.ndarray, b_norm: np.ndarray | None = None) -> np.ndarray:
    """Row i: cos(a[i], b[i]), 0 where either row is zero. ``b_norm``: b's row norms, when known."""
    b_norm = np.linalg.norm(b, axis=1) if b_norm is None else b_norm
    denom = np.linalg.norm(a, axis=1) * b_norm
    return np.divide(np.einsum("ij,ij->i", a, b), denom, out=np.zeros(len(denom)), where=denom > 0)


@dataclass
class Factor:
    """R with R^T R ~= G: (rank, e); the Cholesky factor when G is well conditioned.

    Attributes
    ----------
    r : ndarray, shape (rank, e), float64
        Upper triangular for "cholesky"; for "eigh", rows by decreasing eigenvalue.
    rank : int
    method : {"cholesky", "eigh"}
    condition : float
        Largest / smallest eigenvalue of G; inf when G is singular.
    """

    r: np.ndarray
    rank: int
    method: str  # "cholesky" or "eigh"
    condition: float  # eigenvalue ratio of G (inf when singular)


def cholesky_factor(gram_matrix: np.ndarray, rcond: float = 1e-10, on_deficient: str = "eigh",
                    name: str = "matrix") -> Factor:
    """A square root R of the Gram matrix G (R^T R = G), the R of a QR never computed.

    Cholesky when the smallest eigenvalue of G is above ``rcond`` times the largest;
    otherwise ``on_deficient='eigh'`` returns diag(sqrt(w_r)) V_r^T over the r eigenvalues
    above that threshold (shape (r, e)), and ``'error'`` raises LinalgError.

    Parameters
    ----------
    gram_matrix : ndarray, shape (e, e)
        Symmetric positive semi-definite; symmetrized and used as float64.
    rcond : float
    on_deficient : {"eigh", "error"}
    name : str
        What G is the Gram matrix of, for error messages.

    Returns
    -------
    Factor

    Raises
    ------
    LinalgError
        G has NaN/Inf entries, is zero, or is rank deficient with ``on_deficient='error'``.
    """
    g = (np.asarray(gram_matrix, dtype=np.float64) + np.asarray(gram_matrix, dtype=np.float64).T) / 2
    if not np.all(np.isfinite(g)):
        raise LinalgError(f"the Gram matrix of {name} has NaN or Inf entries")
    w, v = np.linalg.eigh(g)
    top = w[-1] if w.size else 0.0
    if top <= 0:
        raise LinalgError(f"{name} has no nonzero vector (its Gram matrix is zero)")
    condition = float(top / w[0]) if w[0] > 0 else float("inf")
    if w[0] > rcond * top:
        try:
            return Factor(scipy.linalg.cholesky(g, lower=False), g.shape[0], "cholesky", condition)
        except np.linalg.LinAlgError:
            pass
    keep = w > rcond * top
    rank = int(keep.sum())
    if on_deficient == "error":
        raise LinalgError(
            f"{name} is rank deficient: numerical rank {rank} of {g.shape[0]} "
            f"(Gram eigenvalue ratio {condition:.3g}, threshold 1/rcond = {1 / rcond:.3g}); "
            "set stabilize.on_rank_deficient=eigh to continue with the reduced rank")
    r = np.sqrt(w[keep])[:, None] * v[:, keep].T
    return Factor(r[::-1].copy(), rank, "eigh", condition)


@dataclass
class CanonicalTransforms:
    """T' = T m_t, W' = W m_w with T' W'^T = T W^T and T'^T T' = W'^T W' = diag(sigma).

    Attributes
    ----------
    m_t, m_w : ndarray, shape (e, e), float64
        Columns past ``rank`` are zero.
    singular_values : ndarray, shape (rank,), float64
        sigma, descending.
    rank : int
    """

    m_t: np.ndarray  # (e, e)
    m_w: np.ndarray  # (e, e)
    singular_values: np.ndarray  # (rank,)
    rank: int


def low_rank_svd_transforms(r_t: np.ndarray, r_w: np.ndarray, rtol: float = 1e-12) -> CanonicalTransforms:
    """The e x e maps to the canonical pair of S = T W^T, from R_T (r_t x e) and R_W (r_w x e).

    With R_T R_W^T = U S V^T: M_T = R_W^T V S^-1/2 and M_W = R_T^T U S^-1/2 (no inverse of R).
    Singular values at or below ``rtol`` times the largest are a rank loss: those columns are
    zero (the canonical vectors have ``rank`` meaningful dimensions).

    Parameters
    ----------
    r_t : ndarray, shape (p, e), float64
        R_T with R_T^T R_T = T^T T (``Factor.r``).
    r_w : ndarray, shape (q, e), float64
        R_W with R_W^T R_W = W^T W.
    rtol : float

    Returns
    -------
    CanonicalTransforms

    Raises
    ------
    LinalgError
        T W^T is zero.
    """
    e = r_t.shape[1]
    u, s, vt = np.linalg.svd(r_t @ r_w.T, full_matrices=False)
    keep = s > rtol * (s[0] if s.size else 0.0)
    rank = int(keep.sum())
    if rank == 0:
        raise LinalgError("the score matrix T W^T is zero: nothing to canonicalize")
    inv_sqrt = 1.0 / np.sqrt(s[keep])
    m_t, m_w = np.zeros((e, e)), np.zeros((e, e))
    m_t[:, :rank] = r_w.T @ vt[keep].T * inv_sqrt
    m_w[:, :rank] = r_t.T @ u[:, keep] * inv_sqrt
    return CanonicalTransforms(m_t, m_w, s[keep], rank)


def canonical_pair_transforms(t: np.ndarray, w: np.ndarray, rcond: float = 1e-10,
                              names: tuple[str, str] = ("items", "context")) -> CanonicalTransforms:
    """``low_rank_svd_transforms`` for two matrices in memory (rows of T and W, not their Grams).

    For a model held by one process (an ensemble member, a benchmark): the Gram matrices are
    formed here in float64 and factored by ``cholesky_factor`` (eigh past ``rcond``).
    """
    t, w = np.asarray(t, dtype=np.float64), np.asarray(w, dtype=np.float64)
    f_t = cholesky_factor(t.T @ t, rcond, "eigh", names[0])
    f_w = cholesky_factor(w.T @ w, rcond, "eigh", names[1])
    return low_rank_svd_transforms(f_t.r, f_w.r)


def procrustes_rotation(cross: np.ndarray) -> np.ndarray:
    """The orthogonal O minimizing ||A O - B||_F, from the cross-Gram A^T B: O = U V^T.

    Parameters
    ----------
    cross : ndarray, shape (e, e)
        A^T B (``CrossGram.cross``).

    Returns
    -------
    ndarray, shape (e, e), float64

    Raises
    ------
    LinalgError
        ``cross`` has NaN/Inf entries.
    """
    if not np.all(np.isfinite(cross)):
        raise LinalgError("the cross-Gram matrix has NaN or Inf entries")
    u, _, vt = np.linalg.svd(cross)
    return u @ vt


def alignment_residual(sq_norm_a: float, cross: np.ndarray, sq_norm_b: float, o: np.ndarray) -> float:
    """||A O - B||_F / ||B||_F from ||A||^2, A^T B and ||B||^2 (O orthogonal: ||A O|| = ||A||).

    Parameters
    ----------
    sq_norm_a, sq_norm_b : float
        ||A||_F^2 and ||B||_F^2.
    cross : ndarray, shape (e, e)
        A^T B.
    o : ndarray, shape (e, e)
        Orthogonal.

    Returns
    -------
    float
        NaN when ||B|| is 0.
    """
    sq = sq_norm_a - 2 * np.trace(o.T @ cross) + sq_norm_b
    return float(np.sqrt(max(sq, 0.0) / sq_norm_b)) if sq_norm_b > 0 else float("nan")

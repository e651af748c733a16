"""Monomial bases for SOS constraints from the Newton polytope (Reznick's half-polytope theorem).

If p = sum_i q_i^2 then every monomial of every q_i lies in (1/2) New(p), New(p) = conv(support of p).
Keeping only those monomials, then dropping the ones whose Gram diagonal entry is forced to zero
("diagonal consistency": 2b is neither in the support nor a sum b_i + b_j of two other basis
monomials), gives bases that are often much smaller than all monomials of degree <= deg(p)/2, so the
semidefinite program is smaller and better conditioned.
"""
from __future__ import annotations

import numpy as np

from .polynomial import Indeterminate, Monomial, Polynomial, exponents_up_to


def encode_rows(E: np.ndarray, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Injective int64 keys for non-negative integer rows (mixed radix); returns (keys, base)."""
    E = np.asarray(E, dtype=np.int64)
    n = E.shape[1]
    if base is None:
        base = (E.max(0) + 1) if E.size else np.ones(n, dtype=np.int64)
    weights = np.ones(n, dtype=np.int64)
    total = 1.0
    for j in range(n - 1, -1, -1):
        weights[j] = int(total)
        total *= float(base[j])
    if total >= 2.0 ** 62:
        raise ValueError("monomial exponents too large to index (more than 2^62 distinct monomials)")
    return (E @ weights if n else np.zeros(len(E), dtype=np.int64)), base


def row_keys(E: np.ndarray) -> np.ndarray:
    """One hashable key per integer row (the row's int64 bytes as a numpy void scalar); unlike
    ``encode_rows`` it works for any number of columns."""
    E = np.ascontiguousarray(E, dtype=np.int64)
    if E.shape[1] == 0:
        return np.zeros(len(E), dtype="V1")
    return E.view(np.dtype((np.void, E.dtype.itemsize * E.shape[1]))).reshape(-1)


def unique_rows(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique rows (u, n), inverse (t,)) like ``np.unique(E, axis=0, return_inverse=True)``, but one
    1-D sort of row keys (several times faster on small arrays); the order of the unique rows is not
    lexicographic."""
    E = np.ascontiguousarray(E, dtype=np.int64)
    _, first, inv = np.unique(row_keys(E), return_index=True, return_inverse=True)
    return E[first], inv.reshape(-1)


def _inside_polygon(P: np.ndarray, Y: np.ndarray, tol: float) -> np.ndarray:
    """Which points Y (c, 2) lie in the convex hull of P (t, 2): on the inner side of every line
    through two points of P that has all of P on one side. Vectorised over the t^2 / 2 pairs, it costs
    microseconds where building a qhull object costs milliseconds (the tiny SOS programs' bottleneck)."""
    i, j = np.triu_indices(len(P), 1)
    d = P[j] - P[i]
    nrm = np.stack([-d[:, 1], d[:, 0]], 1)
    off = (P[i] * nrm).sum(1)
    side = P @ nrm.T - off                       # (t, pairs)
    below, above = (side <= tol).all(0), (side >= -tol).all(0)
    sy = Y @ nrm.T - off                         # (c, pairs)
    return ((sy <= tol) | ~below).all(1) & ((sy >= -tol) | ~above).all(1)


def _inside_hull(S: np.ndarray, C: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Which rows of C lie in conv(rows of S); exact-enough for small integer points."""
    S = np.asarray(S, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if len(C) == 0:
        return np.zeros(0, dtype=bool)
    s0 = S.mean(0)
    D = S - s0
    X = C - s0
    if S.shape[1] == 0:
        return np.ones(len(C), dtype=bool)
    if len(D) < D.shape[1]:  # pad with zero rows so the reduced SVD still returns all of V
        D = np.vstack([D, np.zeros((D.shape[1] - len(D), D.shape[1]))])
    _, sv, Vt = np.linalg.svd(D, full_matrices=False)  # (never U: it would be t x t)
    D = D[:len(S)]
    scale = max(1.0, float(np.abs(S).max()))
    r = int((sv > 1e-9 * scale).sum()) if len(sv) else 0
    inside = np.ones(len(C), dtype=bool)
    if r < S.shape[1]:  # off the affine hull of the support
        inside &= np.abs(X @ Vt[r:].T).max(1) <= tol * scale * 10
    if r == 0:
        return inside
    P, Y = D @ Vt[:r].T, X @ Vt[:r].T
    if r == 1:
        return inside & (Y[:, 0] >= P[:, 0].min() - tol * scale) & (Y[:, 0] <= P[:, 0].max() + tol * scale)
    if r == 2 and len(P) <= 200:
        return inside & _inside_polygon(P, Y, tol * scale * scale)
    if r <= 7:
        try:
            from scipy.spatial import ConvexHull

            hull = ConvexHull(P)
            eq = hull.equations
            return inside & ((Y @ eq[:, :-1].T + eq[:, -1]) <= 1e-7 * scale).all(1)
        except Exception:  # degenerate for qhull: fall through to linear programs
            pass
    from scipy.optimize import linprog

    A_eq = np.vstack([S.T, np.ones((1, len(S)))])
    for i in np.flatnonzero(inside):
        res = linprog(np.zeros(len(S)), A_eq=A_eq, b_eq=np.r_[C[i], 1.0], bounds=(0, None), method="highs")
        inside[i] = res.status == 0
    return inside


def newton_half_basis(support: np.ndarray, prune: bool = True) -> np.ndarray:
    """Exponents b (k, n) with 2b in conv(support), optionally diagonally pruned; graded order."""
    S = np.unique(np.asarray(support, dtype=np.int64).reshape(len(support), -1), axis=0)
    n = S.shape[1]
    if len(S) == 0:
        return np.zeros((0, n), dtype=np.int64)
    deg = S.sum(1)
    dmin, dmax = int(-(-deg.min() // 2)), int(deg.max() // 2)
    if dmax < dmin:
        return np.zeros((0, n), dtype=np.int64)
    cand = exponents_up_to(n, dmax, dmin)
    lo, hi = -(-S.min(0) // 2), S.max(0) // 2
    cand = cand[((cand >= lo) & (cand <= hi)).all(1)]
    B = cand[_inside_hull(S, 2 * cand)]
    if prune and len(B):
        B = diagonal_prune(B, S)
    return B


def diagonal_prune(B: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Drop basis rows b whose square 2b is not in S and is no sum of two distinct basis rows; iterate."""
    base = np.maximum(2 * B.max(0), S.max(0)) + 1
    s_keys = set(encode_rows(S, base)[0].tolist())
    while len(B) > 0:
        keys, _ = encode_rows(B, base)
        iu, ju = np.triu_indices(len(B), 1)
        off = set((keys[iu] + keys[ju]).tolist())  # keys are linear in exponents
        sq = (2 * keys).tolist()
        keep = np.array([k in s_keys or k in off for k in sq], dtype=bool)
        if keep.all():
            break
        B = B[keep]
    return B


def sos_basis(p: Polynomial, prune: bool = True) -> tuple[list[Monomial], list[Indeterminate]]:
    """Newton-polytope monomial basis for an SOS constraint on ``p`` (coefficients may be affine)."""
    xs = p.indeterminates()
    monos = list(p._t)
    S = np.array([Monomial._wrap(m).exponents(xs) for m in monos], dtype=np.int64).reshape(len(monos), len(xs))
    B = newton_half_basis(S, prune)
    uids = [x.uid for x in xs]
    return [Monomial(zip(uids, row)) for row in B.tolist()], xs

"""Certificates that are proofs: exact integer arithmetic on the float data, no tolerance on trust.

For min x^T Q x s.t. x^T A_i x = b_i (A_0 = e0 e0^T, b_0 = 1) and float multipliers l:
- lower bound: if H' = Q + sum_i l_i A_i + delta A_0 is positive definite, every feasible x has
  x^T Q x = x^T H' x - l^T b - delta >= -l^T b - delta. H' is the float H lifted along e0 by a tiny
  delta (H itself is singular at a tight optimum, H x = 0); positive definiteness is decided exactly by
  the signs of the leading principal minors, computed by fraction-free (Bareiss) elimination on the
  integer matrix 2^S H' (every float is a dyadic rational, so the scaling is exact).
- upper bound: the cost of an exactly feasible point X / den with integer X, checked exactly.
The proven gap upper - lower bounds how far that point is from the global optimum of the float
problem. ``exact_rotation`` gives the feasible point for rotations: a Cayley map of a dyadic vector,
exactly orthonormal with det +1, composed with a 180-degree flip so the Cayley map stays well inside
its domain.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import torch

from .certificate import Certificate

# 180-degree flips (and identity): one of them is within 120 degrees of any rotation
_FLIPS = [np.diag(d).astype(np.int64) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])]


def positive_definite(M: Sequence[Sequence[int]]) -> bool:
    """Exact test that a symmetric integer matrix is positive definite (all leading principal minors
    > 0, Sylvester), by Bareiss elimination: every division is exact, no rounding anywhere."""
    A = [[int(v) for v in row] for row in M]
    if any(A[i][j] != A[j][i] for i in range(len(A)) for j in range(i)):
        raise ValueError("positive_definite needs a symmetric matrix")
    n, prev = len(A), 1
    for k in range(n):  # symmetric: only the upper triangle (j >= i) is updated
        p = A[k][k]
        if p <= 0:
            return False
        Ak = A[k]
        for i in range(k + 1, n):
            Ai, aki = A[i], Ak[i]
            for j in range(i, n):
                Ai[j] = (p * Ai[j] - aki * Ak[j]) // prev
        prev = p
    return True


def positive_definite_rounded(H: list[list[int]], S: int, bits: int = 64) -> bool:
    """Exact sufficient test that the symmetric matrix H / 2^S is positive definite, on short integers.

    H / 2^S = Hr / 2^g + E with Hr = floor(H / 2^(S - g)) and 0 <= E_ij < 2^-g, so
    ||E||_2 <= ||E||_F < n 2^-g and H / 2^S >= (Hr - n I) / 2^g; the latter is tested exactly. g is
    chosen so that the largest entry keeps ``bits`` bits: Bareiss then works on ~64-bit numbers
    instead of the data's few hundred bits (data with tiny entries have large S)."""
    n = len(H)
    big = max(abs(v) for row in H for v in row).bit_length()
    drop = max(0, big - bits)
    if drop == 0:
        return positive_definite(H)
    Hr = [[v >> drop for v in row] for row in H]
    for i in range(n):
        Hr[i][i] -= n
    return positive_definite(Hr)


def dyadic(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact integer form of a float array: (integers as an object array, S) with a = ints / 2^S."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("cannot verify: the data contain NaN or inf")
    mant, ex = np.frexp(a)
    m = (mant * 2.0 ** 53).astype(np.int64)  # exact: 53-bit mantissas
    nz = m != 0
    S = int(53 - ex[nz].min()) if nz.any() else 0
    S = max(S, 0)
    out = np.empty(a.shape, dtype=object)
    flat_m, flat_e = m.reshape(-1).tolist(), (ex - 53 + S).reshape(-1).tolist()
    out.reshape(-1)[:] = [mi << ei if mi else 0 for mi, ei in zip(flat_m, flat_e)]
    return out, S


def exact_rotation(R: np.ndarray, bits: int = 30) -> tuple[np.ndarray, int]:
    """An exactly orthonormal rational rotation near R (3, 3): (integer matrix, denominator).

    R_hat = F C(v): F a flip with tr(F^T R) >= 0, C(v) = ((D^2 + |p|^2) I + 2 D [p]x + 2 [p]x^2) /
    (D^2 + |p|^2) the Cayley map of v = p / D, D = 2^bits, p integer (v from the inverse Cayley map of
    F^T R, rounded). C(v) is orthonormal with det +1 for every rational v."""
    R = np.asarray(R, dtype=np.float64)
    F = max(_FLIPS, key=lambda F: float(np.trace(F.T @ R)))
    G = F.T @ R
    v = np.array([G[2, 1] - G[1, 2], G[0, 2] - G[2, 0], G[1, 0] - G[0, 1]]) / (1.0 + np.trace(G))
    D = 1 << bits
    p = [int(round(float(c) * D)) for c in v]
    S = np.array([[0, -p[2], p[1]], [p[2], 0, -p[0]], [-p[1], p[0], 0]], dtype=object)
    N = D * D + sum(c * c for c in p)
    C = N * np.eye(3, dtype=np.int64).astype(object) + 2 * D * S + 2 * S.dot(S)
    return F.astype(object).dot(C), N


class ExactConstraints:
    """The constraints x^T A_i x = b_i as exact integers, converted once per batch: the nonzeros of
    2^sa A_i and 2^sb b_i (A_0 must be the homogenizing e0 e0^T, b_0 = 1)."""

    def __init__(self, A: np.ndarray, b: np.ndarray):
        A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if A.ndim != 3 or A.shape[1] != A.shape[2] or len(b) != len(A) or not np.array_equal(A, A.transpose(0, 2, 1)):
            raise ValueError(f"constraints must be exactly symmetric (m, n, n) matrices with b (m,), got {A.shape}, "
                             f"{b.shape}")
        if not (A[0][0, 0] == 1 and np.count_nonzero(A[0]) == 1 and b[0] == 1):
            raise ValueError("the first constraint must be the homogenizing x0^2 = 1")
        self.n = A.shape[-1]
        Ai, self.sa = dyadic(A)
        self.nz = [[(int(r), int(c), int(Ai[k, r, c])) for r, c in zip(*np.nonzero(A[k]))] for k in range(len(A))]
        bi, self.sb = dyadic(b)
        self.b = [int(v) for v in bi]

    def quad(self, k: int, X) -> int:
        """2^sa X^T A_k X for an integer vector X."""
        return sum(v * X[r] * X[c] for r, c, v in self.nz[k])


def verify_point(Q: np.ndarray, cons: ExactConstraints, lam: np.ndarray, X: Sequence[int], den: int,
                 deltas: Sequence[float] = (1e-15, 1e-14, 1e-13, 1e-12)
                 ) -> tuple[bool, Fraction | None, Fraction | None, str]:
    """(H' proven positive definite, proven lower bound, exact cost of X / den, reason) for one item.

    Q (n, n) exactly symmetric and lam (m,) floats; X (n,) integers. The smallest delta in ``deltas``
    (times 1 + |x|^2) that makes H' provably positive definite is used. The lower bound is None when
    nothing was proven, the cost None when X / den is not exactly feasible."""
    n = cons.n
    Q = np.asarray(Q, dtype=np.float64)
    if Q.shape != (n, n) or not np.array_equal(Q, Q.T):
        raise ValueError(f"Q must be an exactly symmetric ({n}, {n}) matrix")
    X = [int(v) for v in X]
    Qi, sq = dyadic(Q)
    li, sl = dyadic(lam)
    li = [int(v) for v in li]
    feasible = all(cons.quad(k, X) << cons.sb == (bk * den * den) << cons.sa for k, bk in enumerate(cons.b))
    Xo = np.array(X, dtype=object)
    cost = Fraction(int(Xo.dot(Qi.dot(Xo))), (1 << sq) * den * den) if feasible else None
    lb = -Fraction(sum(l * bk for l, bk in zip(li, cons.b)), 1 << (sl + cons.sb))
    S = max(sq, sl + cons.sa)
    H = [[int(v) << (S - sq) for v in row] for row in Qi.tolist()]
    up = S - sl - cons.sa
    for l, nz in zip(li, cons.nz):
        for r, c, v in nz:
            H[r][c] += (l * v) << up
    xf = np.array([X[i] / den for i in range(n)], dtype=np.float64)
    scale = 1.0 + float(xf @ xf)
    for d in deltas:
        dd, sd = dyadic(np.array([d * scale]))
        top = max(S, sd)
        Hd = [[v << (top - S) for v in row] for row in H]
        Hd[0][0] += int(dd[0]) << (top - sd)
        if positive_definite_rounded(Hd, top):
            lower = lb - Fraction(int(dd[0]), 1 << sd)
            return True, lower, cost, "" if feasible else "the candidate point is not exactly feasible"
    return False, None, cost, "H + delta e0 e0^T is not positive definite (not a proof of optimality)"


def verify_certificate(Q: torch.Tensor, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, cert: Certificate,
                       exact_point: Callable[[np.ndarray], tuple[np.ndarray, int]] | None = None,
                       gap_tol: float = 1e-11) -> Certificate:
    """Attach ``verified`` (B,) and ``proven_gap`` (B,) to a certificate, in place, and return it.

    Q (B, n, n) the cost the multipliers belong to (the unit-norm one of ``certify``), A (B or 1, m, n, n),
    b (m,), x (B, n) the candidates. ``exact_point(x) -> (X, den)`` rounds a candidate to an exactly
    feasible rational point (default: x itself, exact as floats). Verified when H' is proven positive
    definite and the proven gap (exact cost of the rounded point minus the proven lower bound, in the
    units of Q) is at most ``gap_tol``."""
    Bn = x.shape[0]
    Qn = Q.detach().double().cpu().numpy()
    An = A.detach().double().cpu().numpy()
    bn = b.detach().double().cpu().numpy()
    ln = cert.multipliers.detach().double().cpu().numpy()
    xn = x.detach().double().cpu().numpy()
    cons = ExactConstraints(An[0], bn)
    shared = An.shape[0] == 1 or all(np.array_equal(An[0], An[i]) for i in range(1, An.shape[0]))
    verified = torch.zeros(Bn, dtype=torch.bool)
    gap = torch.full((Bn,), math.inf, dtype=torch.float64)
    for i in range(Bn):
        if ln.shape[-1] != An.shape[-3] or not np.isfinite(xn[i]).all() or not np.isfinite(ln[i]).all():
            continue
        if exact_point is not None:
            X, den = exact_point(xn[i])
        else:
            X, S = dyadic(xn[i])
            den = 1 << S
        ok, lower, upper, _ = verify_point(Qn[i], cons if shared else ExactConstraints(An[i], bn), ln[i], X, den)
        if ok and upper is not None:
            gap[i] = float(upper - lower)
            verified[i] = gap[i] <= gap_tol
    dev = cert.certified.device
    cert.verified, cert.proven_gap = verified.to(dev), gap.to(dev, cert.gap.dtype)
    return cert


def exact_pose_point(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Exactly feasible [1, vec(R_hat), t] (column-major vec) near a pose vector x (13,): (X, den)."""
    R = x[1:10].reshape(3, 3).T
    Rn, N = exact_rotation(R)
    t, S = dyadic(x[10:13])
    den = N << S
    return np.concatenate([[den], Rn.T.reshape(-1) * (1 << S), t * N]).astype(object), den


def verify_qcqp(Q: torch.Tensor, x: torch.Tensor, cert: Certificate, qcqp,
                exact_point: Callable[[np.ndarray], tuple[np.ndarray, int]] | None = None,
                gap_tol: float = 1e-11) -> Certificate:
    """``verify_certificate`` for the output of an ``SDPRLayer``: Q (B, n, n) unscaled (scaled to unit
    Frobenius norm here exactly as the layer does, so the multipliers fit), x (B, n), the layer's QCQP."""
    Q = Q.detach()
    scale = Q.flatten(1).norm(dim=-1).clamp_min(torch.finfo(Q.dtype).tiny)
    A, b = qcqp.constraints((), 1, Q.dtype, Q.device)
    return verify_certificate(Q / scale.view(-1, 1, 1), A, b, x, cert, exact_point, gap_tol)

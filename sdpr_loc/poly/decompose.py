"""Sum-of-squares decomposition of a Gram matrix: z^T Q z = sum_i w_i q_i(x)^2.

LDL^T with diagonal pivoting gives few, sparse squares (q_i has a leading coefficient 1 on its pivot
monomial), the form textbooks print; the eigen-decomposition gives orthogonal squares. Both drop
pivots / eigenvalues below ``tol`` (relative), which is where a numerical Gram matrix stops being
meaningful; ``residual`` says how much of Q was dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .polynomial import Monomial, Polynomial


@dataclass
class SOSDecomposition:
    """w_i and q_i = coefficients[i] @ z for the basis z; ``polynomial()`` rebuilds sum w_i q_i^2.

    Attributes:
        weights: (r,) positive weights w_i.
        coefficients: (r, k) coefficients of each q_i in the basis.
        basis: the k basis monomials z.
        residual: spectral norm of the part of Q not represented (dropped pivots / eigenvalues).
        min_eig: smallest eigenvalue of Q (negative means Q was not numerically PSD).
    """

    weights: np.ndarray
    coefficients: np.ndarray
    basis: list[Monomial]
    residual: float
    min_eig: float

    def squares(self) -> list[Polynomial]:
        """The polynomials q_i."""
        zs = [m.to_polynomial() for m in self.basis]
        out = []
        for row in self.coefficients:
            q = Polynomial(0)
            for c, z in zip(row.tolist(), zs):
                if c != 0.0:
                    q = q + c * z
            out.append(q)
        return out

    def polynomial(self) -> Polynomial:
        """sum_i w_i q_i^2 (float coefficients)."""
        p = Polynomial(0)
        for w, q in zip(self.weights.tolist(), self.squares()):
            p = p + w * q * q
        return p

    def __len__(self) -> int:
        return len(self.weights)

    def __str__(self) -> str:
        if not len(self.weights):
            return "0"
        return " + ".join(f"{w:.6g}*({q})^2" for w, q in zip(self.weights.tolist(), self.squares()))


def ldl_pivoted(Q: np.ndarray, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q ~= sum_i d_i l_i l_i^T with diagonal pivoting; stops when the largest remaining pivot is
    below tol * max|diag|. Returns (d (r,), L (r, k) with l_i[pivot_i] = 1, remaining Schur complement)."""
    A = np.array(Q, dtype=np.float64, copy=True)
    k = len(A)
    scale = max(float(np.abs(np.diag(A)).max()) if k else 0.0, 1e-300)
    active = np.ones(k, dtype=bool)
    ds, Ls = [], []
    for _ in range(k):
        diag = np.where(active, np.diag(A), -np.inf)
        j = int(np.argmax(diag))
        d = diag[j]
        if not d > tol * scale:
            break
        l = np.where(active, A[:, j] / d, 0.0)
        ds.append(d)
        Ls.append(l)
        idx = np.flatnonzero(active)
        A[np.ix_(idx, idx)] -= d * np.outer(l[idx], l[idx])
        active[j] = False
        A[j, :] = 0.0
        A[:, j] = 0.0
    return np.array(ds), np.array(Ls).reshape(len(ds), k), A


def _clean_rows(C: np.ndarray, rel: float = 1e-11) -> np.ndarray:
    """Zero coefficients below rel * the row's largest: solver round-off, not structure."""
    if C.size:
        C = np.where(np.abs(C) < rel * np.abs(C).max(1, keepdims=True), 0.0, C)
    return C


def sos_decomposition(Q, basis, method: str = "ldl", tol: float = 1e-9) -> SOSDecomposition:
    """Decompose a (numerical) PSD Gram matrix ``Q (k, k)`` over ``basis`` (k monomials).

    method: "ldl" (pivoted LDL^T, sparse squares) or "eig" (eigenvectors, orthogonal squares).
    """
    Q = np.asarray(Q, dtype=np.float64)
    basis = [b if isinstance(b, Monomial) else Monomial(b) for b in basis]
    if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
        raise ValueError(f"Gram matrix must be square, got shape {Q.shape}")
    if Q.shape[0] != len(basis):
        raise ValueError(f"Gram matrix is {Q.shape[0]}x{Q.shape[0]} but the basis has {len(basis)} monomials")
    if not np.isfinite(Q).all():
        raise ValueError("Gram matrix contains NaN or inf")
    Q = 0.5 * (Q + Q.T)
    k = len(Q)
    ev = np.linalg.eigvalsh(Q) if k else np.zeros(0)
    min_eig = float(ev[0]) if k else 0.0
    if method == "ldl":
        d, L, rest = ldl_pivoted(Q, tol)
        L = _clean_rows(L)
        residual = float(np.abs(np.linalg.eigvalsh(rest)).max()) if k else 0.0
        return SOSDecomposition(d, L, basis, residual, min_eig)
    if method == "eig":
        w, V = np.linalg.eigh(Q) if k else (np.zeros(0), np.zeros((0, 0)))
        keep = w > tol * max(float(np.abs(w).max()) if k else 0.0, 1e-300)
        C = V[:, keep].T
        wk = w[keep]
        # scale each q_i so that its largest coefficient is 1 (readable), moving the scale into w_i
        if len(wk):
            lead = C[np.arange(len(C)), np.abs(C).argmax(1)]
            C = _clean_rows(C / lead[:, None])
            wk = wk * lead ** 2
        residual = float(np.abs(w[~keep]).max()) if (~keep).any() else 0.0
        return SOSDecomposition(wk, C, basis, residual, min_eig)
    raise ValueError(f"unknown decomposition method {method!r}; choose 'ldl' or 'eig'")

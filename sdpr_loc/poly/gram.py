"""Gram matrices: p(x) = z(x)^T Q z(x) with z a monomial basis and Q PSD.

A Gram matrix of size k owns k(k+1)/2 decision variables, its upper triangle in row-major order.
Coefficient matching is linear and sparse: the coefficient of monomial m in z^T Q z is
sum over i <= j with z_i z_j = m of c_ij Q_ij (c = 1 on the diagonal, 2 off it); the helpers below build
that map with numpy instead of expanding polynomials term by term.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .newton import unique_rows
from .polynomial import Indeterminate, Monomial, Polynomial, Variable


@lru_cache(maxsize=64)
def triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major upper-triangle indices (i <= j) of a k x k matrix; read-only arrays."""
    iu, ju = np.triu_indices(k)
    iu.flags.writeable = False
    ju.flags.writeable = False
    return iu, ju


def tri_index(i: int, j: int, k: int) -> int:
    """Position of entry (i, j) (either order) in the row-major upper-triangle vector."""
    if i > j:
        i, j = j, i
    return i * k - i * (i - 1) // 2 + (j - i)


def tri_position(off: int, k: int) -> tuple[int, int]:
    """Inverse of ``tri_index``: entry (i, j), i <= j, at position ``off`` of the upper triangle."""
    i = 0
    while off >= k - i:
        off -= k - i
        i += 1
    return i, i + off


def upper_to_matrix(v: np.ndarray, k: int) -> np.ndarray:
    """Symmetric (k, k) matrix from its row-major upper triangle."""
    iu, ju = triu(k)
    Q = np.zeros((k, k), dtype=np.result_type(v, np.float64))
    Q[iu, ju] = v
    Q[ju, iu] = v
    return Q


def pair_monomials(B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique product exponents (u, n), row of each upper-triangle pair (G,), multiplicities (G,))."""
    k = len(B)
    iu, ju = triu(k)
    E = B[iu] + B[ju]
    if len(E) == 0:
        return np.zeros((0, B.shape[1]), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    U, inv = unique_rows(E)
    return U, inv, np.where(iu == ju, 1.0, 2.0)


class Gram:
    """Handle on a PSD Gram matrix of a program: basis, size, entries as decision variables.

    ``gram[i, j]`` is the decision variable Q_ij; ``gram.polynomial()`` is z^T Q z; a solved
    ``Result.value(gram)`` gives the numeric matrix.
    """

    def __init__(self, index: int, basis_exps: np.ndarray, indeterminates: list[Indeterminate],
                 start_uid: int, col0: int, constrained: Polynomial | None):
        self.index = index
        order = np.argsort([x.uid for x in indeterminates], kind="stable")  # canonical monomial tuples
        E = np.asarray(basis_exps, dtype=np.int64).reshape(-1, len(order))
        self.exps = E[:, order]
        self.indeterminates = [indeterminates[i] for i in order]
        self.start_uid, self.col0 = start_uid, col0
        self.constrained = constrained  # the polynomial this Gram matrix certifies, if any

    @property
    def size(self) -> int:
        return len(self.exps)

    @property
    def n_entries(self) -> int:
        return self.size * (self.size + 1) // 2

    @property
    def basis(self) -> list[Monomial]:
        uids = [x.uid for x in self.indeterminates]
        return [Monomial(zip(uids, row)) for row in self.exps.tolist()]

    def __getitem__(self, ij) -> Variable:
        i, j = ij
        k = self.size
        if not (0 <= i < k and 0 <= j < k):
            raise ValueError(f"Gram index {ij} out of range for a {k}x{k} matrix")
        return Variable(_uid=self.start_uid + tri_index(int(i), int(j), k))

    def trace(self) -> Polynomial:
        return Polynomial._raw({(): {self.start_uid + tri_index(i, i, self.size): 1 for i in range(self.size)}}
                               if self.size else {})

    def polynomial(self) -> Polynomial:
        """z^T Q z with Q's entries as decision variables (vectorised expansion)."""
        U, rows, mult = pair_monomials(self.exps)
        uids = [x.uid for x in self.indeterminates]
        monos = [tuple((u, e) for u, e in zip(uids, r) if e) for r in U.tolist()]
        t: dict = {m: {} for m in monos}
        for g, (r, c) in enumerate(zip(rows.tolist(), mult.tolist())):
            t[monos[r]][self.start_uid + g] = 1 if c == 1.0 else 2
        return Polynomial._raw(t)

    def __repr__(self):
        return f"Gram(#{self.index}, {self.size}x{self.size}, basis={self.basis})"

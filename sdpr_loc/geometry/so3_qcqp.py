"""Quadratic constraints that make part of a homogenized vector a rotation matrix.

x = [x0, ..., vec(C), ...] with vec column-major (C[r, c] at ``start + 3 c + r``) and x0 = 1:
6 column-orthonormality, 9 handedness (c_i x c_j = c_k), 6 row-orthonormality (redundant).
All are homogeneous (right-hand side 0, using x0^2 = 1), so b = 0 for each.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _sym(n: int, entries) -> Tensor:
    A = torch.zeros(n, n, dtype=torch.float64)
    for i, j, v in entries:
        A[i, j] += 0.5 * v
        A[j, i] += 0.5 * v
    return A


def so3_constraints(n: int, start: int = 1, redundant_rows: bool = True):
    """(A (m, n, n), names, redundant flags) for C = x[start:start+9] in SO(3)."""
    idx = lambda r, c: start + 3 * c + r  # noqa: E731
    A, names, red = [], [], []
    for i in range(3):
        for j in range(i, 3):
            e = [(idx(r, i), idx(r, j), 1.0) for r in range(3)]
            if i == j:
                e.append((0, 0, -1.0))
            A.append(_sym(n, e)); names.append(f"c{i}.c{j}={int(i == j)}"); red.append(False)
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        for r in range(3):
            r1, r2 = (r + 1) % 3, (r + 2) % 3
            e = [(idx(r1, i), idx(r2, j), 1.0), (idx(r2, i), idx(r1, j), -1.0), (idx(r, k), 0, -1.0)]
            A.append(_sym(n, e)); names.append(f"(c{i}xc{j}-c{k})[{r}]"); red.append(False)
    if redundant_rows:
        for i in range(3):
            for j in range(i, 3):
                e = [(idx(i, c), idx(j, c), 1.0) for c in range(3)]
                if i == j:
                    e.append((0, 0, -1.0))
                A.append(_sym(n, e)); names.append(f"r{i}.r{j}={int(i == j)}"); red.append(True)
    return torch.stack(A), names, torch.tensor(red)

"""Small QCQP families with independent reference solutions, shared by the certify tests and bench."""
from __future__ import annotations

import numpy as np
import torch

from sdpr_loc.certify import QCQP
from sdpr_loc.geometry.so3_qcqp import so3_constraints


def wahba_qcqp() -> QCQP:
    A, names, red = so3_constraints(10)
    return QCQP(A=A, redundant=red, names=names)


def wahba_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Q (B, 10, 10) with x^T Q x = sum_i |C a_i - b_i|^2 for x = [1, vec(C)]."""
    B, N, _ = a.shape
    # C a_i = (a_i^T kron I3) vec(C)
    I3 = torch.eye(3, dtype=a.dtype)
    M = torch.einsum("bnj,rs->bnrjs", a, I3).reshape(B, N, 3, 9)  # d(C a)/d vec(C), column-major
    D = torch.cat([-b.unsqueeze(-1), M], -1)  # residual = D x
    return torch.einsum("bnri,bnrj->bij", D, D)


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Closed-form argmin_C sum |C a_i - b_i|^2 over SO(3)."""
    U, _, Vt = np.linalg.svd(b.T @ a)
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ S @ Vt


def kabsch_solver(Q, A, b_rhs):
    """Exact local solver for the Wahba QCQP: on SO(3) the quadratic part of Q is constant
    (sum |C a_i|^2 = sum |a_i|^2), so the cost is linear in C and Kabsch/SVD minimises it."""
    B = Q.shape[0]
    K = Q[:, 0, 1:].reshape(B, 3, 3).transpose(1, 2)  # cost = const + 2 <K, C>
    U, _, Vh = torch.linalg.svd(-K)
    d = torch.det(U @ Vh)
    U = U.clone()
    U[:, :, 2] *= d.unsqueeze(-1)
    C = U @ Vh
    return torch.cat([torch.ones(B, 1, dtype=Q.dtype, device=Q.device), C.transpose(1, 2).reshape(B, 9)], 1)


def wahba_instance(B: int, N: int, noise: float, seed: int = 0):
    g = np.random.default_rng(seed)
    from scipy.spatial.transform import Rotation

    R = Rotation.random(B, random_state=seed).as_matrix()
    a = g.normal(size=(B, N, 3))
    b = np.einsum("bij,bnj->bni", R, a) + noise * g.normal(size=(B, N, 3))
    return torch.tensor(a), torch.tensor(b)


def maxcut_qcqp(n: int) -> QCQP:
    """z_i^2 = 1 (boolean); x = [1, z]."""
    A = []
    for i in range(n):
        M = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        M[i + 1, i + 1] = 1.0
        M[0, 0] = -1.0
        A.append(M)
    return QCQP(A=torch.stack(A))


def cycle_cost(n: int) -> torch.Tensor:
    """MaxCut of an odd cycle: min sum_{edges} z_i z_j; its Shor relaxation is NOT tight."""
    Q = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for i in range(n):
        j = (i + 1) % n
        Q[i + 1, j + 1] += 0.5
        Q[j + 1, i + 1] += 0.5
    return Q


def brute_force_boolean(Q: torch.Tensor) -> torch.Tensor:
    n = Q.shape[-1] - 1
    best, bx = None, None
    for k in range(2**n):
        z = torch.tensor([1.0 if (k >> i) & 1 else -1.0 for i in range(n)], dtype=Q.dtype)
        x = torch.cat([torch.ones(1, dtype=Q.dtype), z])
        c = x @ Q @ x
        if best is None or c < best:
            best, bx = c, x
    return bx

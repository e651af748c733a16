"""AutoTight: find every quadratic constraint that feasible samples satisfy.

A constraint x^T A x = 0 is linear in vech(A); stacking the lifted samples vech(x x^T) gives a matrix
whose null space holds all such A (Dümbgen et al., "Toward globally optimal state estimation using
automatically tightened semidefinite relaxations"). Enough generic samples make it exact.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _lift_index(n: int):
    return torch.triu_indices(n, n)


def find_constraints(samples: Tensor, tol: float = 1e-9) -> Tensor:
    """All symmetric A (K, n, n), orthonormal in Frobenius norm, with x^T A x = 0 for every sample.

    Args:
        samples: (N, n) feasible points x = [1, z]. Use more than n (n + 1) / 2 generic samples.
        tol: relative singular-value threshold for the null space.
    Note: the homogenizing constraint x0^2 = 1 is not homogeneous, so it is not returned; constraints
    like z_i^2 = 1 come back as z_i^2 - x0^2 = 0.
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2:
        raise ValueError("samples must be a (N, n) tensor")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or inf")
    N, n = samples.shape
    iu = _lift_index(n)
    dim = iu.shape[1]
    if N < dim:
        raise ValueError(f"need at least n(n+1)/2 = {dim} samples to pin down all constraints, got {N}")
    x = samples.double()
    offdiag = (iu[0] != iu[1]).double()
    # x^T A x = sum_i A_ii x_i^2 + 2 sum_{i<j} A_ij x_i x_j
    L = x[:, iu[0]] * x[:, iu[1]] * (1.0 + offdiag)
    _, S, Vh = torch.linalg.svd(L, full_matrices=True)
    rank = int((S > tol * S[0]).sum())
    null = Vh[rank:]
    A = torch.zeros(null.shape[0], n, n, dtype=torch.float64)
    A[:, iu[0], iu[1]] = null
    A = A + A.transpose(-1, -2) - torch.diag_embed(torch.diagonal(A, dim1=-2, dim2=-1))
    if A.shape[0] == 0:
        return A
    q, _ = torch.linalg.qr(A.flatten(1).T)  # orthonormal in the Frobenius inner product
    return q.T.reshape(-1, n, n)

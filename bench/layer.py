"""SDPRLayer vs cvxpylayers on the degree-6 polynomial family (batch 64): time and gradient accuracy.

Both compute x* = argmin p(x) and d x*/d c for a batch of random tight polynomials. Gradient error is
measured against central finite differences of the true global minimiser (numpy roots of p').
Last line: `speedup_vs_cvxpylayers: <ratio>` (forward+backward time per problem, SCS path).
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch

from sdpr_loc.certify import PolyMinLayer
from sdpr_loc.certify.polymin import hankel_qcqp, poly_cost_matrix
from sdpr_loc.examples.polymin_fit import true_global_min

B, DEG = 64, 6


def random_polys(B, seed=0):
    g = np.random.default_rng(seed)
    c = g.normal(size=(B, DEG + 1))
    c[:, -1] = np.abs(c[:, -1]) + 0.2
    return torch.tensor(c)


def fd_reference(c: np.ndarray, eps=1e-6) -> np.ndarray:
    g = np.zeros_like(c)
    for i in range(c.shape[0]):
        for k in range(c.shape[1]):
            cp, cm = c[i].copy(), c[i].copy()
            cp[k] += eps
            cm[k] -= eps
            g[i, k] = (true_global_min(cp) - true_global_min(cm)) / (2 * eps)
    return g


def timed(fn, repeat=3):
    """Best of ``repeat`` calls (both layers get the same treatment)."""
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_sdpr(c):
    layer = PolyMinLayer(DEG)

    def go():
        cc = c.clone().requires_grad_(True)
        x, cert = layer(cc)
        x.sum().backward()
        return x.detach(), cc.grad, cert

    go()  # warm-up call
    return timed(go)


def make_cvxpylayer(solver):
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    q = hankel_qcqp(DEG)
    n = q.n
    Qp = cp.Parameter((n, n), symmetric=True)
    X = cp.Variable((n, n), PSD=True)
    cons = [cp.trace(A.numpy() @ X) == float(bi) for A, bi in zip(q.A, q.b)]
    prob = cp.Problem(cp.Minimize(cp.trace(Qp @ X)), cons)
    return CvxpyLayer(prob, parameters=[Qp], variables=[X], solver=solver)


def run_cvxpylayers(c, solver, solver_args):
    layer = make_cvxpylayer(solver)

    def go():
        cc = c.clone().requires_grad_(True)
        Q = poly_cost_matrix(cc)
        Q = 0.5 * (Q + Q.transpose(1, 2))
        (X,) = layer(Q, solver_args=solver_args)
        x = X[:, 0, 1]
        x.sum().backward()
        return x.detach(), cc.grad, None

    go()  # warm-up call, as for SDPRLayer: time steady-state calls
    return timed(go, repeat=3)


def main() -> int:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    c = random_polys(B)
    ref_grad = fd_reference(c.numpy())
    rows = []
    t, (x, g, cert) = run_sdpr(c)
    rows.append(("SDPRLayer (local+certificate, KKT backward)", t, x, g, f"{int(cert.certified.sum())}/{B}"))
    peers = [("cvxpylayers + diffcp SCS eps 1e-8", None,
              {"solve_method": "SCS", "eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 100000}),
             ("cvxpylayers + diffcp Clarabel", None, {"solve_method": "Clarabel"})]
    for name, solver, args in peers:
        try:
            t_p, (x_p, g_p, _) = run_cvxpylayers(c, solver, args)
            rows.append((name, t_p, x_p, g_p, "n/a"))
        except Exception as exc:  # report, keep benchmarking the rest
            print(f"{name}: failed: {type(exc).__name__}: {exc}")
    print(f"batch {B}, degree {DEG}, torch threads 1\n")
    print(f"{'method':48s} {'ms/problem':>11s} {'grad rel err (median)':>22s} {'(max)':>10s} {'certified':>10s}")
    for name, t, x, g, certs in rows:
        err = np.linalg.norm(g.numpy() - ref_grad, axis=1) / np.linalg.norm(ref_grad, axis=1)
        print(f"{name:48s} {1e3 * t / B:11.4f} {np.median(err):22.2e} {err.max():10.2e} {certs:>10s}")
    scs = [r for r in rows if "SCS" in r[0]]
    if not scs:
        print("speedup_vs_cvxpylayers: nan")
        return 1
    print(f"speedup_vs_cvxpylayers: {scs[0][1] / rows[0][1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

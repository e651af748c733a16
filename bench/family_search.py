"""The certificate's exact multiplier-family search: Clarabel called directly vs through cvxpy.

``max t  s.t.  H + sum_k w_k M_k - t I  PSD,  |w|_inf <= 1e4`` on registration-sized problems
(12 x 12, K family directions), random but fixed. Peer: the same SDP as a cvxpy problem compiled
once with parameters and re-solved with new values (what ``psd_multipliers`` did before), Clarabel
underneath both. Prints the median solve time of each and the largest difference in t. Last line:
``family_search_ratio: <direct / cvxpy>`` (below 1: faster than the peer).
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def main() -> int:
    import cvxpy as cp

    from sdpr_loc.certify.psd_multipliers import max_min_eigenvalue

    rng = np.random.default_rng(0)
    d, K, runs = 12, 12, 30
    Hp = cp.Parameter((d, d), symmetric=True)
    Mp = [cp.Parameter((d, d), symmetric=True) for _ in range(K)]
    w, t = cp.Variable(K), cp.Variable()
    prob = cp.Problem(cp.Maximize(t), [Hp + sum(w[k] * Mp[k] for k in range(K)) - t * np.eye(d) >> 0,
                                       cp.norm(w, "inf") <= 1e4])
    direct, peer, diff = [], [], 0.0
    for i in range(runs + 1):
        B = rng.standard_normal((d, d))
        H = B @ B.T / d - 0.5 * np.eye(d)
        M = rng.standard_normal((K, d, d))
        M = 0.5 * (M + M.transpose(0, 2, 1))
        t0 = time.perf_counter()
        _, t_direct = max_min_eigenvalue(H, M)
        t1 = time.perf_counter()
        Hp.value = H
        for p, m in zip(Mp, M):
            p.value = m
        prob.solve(solver="CLARABEL")
        t2 = time.perf_counter()
        if i:                                  # the first solve compiles the cvxpy problem
            direct.append(1e3 * (t1 - t0))
            peer.append(1e3 * (t2 - t1))
            diff = max(diff, abs(t_direct - float(t.value)))
    a, b = statistics.median(direct), statistics.median(peer)
    print(f"{runs} problems {d}x{d}, K = {K}: direct Clarabel {a:.2f} ms, cvxpy (compiled, parameters) "
          f"{b:.2f} ms; max |t difference| {diff:.1e}")
    print(f"family_search_ratio: {a / b:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

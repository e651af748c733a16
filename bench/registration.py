"""Certified registration vs the SDP (Clarabel re-solve), cvxpylayers+SCS, SVD and local baselines.

Stereo-like instances (fx=400, B=0.24 m, points 2-20 m, pixel sigma 0.5 and 1.0), N = 50/100/200,
batch 1 and 64, torch on 1 CPU thread. Per-problem times; accuracy vs ground truth; agreement of
the certified pose with the SDP's. Batch 1 (one frame, the numpy/LAPACK path) is summarised against
Horn/SVD and the Clarabel SDP of the same run; batch 1024 forward+backward on CUDA vs CPU when a GPU
is present. Last two lines: `speedup_vs_sdp: <ratio>` (batch 64, N = 100, sigma 0.5), then
`speedup_vs_sdp_batch1: <ratio>` (batch 1, same instance family).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import numpy as np
import torch

from sdpr_loc.geometry.instances import stereo_instance
from sdpr_loc.geometry.registration import _layer, cost_matrix, register, registration_qcqp
from sdpr_loc.geometry.se3 import rotation_angle


def per_problem(fn, B, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / B, out


def cvxpylayers_time(inst, n_items):
    """Forward+backward of the same SDP through cvxpylayers (diffcp + SCS eps 1e-8)."""
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    q = registration_qcqp()
    Qp = cp.Parameter((13, 13), symmetric=True)
    X = cp.Variable((13, 13), PSD=True)
    cons = [cp.trace(A.numpy() @ X) == float(b) for A, b in zip(q.A, q.b)]
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.trace(Qp @ X)), cons), parameters=[Qp], variables=[X])
    src = inst.src[:n_items] - inst.src[:n_items].mean(1, keepdim=True)
    trg = (inst.trg[:n_items] - inst.trg[:n_items].mean(1, keepdim=True)).requires_grad_(True)
    W = inst.weights[:n_items, :, None, None] * inst.inv_cov[:n_items]

    def go():
        Q = cost_matrix(src, trg, W)
        Q = Q / Q.flatten(1).norm(dim=-1).view(-1, 1, 1)
        (Xs,) = layer(0.5 * (Q + Q.transpose(1, 2)), solver_args={"solve_method": "SCS", "eps_abs": 1e-8,
                                                                   "eps_rel": 1e-8, "max_iters": 100000})
        Xs[:, 1:10, 0].sum().backward()

    return per_problem(go, n_items, 1)[0]


def cuda_rows(N: int = 100, B: int = 1024) -> None:
    """Forward + backward per problem at batch B on CUDA vs the CPU (skipped without a GPU)."""
    if not torch.cuda.is_available():
        print(f"cuda batch {B}: skipped (torch.cuda.is_available() is False: no CUDA device here)")
        return
    inst = stereo_instance(B, N, 0.5, seed=7)
    for dev in ("cpu", "cuda"):
        a = [x.to(dev) for x in (inst.src, inst.trg, inst.weights, inst.inv_cov)]

        def go():
            leaves = [x.clone().requires_grad_(True) for x in a]
            out = register(*leaves)
            (out.R.sum() + out.t.sum()).backward()
            if dev == "cuda":
                torch.cuda.synchronize()
            return out

        go()  # warm-up (CUDA context, kernels)
        t, out = per_problem(go, B, 3)
        print(f"batch {B} {dev:>4}: forward+backward {t:.4f} ms per problem, "
              f"{100 * float(out.certificate.certified.double().mean()):.1f}% certified")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer configurations (for smoke runs)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    Ns = [100] if args.quick else [50, 100, 200]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread\n")
    hdr = (f"{'sigma':>5} {'N':>4} {'B':>3} | {'cert fwd':>9} {'cert bwd':>9} {'sdp fwd':>9} {'svd fwd':>9} "
           f"{'local':>9} {'cvxpyl':>9} {'kkt bwd':>9} | {'cert%':>6} {'sdp==cert':>9} | {'rot err deg (cert/svd/local)':>28}")
    print(hdr + "\n" + "-" * len(hdr) + "\n(times in ms per problem; cvxpyl = cvxpylayers+SCS forward+backward)")
    ratios = {}
    layer = _layer(True, "clarabel", "mask")
    warm = stereo_instance(1, 20)
    register(warm.src, warm.trg, warm.weights, warm.inv_cov, method="sdp")  # compile the SDP once
    for sigma in (0.5, 1.0):
        for N in Ns:
            for B in (1, 64):
                inst = stereo_instance(B, N, sigma, seed=N + B)
                a = (inst.src, inst.trg, inst.weights, inst.inv_cov)
                rep = 15 if B == 64 else 50  # best of: the machine is shared
                t_cert, reg = per_problem(lambda: register(*a), B, rep)
                t_svd, svd = per_problem(lambda: register(*a, method="svd"), B, rep)
                t_loc, loc = per_problem(lambda: register(*a, method="local"), B, rep)
                n_sdp = min(B, 16)
                sub = [x[:n_sdp] for x in a]
                t_sdp, sdp = per_problem(lambda: register(*sub, method="sdp"), n_sdp, 5 if B == 1 else 1)

                t_bwd = t_kkt = np.inf  # backward passes only, best of 5 (each needs a fresh forward)
                Qd = cost_matrix(inst.src, inst.trg, inst.weights[..., None, None] * inst.inv_cov).requires_grad_(True)
                for _ in range(5):
                    leaves = [x.clone().requires_grad_(True) for x in a]
                    out = register(*leaves)
                    loss = out.R.sum() + out.t.sum()
                    t0 = time.perf_counter()
                    loss.backward()
                    t_bwd = min(t_bwd, 1e3 * (time.perf_counter() - t0) / B)
                    # the KKT backward alone (dL/dQ), without autograd through the cost assembly
                    xq, _ = layer(Qd)
                    t0 = time.perf_counter()
                    xq.sum().backward()
                    t_kkt = min(t_kkt, 1e3 * (time.perf_counter() - t0) / B)
                t_cvx = cvxpylayers_time(inst, min(B, 4)) if (N == 100 and sigma == 0.5) else float("nan")

                cert_rate = 100 * float(reg.certificate.certified.double().mean())
                agree = float(rotation_angle(reg.R[:n_sdp], sdp.R).max())
                errs = [float(np.degrees(rotation_angle(r.R, inst.R).median())) for r in (reg, svd, loc)]
                print(f"{sigma:5.1f} {N:4d} {B:3d} | {t_cert:9.4f} {t_bwd:9.4f} {t_sdp:9.3f} {t_svd:9.4f} "
                      f"{t_loc:9.4f} {t_cvx:9.2f} {t_kkt:9.4f} | {cert_rate:6.1f} {agree:9.1e} | "
                      f"{errs[0]:9.4f} {errs[1]:9.4f} {errs[2]:9.4f}")
                if N == 100 and sigma == 0.5:
                    ratios[B] = (t_cert, t_svd, t_sdp, t_kkt)
    print("\ncert bwd: backward from (R, t) to all inputs (points, weights, inv_cov); kkt bwd: dL/dQ only")
    print("sdp==cert: max rotation difference (rad) between the certified pose and the SDP's pose")
    cuda_rows()
    c1, s1, d1, _ = ratios[1]
    print(f"batch 1 (N = 100, sigma 0.5): certified {c1:.4f} ms, Horn/SVD {s1:.4f} ms, Clarabel SDP {d1:.3f} ms; "
          f"certified / SVD = {c1 / s1:.2f}")
    c64, _, d64, k64 = ratios[64]
    print(f"batch 64 (N = 100, sigma 0.5): certified {c64:.4f} ms/problem, KKT backward {k64:.4f} ms/problem, "
          f"Clarabel SDP {d64:.3f} ms/problem")
    print(f"speedup_vs_sdp: {d64 / c64:.1f}")
    print(f"speedup_vs_sdp_batch1: {d1 / c1:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: exact verification of registration certificates against the float certificates.

Stereo instances (fx = 400, B = 0.24 m, points 2-20 m), pixel sigma 0.5 / 0.75 / 1.0, N = 50 / 100 /
200. For every instance: the float certificate (``register``) and the exact one (``verify=True``);
agreement = verified == certified over the certified instances. Then every certified optimum is
rotated by 1e-3 rad about a random axis and certified + verified again (must never verify), both with
least-squares multipliers at the perturbed point and with the optimum's multipliers (the hardest case
for the gap test). Times are per pose, exact verification alone vs the float registration.

Usage: python bench/verify.py [--batch B]
Last line: ``verify_time_ratio_vs_float: <verify ms / registration ms per pose>``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdpr_loc.certify import certify  # noqa: E402
from sdpr_loc.certify.verify import exact_pose_point, verify_certificate  # noqa: E402
from sdpr_loc.geometry.instances import stereo_instance  # noqa: E402
from sdpr_loc.geometry.pose_problem import centred_problem  # noqa: E402
from sdpr_loc.geometry.registration import register, registration_qcqp, x_from_pose  # noqa: E402
from sdpr_loc.geometry.se3 import so3_exp  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128, help="instances per (sigma, N) cell")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = registration_qcqp()
    A, b = q.constraints((), 1, torch.float64)
    tot = dict(cert=0, agree=0, n=0, pert_ls=0, pert_opt=0, t_reg=0.0, t_ver=0.0)
    gaps, pert_gaps = [], []
    print(f"{'sigma':>6}{'N':>5}{'items':>7}{'certified':>10}{'verified':>9}{'agree':>8}{'max gap':>10}"
          f"{'pert ok':>9}{'reg ms':>8}{'ver ms':>8}")
    for sigma in (0.5, 0.75, 1.0):
        for N in (50, 100, 200):
            inst = stereo_instance(args.batch, N, sigma, seed=int(100 * sigma) + N)
            t0 = time.perf_counter()
            reg = register(inst.src, inst.trg, inst.weights, inst.inv_cov)
            t1 = time.perf_counter()
            c = reg.certificate
            W = inst.weights[..., None, None] * inst.inv_cov
            Qs, x = centred_problem(inst.src, inst.trg, W, reg.R, reg.t)  # what the registration certified
            t2 = time.perf_counter()
            verify_certificate(Qs, A, b, x, c, exact_pose_point)
            t3 = time.perf_counter()
            cert, ver = c.certified, c.verified
            ok = cert.sum().item()
            agree = (ver[cert] == cert[cert]).sum().item()
            gaps += c.proven_gap[ver].tolist()
            # perturbed optima: 1e-3 rad about a random axis
            axis = torch.nn.functional.normalize(torch.randn(args.batch, 3, dtype=torch.float64), dim=-1)
            Rp = so3_exp(1e-3 * axis) @ reg.R
            xp = x_from_pose(Rp, x[:, 10:13])[cert]
            cp = certify(Qs[cert], A.expand(int(ok), -1, -1, -1), b, xp)
            verify_certificate(Qs[cert], A, b, xp, cp, exact_pose_point)
            co = c.select(cert.nonzero().flatten())
            verify_certificate(Qs[cert], A, b, xp, co, exact_pose_point)
            pert_gaps += co.proven_gap.tolist()
            bad = int(cp.verified.sum()) + int(co.verified.sum())
            tot["pert_ls"] += int(cp.verified.sum())
            tot["pert_opt"] += int(co.verified.sum())
            tot.update(cert=tot["cert"] + ok, agree=tot["agree"] + agree, n=tot["n"] + args.batch,
                       t_reg=tot["t_reg"] + t1 - t0, t_ver=tot["t_ver"] + t3 - t2)
            mg = max(c.proven_gap[ver].tolist() or [float("nan")])
            print(f"{sigma:>6}{N:>5}{args.batch:>7}{ok:>10}{int(ver.sum()):>9}{100 * agree / max(ok, 1):>7.2f}%{mg:>10.1e}"
                  f"{'yes' if bad == 0 else f'NO ({bad})':>9}{1e3 * (t1 - t0) / args.batch:>8.2f}"
                  f"{1e3 * (t3 - t2) / args.batch:>8.2f}", flush=True)
    print(f"agreement on certified instances: {tot['agree']}/{tot['cert']} = {tot['agree'] / tot['cert']:.4%}")
    print(f"perturbed optima verified (must be 0): least-squares multipliers {tot['pert_ls']}, "
          f"optimum's multipliers {tot['pert_opt']} (of {tot['cert']} each)")
    print(f"largest proven gap: {max(gaps):.2e} (unit-norm cost units); perturbed points with the optimum's "
          f"multipliers: smallest proven gap {min(pert_gaps):.2e} (verification threshold 1e-11)")
    ver_ms, reg_ms = 1e3 * tot["t_ver"] / tot["n"], 1e3 * tot["t_reg"] / tot["n"]
    print(f"verify_ms_per_pose: {ver_ms:.3f}  (float registration: {reg_ms:.3f} ms per pose)")
    print(f"verify_time_ratio_vs_float: {ver_ms / reg_ms:.3f}")


if __name__ == "__main__":
    main()

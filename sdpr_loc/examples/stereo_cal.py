"""Paper example 2: tune stereo camera parameters by backpropagation through stereo localization.

A planar 8 x 8 board (0.3 m square, centred at the origin, in the board's x = 0 plane) is seen by a
stereo camera (f_u = f_v = 484.5 px, c_u = c_v = 0, b = 0.24 m, 0.5 px noise) from K poses on a
circle of radius 4 m, optical axis at the board (``--params all``: alternately 25 degrees above and
below the circle and rolled, else f_v is barely observable). The outer loss is the pose error
against those reference poses; the camera parameters are tuned by the same optimiser (plain SGD
for b, as the paper; L-BFGS for all five) through three inner solvers:
  * SDPR: the certified registration (global optimum, KKT gradients);
  * local (local-min init): damped Newton (Gauss-Newton + residual term, Levenberg-Marquardt) on
    SE(3) from fixed initial poses that this example finds in the basin of a LOCAL minimum (random
    initial poses, as in the paper), gradients by implicit differentiation wherever it stops (what
    Theseus does);
  * local (global init): the same solver started at the reference poses.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from sdpr_loc.argtypes import nonnegative, positive
from sdpr_loc.examples import save_figure
from sdpr_loc.files import writable_folder
from sdpr_loc.geometry.calibration import PARAMS, Calibration, calibrate_stereo, certified_solver
from sdpr_loc.geometry.newton_registration import newton_register, register_at, weighted_cost
from sdpr_loc.geometry.registration import Registration, register
from sdpr_loc.geometry.se3 import make_T
from sdpr_loc.geometry.stereo import StereoCamera, stereo_points

Tensor = torch.Tensor
TRUE_CAMERA = StereoCamera(fx=484.5, fy=484.5, cx=0.0, cy=0.0, baseline=0.24)
LR_B = 2e-4         # SGD on b: step [m] per unit gradient (~0.5 / the loss curvature near b = 0.24)
STEPS = {"b": 40, "all": 25}
TILT = {"b": 0.0, "all": 25.0}   # all five need poses off the horizontal circle (f_v, c_v)
OPTIMISER = {"b": "sgd", "all": "lbfgs"}   # plain SGD for b as the paper; all five: see calibrate_stereo


@dataclass
class CalProblem:
    """board (N, 3); pixels (K, N, 3) = (u_left, v, u_right); T_ref (K, 4, 4) = T_camera_board."""

    board: Tensor
    pixels: Tensor
    T_ref: Tensor


def look_at(position: Tensor, up: Tensor | None = None) -> Tensor:
    """T_camera_board (B, 4, 4) of cameras at ``position (B, 3)`` with the optical axis at the origin."""
    z = -position / position.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype).expand_as(z) if up is None else up
    y = up - (up * z).sum(-1, keepdim=True) * z
    y = y / y.norm(dim=-1, keepdim=True)
    C = torch.stack([torch.linalg.cross(y, z), y, z], dim=-2)  # rows: camera axes in the board frame
    return make_T(C, -(C @ position.unsqueeze(-1)).squeeze(-1))


def make_problem(K: int = 10, sigma_px: float = 0.5, seed: int = 0, radius: float = 4.0,
                 arc_deg: float = 72.0, camera: StereoCamera = TRUE_CAMERA,
                 tilt_deg: float = 0.0) -> CalProblem:
    """The paper's setup: board of 8 x 8 points, K poses along ``arc_deg`` of a circle around it.

    ``tilt_deg`` > 0 lifts the poses alternately above and below the circle's plane and rolls the
    cameras alternately by the same angle: a horizontal circle leaves f_v nearly unobserved.
    """
    s = torch.linspace(-0.15, 0.15, 8, dtype=torch.float64)
    yy, zz = torch.meshgrid(s, s, indexing="ij")
    board = torch.stack([torch.zeros(64, dtype=torch.float64), yy.flatten(), zz.flatten()], -1)
    phi = torch.linspace(0.0, math.radians(arc_deg), K, dtype=torch.float64)
    sign = 1.0 - 2.0 * (torch.arange(K) % 2).to(torch.float64)
    el = math.radians(tilt_deg) * sign
    pos = radius * torch.stack([phi.cos() * el.cos(), el.sin(), phi.sin() * el.cos()], -1)
    roll = torch.stack([el.sin(), el.cos(), torch.zeros_like(el)], -1)  # the camera's "up"
    T_ref = look_at(pos, roll if tilt_deg else None)
    uvd = camera.project(board @ T_ref[:, :3, :3].transpose(1, 2) + T_ref[:, None, :3, 3])
    pixels = torch.stack([uvd[..., 0], uvd[..., 1], uvd[..., 0] - uvd[..., 2]], -1)
    g = torch.Generator().manual_seed(seed)
    pixels = pixels + sigma_px * torch.randn(pixels.shape, generator=g, dtype=torch.float64)
    return CalProblem(board, pixels, T_ref)


# ------------------------------------------------------------------------------------------------
# the local baseline: Gauss-Newton from a fixed initial pose, implicit gradients where it stops
# ------------------------------------------------------------------------------------------------
def local_register(src: Tensor, trg: Tensor, inv_cov: Tensor, init: Tensor) -> Registration:
    """Damped Newton on SE(3) from ``init (B, 4, 4)``, implicit gradients wherever it stops.

    src, trg (B, N, 3), inv_cov (B, N, 3, 3). The certificate is evaluated there, not enforced.
    """
    R, t, _ = newton_register(src, trg, inv_cov, init)
    return register_at(src, trg, inv_cov, R, t, uncertified="sdp")


def local_solver(init: Tensor):
    """A ``calibrate_stereo`` solver that always starts Gauss-Newton from ``init (K, 4, 4)``."""
    return lambda src, trg, inv_cov: local_register(src, trg, inv_cov, init)


@dataclass
class LocalMinima:
    """Per pose: an initial pose (K, 4, 4), whether it leads to a local minimum (K,), and at that
    solution the cost, the global (certified) cost and the certificate's min eigenvalue (K,)."""

    init: Tensor
    found: Tensor
    cost: Tensor
    global_cost: Tensor
    min_eig: Tensor
    certified: Tensor


def find_local_minima(problem: CalProblem, camera: StereoCamera, n_random: int = 32, seed: int = 1,
                      sigma_px: float = 0.5, radius: float = 4.0) -> LocalMinima:
    """Random initial poses (camera on the sphere, looking at the board, random roll) per pose.

    An init is kept for pose k when Gauss-Newton from it stops at a cost clearly above the
    certified global cost (> 1% higher); among those, the lowest such minimum. Poses without one
    keep their reference pose as init (global basin).
    """
    K, N = problem.pixels.shape[:2]
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(K * n_random, 3, generator=g, dtype=torch.float64)
    up = torch.randn(K * n_random, 3, generator=g, dtype=torch.float64)
    inits = look_at(radius * pos / pos.norm(dim=-1, keepdim=True), up)
    with torch.no_grad():
        trg, W = stereo_points(problem.pixels, camera.intrinsics(), sigma_px)
        glob = register(problem.board.expand(K, -1, -1), trg, inv_cov=W)
        rep = lambda v: v.repeat_interleave(n_random, 0)  # noqa: E731
        src = rep(problem.board.expand(K, -1, -1))
        R, t, minimum = newton_register(src, rep(trg), rep(W), inits)
        cost = weighted_cost(src, rep(trg), rep(W), R, t).view(K, n_random)
    local = (cost > 1.01 * glob.cost.unsqueeze(-1)) & minimum.view(K, n_random)
    pick = torch.where(local, cost, torch.full_like(cost, float("inf"))).argmin(-1)
    found = local.any(-1)
    init = torch.where(found.view(K, 1, 1), inits.view(K, n_random, 4, 4)[torch.arange(K), pick],
                       problem.T_ref)
    with torch.no_grad():
        at = local_register(problem.board.expand(K, -1, -1), trg, W, init)
    return LocalMinima(init=init, found=found, cost=at.cost, global_cost=glob.cost,
                       min_eig=at.certificate.min_eig, certified=at.certificate.certified)


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def initial_camera(params: str, b0: float) -> StereoCamera:
    """``b``: only the baseline off (b0); ``all``: every parameter 5% off (principal point: 5% of f)."""
    t = TRUE_CAMERA
    if params == "b":
        return StereoCamera(t.fx, t.fy, t.cx, t.cy, b0)
    return StereoCamera(1.05 * t.fx, 0.95 * t.fy, t.cx + 0.05 * t.fx, t.cy - 0.05 * t.fy, 1.05 * t.baseline)


def run_learners(problem: CalProblem, minima: LocalMinima, start: StereoCamera, free, steps: int,
                 sigma_px: float = 0.5, lr: float | None = None, optimizer: str = "sgd",
                 progress: bool = False) -> dict[str, Calibration]:
    """Same data, optimiser and steps for SDPR and the local solver from both inits.

    ``lr`` in calibrate_stereo's scaled units; default: LR_B metres whatever the starting baseline.
    """
    lr = LR_B / start.baseline ** 2 if lr is None else lr
    solvers = {"sdpr": None, "local_min": local_solver(minima.init), "local_global": local_solver(problem.T_ref)}
    out = {}
    for name, solve in solvers.items():
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps + 1, desc=f"{name:>12}", leave=False)
        kwargs = {} if solve is None else {"solve": solve}
        out[name] = calibrate_stereo(problem.board, problem.pixels, problem.T_ref, start, free=free,
                                     sigma_px=sigma_px, steps=steps, lr=lr, optimizer=optimizer,
                                     callback=(lambda r: bar.update(1)) if bar else None, **kwargs)
        if bar:
            bar.close()
    return out


def print_tables(results: dict[str, Calibration], free) -> None:
    idx = [PARAMS.index(n) for n in free]
    for name, cal in results.items():
        print(f"\n[{name}]")
        print(f"{'iter':>4} {'outer loss':>11} " + " ".join(f"{PARAMS[i]:>10}" for i in idx)
              + f" {'grad^2':>10} {'inner s':>8} {'certified':>9}")
        for r in cal.history:
            print(f"{r.step:4d} {r.loss:11.4e} " + " ".join(f"{r.params[i]:10.5f}" for i in idx)
                  + f" {r.grad_sq:10.3e} {r.inner_time:8.4f} {r.certified:>6d}/{r.poses}")
        if cal.diverged:
            print(f"stopped: {cal.diverged}")


def relative_error(name: str, value: float) -> float:
    """Error relative to the true value; the principal point (true value 0) relative to f."""
    truth = TRUE_CAMERA.intrinsics().tolist()[PARAMS.index(name)]
    return (value - truth) / (truth if truth else TRUE_CAMERA.fx)


def plot(results: dict[str, Calibration], free, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = TRUE_CAMERA.intrinsics().tolist()
    labels = {"sdpr": "SDPR (certified)", "local_min": "local, local-min init", "local_global": "local, global init"}
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    for k, (name, cal) in enumerate(results.items()):
        h = cal.history
        it = [r.step for r in h]
        style = dict(color=f"C{k}", label=labels[name], lw=3.5 if name == "sdpr" else 1.5,
                     alpha=0.5 if name == "sdpr" else 1.0)
        ax[0].semilogy(it, [max(r.loss, 1e-16) for r in h], **style)
        for j, n in enumerate(free):
            i = PARAMS.index(n)
            rel = [relative_error(n, r.params[i]) for r in h]
            ax[1].plot(it, [r.params[i] for r in h] if len(free) == 1 else rel,
                       ls=["-", "--", ":", "-.", (0, (1, 3))][j], **(style if j == 0 else {"color": f"C{k}"}))
        ax[2].semilogy(it, [max(r.grad_sq, 1e-30) for r in h], **style)
        ax[3].plot(it, [1e3 * r.inner_time for r in h], **style)
    if len(free) == 1:
        ax[1].axhline(truth[PARAMS.index(free[0])], color="k", lw=0.8, ls=":")
        ax[1].set_ylabel(f"{free[0]}")
    else:
        ax[1].axhline(0.0, color="k", lw=0.8, ls=":")
        ax[1].set_ylabel("relative error (c: in units of f)\n" + ", ".join(free))
    for a, t in zip(ax, ("outer loss", "parameter value", "gradient squared", "inner solve time [ms]")):
        a.set_title(t)
        a.set_xlabel("iteration")
    ax[0].legend(fontsize=8)
    return save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", choices=("b", "all"), default="b",
                        help="tune the baseline only (b) or f_u, f_v, c_u, c_v, b jointly (all)")
    parser.add_argument("--b0", type=positive(float), default=0.30, help="initial baseline for --params b [m]")
    parser.add_argument("--poses", type=positive(int), default=10, help="poses along the circle (default 10)")
    parser.add_argument("--sigma", type=nonnegative(float), default=0.5, help="pixel noise std [px] (0: noise-free)")
    parser.add_argument("--steps", type=positive(int), default=None, help="optimiser steps (default 40 for b, 25 for all)")
    parser.add_argument("--seed", type=nonnegative(int), default=0, help="noise seed")
    parser.add_argument("--out", type=Path, default=Path("out/stereo_cal"), help="output folder (PNG)")


def why_local_is_wrong(problem: CalProblem, minima: LocalMinima, camera: StereoCamera,
                       sigma_px: float = 0.5) -> str:
    """At the final camera: the local solver's poses against the certified global ones."""
    with torch.no_grad():
        trg, W = stereo_points(problem.pixels, camera.intrinsics(), sigma_px)
        src = problem.board.expand(len(trg), -1, -1)
        loc = local_register(src, trg, W, minima.init)
        glob = certified_solver(src, trg, W)
    bad = ~loc.certificate.certified
    if not bad.any():
        return "its inner poses are all certified at the end (no local minimum left)"
    ratio = ", ".join(f"{float(r):.3f}" for r in (loc.cost / glob.cost)[bad])
    return (f"its inner poses are not the global optimum: {int(bad.sum())}/{len(bad)} not certified at its "
            f"solutions (min eigenvalue of H down to {float(loc.certificate.min_eig[bad].min()):.1e} < 0), "
            f"cost {ratio} x the certified global cost, so their implicit gradients tune the camera wrongly")


def run(args: argparse.Namespace) -> int:
    writable_folder(args.out)     # an unusable --out fails before the calibration runs
    torch.set_num_threads(1)  # tiny batched linear algebra: threads only contend
    free = ("baseline",) if args.params == "b" else PARAMS
    steps = STEPS[args.params] if args.steps is None else args.steps
    start = initial_camera(args.params, args.b0)
    problem = make_problem(K=args.poses, sigma_px=args.sigma, seed=args.seed, tilt_deg=TILT[args.params])
    print(f"stereo-cal: {args.poses} poses on a 4 m circle (elevation/roll +-{TILT[args.params]:g} deg), "
          f"8x8 board, noise {args.sigma} px; "
          f"tuning {', '.join(free)} by {OPTIMISER[args.params]} ({steps} steps)")
    minima = find_local_minima(problem, start)
    n = int(minima.found.sum())
    print(f"local minima from random initial poses: {n}/{args.poses} poses have one; at the local "
          f"solver's solutions (start camera) cost / global cost = "
          + ", ".join(f"{float(c / g):.2f}" for c, g, f in zip(minima.cost, minima.global_cost, minima.found) if f)
          + f"; certified there: {int(minima.certified[minima.found].sum())}/{n}, min eig of H down to "
          f"{float(minima.min_eig[minima.found].min()) if n else float('nan'):.1e}")
    if n == 0:
        print("no local minimum found: the local-min run equals the global-init run")
    results = run_learners(problem, minima, start, free, steps, optimizer=OPTIMISER[args.params],
                           progress=True)
    print_tables(results, free)
    truth = TRUE_CAMERA.intrinsics().tolist()
    print("\nfinal parameters (truth " + ", ".join(f"{n}={truth[PARAMS.index(n)]:g}" for n in free) + "):")
    for name, cal in results.items():
        p = cal.history[-1].params
        err = ", ".join(f"{n} {p[PARAMS.index(n)]:.5f} ({100 * relative_error(n, p[PARAMS.index(n)]):+.3f}%)"
                        for n in free)
        print(f"  {name:>12}: {err}" + (f"  [{cal.diverged}]" if cal.diverged else ""))
    print(f"local (local-min init): {why_local_is_wrong(problem, minima, results['local_min'].camera)}")
    print(f"plot: {plot(results, free, args.out / f'stereo_cal_{args.params}.png')}")
    print(f"local_final_baseline: {results['local_min'].history[-1].params[4]:.6f}")
    print(f"sdpr_final_baseline: {results['sdpr'].history[-1].params[4]:.6f}")
    return 0

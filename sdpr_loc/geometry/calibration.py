"""Stereo camera calibration by backpropagation through certified localization.

A board with known points is seen by the stereo camera from poses known by other means (a
motion-capture system, a robot arm). For candidate camera parameters, the pixels become 3D points
with inverse covariances (the inverse stereo model, :func:`~sdpr_loc.geometry.stereo.stereo_points`),
the certified registration finds each camera pose, and the pose error against the reference poses
is the loss. Its gradient w.r.t. the camera parameters comes from the KKT backward at the certified
GLOBAL optimum, so gradient descent tunes the camera (the SDPRLayers paper's second example).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .newton_registration import newton_register, register_at
from .registration import Registration, register
from .se3 import make_T
from .stereo import StereoCamera, stereo_points

Tensor = torch.Tensor
PARAMS = ("fx", "fy", "cx", "cy", "baseline")
Solver = Callable[[Tensor, Tensor, Tensor], Registration]


def check_board(board: Tensor, pixels: Tensor, T_ref: Tensor) -> None:
    """Raise ValueError when the observations cannot determine the poses.

    board (N, 3) points in the board frame; pixels (K, N, 3) = (u_left, v, u_right) of each board
    point from each of K poses; T_ref (K, 4, 4) = T_camera_board reference poses.
    """
    for name, v, tail in (("board", board, (3,)), ("pixels", pixels, (3,)), ("T_ref", T_ref, (4, 4))):
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor")
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or inf")
    if board.dim() != 2 or board.shape[-1] != 3:
        raise ValueError(f"board must have shape (N, 3), got {tuple(board.shape)}")
    N = board.shape[0]
    if T_ref.dim() != 3 or T_ref.shape[1:] != (4, 4):
        raise ValueError(f"T_ref must have shape (K, 4, 4), got {tuple(T_ref.shape)}")
    K = T_ref.shape[0]
    if pixels.shape != (K, N, 3):
        raise ValueError(f"pixels must have shape (K, N, 3) = {(K, N, 3)}, got {tuple(pixels.shape)}")
    if N < 3:
        raise ValueError(f"the board needs at least 3 points to fix a pose, got {N}")
    s = torch.linalg.svdvals(board - board.mean(0))
    if s[1] <= 1e-9 * s[0].clamp_min(torch.finfo(board.dtype).tiny):
        raise ValueError("board points are collinear: the rotation about their line is not observable")
    z = (board @ T_ref[:, :3, :3].transpose(1, 2) + T_ref[:, None, :3, 3])[..., 2]
    if (z <= 0).any():
        k, j = (z <= 0).nonzero()[0].tolist()
        raise ValueError(f"board point {j} is at or behind the camera in reference pose {k} (z = "
                         f"{float(z[k, j]):.3g} m); is T_ref T_camera_board?")
    if ((pixels[..., 0] - pixels[..., 2]) <= 0).any():
        k, j = ((pixels[..., 0] - pixels[..., 2]) <= 0).nonzero()[0].tolist()
        raise ValueError(f"pixel {j} of pose {k} has a non-positive disparity u_left - u_right: "
                         f"behind the camera, or left and right swapped")


def pose_loss(R: Tensor, t: Tensor, T_ref: Tensor) -> Tensor:
    """(K,) |r - r_ref|^2 + |R^T R_ref - I|_F^2 with r = -R^T t the camera position on the board.

    R (K, 3, 3), t (K, 3): estimated T_camera_board; T_ref (K, 4, 4) the reference.
    """
    R_ref, t_ref = T_ref[:, :3, :3], T_ref[:, :3, 3]
    r = -(R.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)
    r_ref = -(R_ref.transpose(1, 2) @ t_ref.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    return ((r - r_ref) ** 2).sum(-1) + ((R.transpose(1, 2) @ R_ref - eye) ** 2).sum((-1, -2))


def certified_solver(src: Tensor, trg: Tensor, inv_cov: Tensor) -> Registration:
    """The certified registration (SDP fallback; masked when uncertified) at a Newton-polished optimum.

    The certified global pose is polished by damped Newton, then certified again (SDP if that fails)
    and differentiated there: on stereo boards the depth weights are ~1e-3 of the lateral ones and
    a pose that passes the certificate's stationarity tolerance can still give a wrong gradient.
    """
    with torch.no_grad():
        first = register(src, trg, inv_cov=inv_cov)
        R, t, _ = newton_register(src, trg, inv_cov, make_T(first.R, first.t))
    return register_at(src, trg, inv_cov, R, t)


def calibration_loss(intrinsics: Tensor, board: Tensor, pixels: Tensor, T_ref: Tensor,
                     sigma_px: float = 0.5, solve: Solver = certified_solver) -> tuple[Tensor, Registration]:
    """Mean pose loss over the K poses for camera parameters ``intrinsics (5,)``, and the registration.

    intrinsics = [fx, fy, cx, cy, baseline] (may require grad); board (N, 3); pixels (K, N, 3);
    T_ref (K, 4, 4). ``solve(src, trg, inv_cov)`` is the inner pose solver (default: certified).
    """
    trg, W = stereo_points(pixels, intrinsics, sigma_px)
    reg = solve(board.expand(pixels.shape[0], -1, -1), trg, W)
    return pose_loss(reg.R, reg.t, T_ref).mean(), reg


@dataclass
class CalibrationStep:
    """One outer iteration: loss, parameters [fx, fy, cx, cy, baseline], gradient squared norm (of
    the free parameters, in their own units), inner solve time [s], certified poses of all poses."""

    step: int
    loss: float
    params: list
    grad_sq: float
    inner_time: float
    certified: int
    poses: int


@dataclass
class Calibration:
    """Tuned camera, one :class:`CalibrationStep` per evaluated step, and why it stopped early ('')."""

    camera: StereoCamera
    history: list = field(default_factory=list)
    diverged: str = ""


def _scales(p0: Tensor) -> Tensor:
    """Units of the optimised variables: focal lengths and principal point in units of the initial
    focal length, the baseline in units of its initial value (so one learning rate suits all)."""
    return torch.stack([p0[0], p0[1], p0[0], p0[1], p0[4]])


def calibrate_stereo(board: Tensor, pixels: Tensor, T_ref: Tensor, initial: StereoCamera,
                     free: Sequence[str] = ("baseline",), sigma_px: float = 0.5, steps: int = 25,
                     lr: float = 0.002, optimizer: str = "sgd", solve: Solver = certified_solver,
                     callback: Callable[[CalibrationStep], None] | None = None) -> Calibration:
    """Tune the ``free`` stereo parameters by gradient descent on the pose loss through the certified layer.

    Args:
        board: (N, 3) board points in the board frame [m] (not collinear, N >= 3).
        pixels: (K, N, 3) measured (u_left, v, u_right) of each board point from each pose [px].
        T_ref: (K, 4, 4) reference poses T_camera_board (e.g. from motion capture).
        initial: starting camera (its fx, fy, cx, cy, baseline).
        free: names among ``PARAMS`` to tune; the others stay at their initial values.
        sigma_px: pixel noise std for the inverse covariances.
        steps, lr: iterations and learning rate, in scaled units (see ``_scales``).
        optimizer: "sgd" (plain, the paper's) or "lbfgs" (quasi-Newton with a strong Wolfe line
            search, ``lr`` unused: the pose loss is badly conditioned in f_v, b and the principal
            point, along which plain SGD crawls).
        solve: inner pose solver ``(src, trg, inv_cov) -> Registration`` (default certified).
        callback: called with each :class:`CalibrationStep`.
    Returns:
        Calibration(camera, history, diverged): one history entry per step, at the step's start.
    """
    check_board(board, pixels, T_ref)
    unknown = [n for n in free if n not in PARAMS]
    if unknown or not free:
        raise ValueError(f"free must name some of {PARAMS}, got {list(free)}")
    if optimizer not in ("sgd", "lbfgs"):
        raise ValueError(f"optimizer must be 'sgd' or 'lbfgs', got {optimizer!r}")
    mask = torch.tensor([n in free for n in PARAMS])
    p0 = initial.intrinsics(board.dtype)
    scale = _scales(p0)
    theta = (p0 / scale).clone().requires_grad_(True)
    opt = (torch.optim.SGD([theta], lr=lr) if optimizer == "sgd" else
           torch.optim.LBFGS([theta], lr=1.0, max_iter=1, max_eval=8,
                             tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe"))
    last = {}

    def closure():
        params = torch.where(mask, theta * scale, p0)
        if not (torch.isfinite(params).all() and (params[[0, 1, 4]] > 0).all()):
            raise FloatingPointError(f"parameters left the valid range ({params.detach().tolist()})")
        t0 = time.perf_counter()
        loss, reg = calibration_loss(params, board, pixels, T_ref, sigma_px, solve)
        opt.zero_grad()
        loss.backward()
        theta.grad = theta.grad * mask.to(theta.dtype)
        last.update(loss=loss.detach(), reg=reg, params=params.detach(), time=time.perf_counter() - t0)
        return loss.detach()

    def search():  # the line search may try invalid parameters: make them a wall, not an error
        try:
            return closure()
        except (FloatingPointError, ValueError):
            opt.zero_grad()
            theta.grad = torch.zeros_like(theta)
            return torch.tensor(1e10, dtype=theta.dtype)

    history, diverged = [], ""
    for it in range(steps + 1):
        try:
            closure()
            rec = CalibrationStep(it, float(last["loss"]), last["params"].tolist(),
                                  float(((theta.grad / scale) ** 2).sum()), last["time"],
                                  int(last["reg"].certificate.certified.sum()), len(last["reg"].certificate))
            history.append(rec)
            if callback is not None:
                callback(rec)
            if it < steps:
                opt.step() if optimizer == "sgd" else opt.step(search)
        except (FloatingPointError, ValueError) as err:
            diverged = f"step {it}: {err}"
            break
    p = history[-1].params
    camera = StereoCamera(p[0], p[1], p[2], p[3], p[4], width=initial.width, height=initial.height,
                          min_disparity=initial.min_disparity)
    return Calibration(camera=camera, history=history, diverged=diverged)

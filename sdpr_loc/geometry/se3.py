"""Lie group maps for SO(3) and SE(3) in torch: batched, differentiable, safe at 0 and near pi.

Conventions
-----------
* Every function accepts arbitrary leading batch dimensions ``(...)``; shapes in docstrings are
  written for the trailing dimensions, e.g. ``(..., 3, 3)``. float32 and float64 both work.
* Twists are ordered ``xi = [rho, phi]``: ``rho`` (3) is the translational part and ``phi`` (3)
  the rotation vector (axis * angle, radians). This is the "translation first" ordering of
  Barfoot's *State Estimation for Robotics*; note that Sophus and GTSAM's Pose3 differ.
* ``T = [[R, t], [0, 1]]`` maps points from a source frame to a target frame: ``p_t = R p_s + t``.
* Quaternions follow geometry_msgs/Quaternion: ``(x, y, z, w)``.

Closed forms are used with their Taylor series below a small angle, so values and gradients stay
finite and accurate at zero; the logarithm goes through a quaternion (Shepperd's method), which
is well conditioned near pi where the ``acos(trace)`` route loses half the digits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = [
    "hat", "vee", "so3_exp", "so3_log", "se3_exp", "se3_log", "make_T", "split_T", "compose",
    "inverse", "transform_points", "rotation_angle", "translation_distance", "pose_error",
    "quaternion_from_R", "R_from_quaternion", "random_rotation",
    "hat_np", "so3_log_np", "se3_exp_np", "se3_log_np", "rotation_angle_deg", "adjoint_np",
    "quaternion_from_R_np", "R_from_quaternion_np",
]

# Below this squared angle the Taylor series (4 terms, truncation ~1e-15 relative) replace the
# closed forms, whose cancellation error grows like eps / theta^2.
_SMALL_SQ = 1e-2


# --------------------------------------------------------------------------------------------
# validation and small helpers
# --------------------------------------------------------------------------------------------
def _check(name: str, x: Tensor, tail: tuple[int, ...]) -> None:
    """Raise ValueError unless ``x`` is a floating tensor whose trailing dims equal ``tail``."""
    want = "(..., " + ", ".join(str(d) for d in tail) + ")"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dim() < len(tail) or tuple(x.shape[-len(tail):]) != tail:
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {x.dtype}")


def _series(x: Tensor, coeffs: Sequence[float]) -> Tensor:
    """Evaluate ``sum_k coeffs[k] * x**k`` (Horner)."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out


def _safe_split(theta_sq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return (small mask, theta_sq safe for the series, theta safe for the closed form).

    Both branches of a ``torch.where`` are differentiated, so each one gets inputs on which it
    is finite; otherwise a NaN in the unused branch leaks into the gradient.
    """
    small = theta_sq < _SMALL_SQ
    sq_small = torch.where(small, theta_sq, torch.zeros_like(theta_sq))
    theta_big = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    return small, sq_small, theta_big


def _safe_norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dim with a zero (not NaN) gradient at the origin."""
    sq = (x * x).sum(-1)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))),
                       torch.zeros_like(sq))


def _eye(like: Tensor, n: int = 3) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _sin_over(theta_sq: Tensor) -> Tensor:
    """A = sin(t) / t."""
    small, s, t = _safe_split(theta_sq)
    return torch.where(small, _series(s, [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880]),
                       torch.sin(t) / t)


def _one_minus_cos_over(theta_sq: Tensor) -> Tensor:
    """B = (1 - cos t) / t^2."""
    small, s, t = _safe_split(theta_sq)
    return torch.where(small, _series(s, [1 / 2, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800]),
                       (1 - torch.cos(t)) / (t * t))


def _t_minus_sin_over(theta_sq: Tensor) -> Tensor:
    """C = (t - sin t) / t^3."""
    small, s, t = _safe_split(theta_sq)
    return torch.where(small, _series(s, [1 / 6, -1 / 120, 1 / 5040, -1 / 362880, 1 / 39916800]),
                       (t - torch.sin(t)) / (t * t * t))


def _vinv_coeff(theta_sq: Tensor) -> Tensor:
    """D = (1 - (t/2) cot(t/2)) / t^2, the W^2 coefficient of V^-1 (finite up to t = pi)."""
    small, s, t = _safe_split(theta_sq)
    half = 0.5 * t
    direct = (1 - half * torch.cos(half) / torch.sin(half)) / (t * t)
    return torch.where(small, _series(s, [1 / 12, 1 / 720, 1 / 30240, 1 / 1209600]), direct)


# --------------------------------------------------------------------------------------------
# so(3)
# --------------------------------------------------------------------------------------------
def hat(w: Tensor) -> Tensor:
    """Skew-symmetric matrix ``(..., 3, 3)`` of ``w (..., 3)``, so that ``hat(w) @ v = w x v``."""
    _check("w", w, (3,))
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*w.shape[:-1], 3, 3)


def vee(W: Tensor) -> Tensor:
    """Inverse of :func:`hat`: the vector ``(..., 3)`` of the skew part of ``W (..., 3, 3)``."""
    _check("W", W, (3, 3))
    S = 0.5 * (W - W.transpose(-1, -2))
    return torch.stack([S[..., 2, 1], S[..., 0, 2], S[..., 1, 0]], dim=-1)


def so3_exp(w: Tensor) -> Tensor:
    """Rotation matrix ``(..., 3, 3)`` of the rotation vector ``w (..., 3)`` (Rodrigues)."""
    _check("w", w, (3,))
    theta_sq = (w * w).sum(-1)[..., None, None]
    W = hat(w)
    return _eye(w) + _sin_over(theta_sq) * W + _one_minus_cos_over(theta_sq) * (W @ W)


def so3_log(R: Tensor) -> Tensor:
    """Rotation vector ``(..., 3)`` with angle in ``[0, pi]`` of ``R (..., 3, 3)``.

    Goes through the unit quaternion, so it is accurate at small angles and near pi, and
    tolerates the slight non-orthogonality that float32 products accumulate.
    """
    _check("R", R, (3, 3))
    q = quaternion_from_R(R)  # w >= 0, so the angle 2*atan2(|v|, w) lies in [0, pi]
    v, qw = q[..., :3], q[..., 3]
    n_sq = (v * v).sum(-1)
    n = _safe_norm(v)
    # f = 2 atan2(n, w) / n, with its series in x^2 = (n / w)^2 for tiny n (w is ~1 there).
    # The mask comes from detached values; each branch sees only inputs where it is finite.
    small = n_sq.detach() < 1e-3 * (qw * qw).detach()
    one = torch.ones_like(n)
    n_big = torch.where(small, one, n)
    qw_small = torch.where(small, qw, one)
    x_sq = torch.where(small, n_sq, torch.zeros_like(n_sq)) / qw_small ** 2
    atan_over_x = _series(x_sq, [1.0, -1 / 3, 1 / 5, -1 / 7, 1 / 9, -1 / 11])
    f = torch.where(small, 2 / qw_small * atan_over_x, 2 * torch.atan2(n_big, qw) / n_big)
    return f[..., None] * v


# --------------------------------------------------------------------------------------------
# SE(3)
# --------------------------------------------------------------------------------------------
def make_T(R: Tensor, t: Tensor) -> Tensor:
    """Homogeneous transform ``(..., 4, 4)`` from ``R (..., 3, 3)`` and ``t (..., 3)``."""
    _check("R", R, (3, 3))
    _check("t", t, (3,))
    batch = np.broadcast_shapes(tuple(R.shape[:-2]), tuple(t.shape[:-1]))   # torch's: ~0.3 ms a call
    R = R.expand(*batch, 3, 3)
    t = t.expand(*batch, 3)
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros(*batch, 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def split_T(T: Tensor) -> tuple[Tensor, Tensor]:
    """``(R (..., 3, 3), t (..., 3))`` of a transform ``T (..., 4, 4)``."""
    _check("T", T, (4, 4))
    return T[..., :3, :3], T[..., :3, 3]


def se3_exp(xi: Tensor) -> Tensor:
    """Transform ``(..., 4, 4)`` of the twist ``xi = [rho, phi] (..., 6)``.

    ``t = V(phi) rho`` with ``V = I + B W + C W^2``, i.e. ``rho`` is not the translation itself
    unless ``phi = 0``.
    """
    _check("xi", xi, (6,))
    rho, phi = xi[..., :3], xi[..., 3:]
    theta_sq = (phi * phi).sum(-1)[..., None, None]
    W = hat(phi)
    W2 = W @ W
    B = _one_minus_cos_over(theta_sq)
    R = _eye(xi) + _sin_over(theta_sq) * W + B * W2
    V = _eye(xi) + B * W + _t_minus_sin_over(theta_sq) * W2
    return make_T(R, (V @ rho[..., None])[..., 0])


def se3_log(T: Tensor) -> Tensor:
    """Twist ``[rho, phi] (..., 6)`` of ``T (..., 4, 4)``, with ``|phi|`` in ``[0, pi]``."""
    R, t = split_T(T)
    phi = so3_log(R)
    theta_sq = (phi * phi).sum(-1)[..., None, None]
    W = hat(phi)
    V_inv = _eye(T) - 0.5 * W + _vinv_coeff(theta_sq) * (W @ W)
    rho = (V_inv @ t[..., None])[..., 0]
    return torch.cat([rho, phi], dim=-1)


def compose(T1: Tensor, T2: Tensor) -> Tensor:
    """``T1 @ T2`` for ``(..., 4, 4)`` transforms (batch dims broadcast)."""
    R1, t1 = split_T(T1)
    R2, t2 = split_T(T2)
    return make_T(R1 @ R2, (R1 @ t2[..., None])[..., 0] + t1)


def inverse(T: Tensor) -> Tensor:
    """Inverse ``(..., 4, 4)`` of a rigid transform, using ``R^T`` rather than a general solve."""
    R, t = split_T(T)
    Rt = R.transpose(-1, -2)
    return make_T(Rt, -(Rt @ t[..., None])[..., 0])


def transform_points(T: Tensor, p: Tensor) -> Tensor:
    """Apply ``T (..., 4, 4)`` to points ``p (..., N, 3)``: ``R p + t`` -> ``(..., N, 3)``."""
    _check("p", p, (3,))
    R, t = split_T(T)
    return p @ R.transpose(-1, -2) + t[..., None, :]


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------
def rotation_angle(R1: Tensor, R2: Tensor) -> Tensor:
    """Geodesic angle ``(...)`` in radians between ``R1`` and ``R2`` ``(..., 3, 3)``.

    ``atan2(|sin part|, cos part)`` of ``R1^T R2`` keeps full precision at 0 and at pi, where
    ``acos`` of the clamped trace is off by about ``sqrt(eps)``.
    """
    _check("R1", R1, (3, 3))
    _check("R2", R2, (3, 3))
    R = R1.transpose(-1, -2) @ R2
    cos = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    sin = _safe_norm(vee(R))
    return torch.atan2(sin, cos)


def translation_distance(t1: Tensor, t2: Tensor) -> Tensor:
    """Euclidean distance ``(...)`` between translations ``t1``, ``t2`` ``(..., 3)``."""
    _check("t1", t1, (3,))
    _check("t2", t2, (3,))
    return _safe_norm(t1 - t2)


def pose_error(T_est: Tensor, T_gt: Tensor) -> tuple[Tensor, Tensor]:
    """``(rotation error [rad], translation error)`` ``(...)`` between two ``(..., 4, 4)`` poses.

    Rotation: geodesic angle between the rotation parts. Translation: distance between the
    translation parts, i.e. in the target frame of the transforms.
    """
    R_e, t_e = split_T(T_est)
    R_g, t_g = split_T(T_gt)
    return rotation_angle(R_e, R_g), translation_distance(t_e, t_g)


# --------------------------------------------------------------------------------------------
# quaternions and sampling
# --------------------------------------------------------------------------------------------
def quaternion_from_R(R: Tensor) -> Tensor:
    """Unit quaternion ``(x, y, z, w) (..., 4)`` with ``w >= 0`` of ``R (..., 3, 3)``.

    Shepperd's method: of the four algebraically equal formulas, use the one whose pivot
    ``4 q_i^2`` is largest (at least 1), so there is never a division by a small number.
    """
    _check("R", R, (3, 3))
    r = R.reshape(*R.shape[:-2], 9)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.unbind(-1)
    tr = r00 + r11 + r22
    pivots = torch.stack([1 + tr, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22,
                          1 - r00 - r11 + r22], dim=-1)
    # Unselected branches may have negative pivots; clamping keeps them (and their unused
    # gradients) finite. A selected pivot is >= 1 for any rotation.
    s = 2 * torch.sqrt(pivots.clamp_min(0.5))  # s_i = 4 |q_i|
    sw, sx, sy, sz = s.unbind(-1)
    a, b, c = r21 - r12, r02 - r20, r10 - r01  # 4 w x, 4 w y, 4 w z
    d, e, f = r01 + r10, r02 + r20, r12 + r21  # 4 x y, 4 x z, 4 y z
    cand = torch.stack([
        torch.stack([a / sw, b / sw, c / sw, sw / 4], -1),
        torch.stack([sx / 4, d / sx, e / sx, a / sx], -1),
        torch.stack([d / sy, sy / 4, f / sy, b / sy], -1),
        torch.stack([e / sz, f / sz, sz / 4, c / sz], -1),
    ], dim=-2)  # (..., 4 branches, 4 components xyzw)
    idx = pivots.argmax(-1)[..., None, None].expand(*pivots.shape[:-1], 1, 4)
    q = cand.gather(-2, idx)[..., 0, :]
    q = q / _safe_norm(q)[..., None]
    return torch.where(q[..., 3:] < 0, -q, q)


def R_from_quaternion(q: Tensor) -> Tensor:
    """Rotation matrix ``(..., 3, 3)`` of a quaternion ``(x, y, z, w) (..., 4)`` (normalised)."""
    _check("q", q, (4,))
    n = _safe_norm(q)
    if bool((n == 0).any()):
        raise ValueError("q must be non-zero quaternions (x, y, z, w); got a zero quaternion")
    x, y, z, w = (q / n[..., None]).unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    rows = [1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def random_rotation(batch: int | Sequence[int] = (), generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> Tensor:
    """Rotations ``(*batch, 3, 3)`` uniform (Haar) on SO(3): normalised Gaussian quaternions."""
    shape = (batch,) if isinstance(batch, int) else tuple(batch)
    q = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    # A Gaussian 4-vector is exactly zero with probability zero; guard anyway.
    q = torch.where(_safe_norm(q)[..., None] > 0, q, torch.ones_like(q))
    return R_from_quaternion(q)


# --------------------------------------------------------------------------------------------
# numpy front doors (nodes, tracker, evaluation work in float64 numpy): the torch maps above
# --------------------------------------------------------------------------------------------
def _np(fn, *arrays):
    import numpy as np

    out = fn(*(torch.tensor(np.asarray(a, dtype=np.float64)) for a in arrays))
    return out.numpy()


def hat_np(w):
    """numpy :func:`hat`: ``(..., 3)`` -> ``(..., 3, 3)``."""
    return _np(hat, w)


def so3_log_np(R):
    """numpy :func:`so3_log` (accurate near pi)."""
    return _np(so3_log, R)


def se3_exp_np(xi):
    """numpy :func:`se3_exp`."""
    return _np(se3_exp, xi)


def se3_log_np(T):
    """numpy :func:`se3_log`."""
    return _np(se3_log, T)


def quaternion_from_R_np(R):
    """numpy :func:`quaternion_from_R`: unit ``(x, y, z, w)``, ``w >= 0``."""
    return _np(quaternion_from_R, R)


def R_from_quaternion_np(q):
    """numpy :func:`R_from_quaternion` (normalises ``q``)."""
    return _np(R_from_quaternion, q)


def rotation_angle_deg(R1, R2=None) -> float | object:
    """Geodesic angle in degrees between rotations ``R1`` and ``R2`` (numpy ``(..., 3, 3)``;
    ``R2`` defaults to the identity), via :func:`rotation_angle`."""
    import numpy as np

    R1 = np.asarray(R1, dtype=np.float64)
    R2 = np.broadcast_to(np.eye(3), R1.shape) if R2 is None else np.asarray(R2, dtype=np.float64)
    out = np.degrees(_np(rotation_angle, R1, R2))
    return float(out) if out.ndim == 0 else out


def adjoint_np(T):
    """Adjoint ``(6, 6)`` of ``T (4, 4)`` for twists ordered (translation, rotation):
    ``[[R, [t]x R], [0, R]]`` (moves a left-perturbation covariance between frames)."""
    import numpy as np

    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = A[3:, 3:] = R
    A[:3, 3:] = hat_np(t) @ R
    return A

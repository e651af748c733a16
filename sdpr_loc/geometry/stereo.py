"""Rectified stereo camera: projection, triangulation and first-order 3D point uncertainty.

Frame: all 3D points are in the LEFT camera optical frame (REP 103 ``*_optical_frame``):
x right, y down, z forward, metres. Pixels ``(u, v)`` are in the left rectified image and the
disparity is ``d = u_left - u_right > 0`` (pixels) for a point in front of the camera.

The model is the ideal rectified pair that ``stereo_image_proc`` produces: both images share
``fx, fy, cx, cy``; the right camera sits ``baseline`` metres along +x of the left one. Reading
and writing it as sensor_msgs/CameraInfo is :mod:`sdpr_loc.data.messages`'s job.

Triangulated points carry a 3x3 covariance from pixel noise, propagated to first order from the
independent measurements ``(u_left, v, u_right)``. The depth direction grows like ``z^2`` and the
disparity error is correlated with ``u_left``, which is why a registration should weight points
with full 3x3 matrices (see :meth:`StereoCamera.inverse_covariance`) rather than scalars.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["StereoCamera", "InvalidReason", "DEFAULT_MIN_DISPARITY", "stereo_points", "covariance_at"]

# Half a pixel: below it a typical matching error (~0.5 px per image) can flip the sign of the
# disparity, so the depth is not even first-order Gaussian. Far points above it still constrain
# rotation through their bearing; their inverse covariance gives them ~no weight in depth.
DEFAULT_MIN_DISPARITY = 0.5


class InvalidReason(enum.IntEnum):
    """Why a (u, v, disparity) measurement cannot be triangulated (0 = it can)."""

    VALID = 0
    NON_FINITE = 1
    NON_POSITIVE_DISPARITY = 2
    DISPARITY_BELOW_MIN = 3

    @property
    def text(self) -> str:
        return _REASON_TEXT[self]


_REASON_TEXT = {
    InvalidReason.VALID: "",
    InvalidReason.NON_FINITE: "non-finite",
    InvalidReason.NON_POSITIVE_DISPARITY: "non-positive disparity",
    InvalidReason.DISPARITY_BELOW_MIN: "disparity below min",
}


def _check_uvd(uvd: Tensor) -> None:
    if not isinstance(uvd, torch.Tensor):
        raise ValueError(f"uvd must be a torch.Tensor of shape (..., N, 3), got "
                         f"{type(uvd).__name__}")
    if uvd.dim() < 1 or uvd.shape[-1] != 3:
        raise ValueError(f"uvd must have shape (..., N, 3) = (u, v, disparity), got "
                         f"{tuple(uvd.shape)}")
    if not uvd.is_floating_point():
        raise ValueError(f"uvd must be a floating point tensor, got {uvd.dtype}")


@dataclass(frozen=True)
class StereoCamera:
    """Ideal rectified stereo pair.

    Args:
        fx, fy: focal lengths in pixels (> 0), shared by both rectified images.
        cx, cy: principal point in pixels, shared by both rectified images.
        baseline: distance in metres (> 0) from the left to the right optical centre along +x.
        width, height: image size in pixels, optional (informational; 0 in CameraInfo if None).
        min_disparity: smallest disparity (pixels, > 0) accepted by :meth:`triangulate`.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float
    width: int | None = None
    height: int | None = None
    min_disparity: float = DEFAULT_MIN_DISPARITY

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy", "baseline", "min_disparity"):
            val = getattr(self, name)
            try:
                val = float(val)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a real number, got {val!r}") from None
            if not math.isfinite(val):
                raise ValueError(f"{name} must be finite, got {val}")
            if name in ("fx", "fy", "baseline", "min_disparity") and val <= 0:
                raise ValueError(f"{name} must be positive, got {val}")
            object.__setattr__(self, name, val)
        for name in ("width", "height"):
            val = getattr(self, name)
            if val is not None:
                if isinstance(val, bool) or int(val) != val or val <= 0:
                    raise ValueError(f"{name} must be a positive integer or None, got {val!r}")
                object.__setattr__(self, name, int(val))

    @classmethod
    def from_triangulation(cls, uvd: np.ndarray, points: np.ndarray, tol_px: float = 0.01) -> "StereoCamera":
        """The camera that triangulated ``points (N, 3)`` from ``uvd (N, 3)`` (keypoints carry
        no camera; a map's keyframes need one to re-evaluate their covariances).

        ``u = fx x/z + cx`` and ``v = fy y/z + cy`` are fitted by least squares, and
        ``fx B = z d``. Raises ValueError when the points do not determine it (fewer than 3,
        no spread) or were not triangulated by one pinhole stereo pair.
        """
        uvd, P = np.asarray(uvd, dtype=np.float64), np.asarray(points, dtype=np.float64)
        ok = np.isfinite(uvd).all(1) & np.isfinite(P).all(1) & (P[:, 2] > 0) & (uvd[:, 2] > 0)
        uvd, P = uvd[ok], P[ok]
        if len(P) < 3:
            raise ValueError(f"need 3 triangulated points to recover the camera, got {len(P)}")
        fit = []
        for k in (0, 1):
            A = np.stack([P[:, k] / P[:, 2], np.ones(len(P))], 1)
            (f, c), *_ = np.linalg.lstsq(A, uvd[:, k], rcond=None)
            if not (np.ptp(A[:, 0]) > 1e-6 and f > 0):
                raise ValueError("the points do not determine the focal length (no spread in the image)")
            if np.max(np.abs(A @ (f, c) - uvd[:, k])) > tol_px:
                raise ValueError("the points were not triangulated by one pinhole camera")
            fit += [f, c]
        fxB = P[:, 2] * uvd[:, 2]
        if np.ptp(fxB) > 1e-3 * np.median(fxB):
            raise ValueError("the points were not triangulated with one baseline")
        fx, cx, fy, cy = fit
        return cls(fx=fx, fy=fy, cx=cx, cy=cy, baseline=float(np.median(fxB)) / fx)

    def intrinsics(self, dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> Tensor:
        """``[fx, fy, cx, cy, baseline]`` as a ``(5,)`` tensor."""
        return torch.tensor([self.fx, self.fy, self.cx, self.cy, self.baseline], dtype=dtype,
                            device=device)

    # ---------------------------------------------------------------------------------------
    # projection and triangulation
    # ---------------------------------------------------------------------------------------
    def project(self, points: Tensor) -> Tensor:
        """``(u, v, disparity) (..., N, 3)`` of left-optical-frame ``points (..., N, 3)``.

        Points at or behind the camera plane (z <= 0) have no image; they get ``(0, 0, 0)``,
        whose zero disparity :meth:`triangulate` masks out.
        """
        if not isinstance(points, torch.Tensor) or points.dim() < 1 or points.shape[-1] != 3:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points)
            raise ValueError(f"points must have shape (..., N, 3), got {shape}")
        x, y, z = points.unbind(-1)
        front = z > 0
        inv_z = torch.where(front, 1 / torch.where(front, z, torch.ones_like(z)),
                            torch.zeros_like(z))
        u = torch.where(front, self.fx * x * inv_z + self.cx, torch.zeros_like(x))
        v = torch.where(front, self.fy * y * inv_z + self.cy, torch.zeros_like(y))
        return torch.stack([u, v, self.fx * self.baseline * inv_z], dim=-1)

    def invalid_codes(self, uvd: Tensor, min_disparity: float | None = None) -> Tensor:
        """``(..., N)`` int64 :class:`InvalidReason` codes; 0 where triangulation is valid."""
        _check_uvd(uvd)
        d_min = self._min_disparity(min_disparity)
        u = uvd.detach()
        d = u[..., 2]
        codes = torch.zeros(u.shape[:-1], dtype=torch.int64, device=u.device)
        codes = torch.where(d < d_min, int(InvalidReason.DISPARITY_BELOW_MIN), codes)
        codes = torch.where(d <= 0, int(InvalidReason.NON_POSITIVE_DISPARITY), codes)
        return torch.where(~torch.isfinite(u).all(-1), int(InvalidReason.NON_FINITE), codes)

    def invalid_reasons(self, uvd: Tensor, min_disparity: float | None = None) -> np.ndarray:
        """``(..., N)`` numpy array of human-readable reasons ('' where valid), for logs."""
        codes = self.invalid_codes(uvd, min_disparity).cpu().numpy()
        table = np.array([_REASON_TEXT[r] for r in InvalidReason], dtype=object)
        return table[codes]

    def triangulate(self, uvd: Tensor,
                    min_disparity: float | None = None) -> tuple[Tensor, Tensor]:
        """3D points ``(..., N, 3)`` in the left optical frame and a ``valid (..., N)`` mask.

        ``z = fx B / d``, ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``. Invalid items (see
        :meth:`invalid_codes`) get zeros and a zero gradient, never inf or NaN.
        """
        valid, u, v, d = self._safe_uvd(uvd, min_disparity)
        points = _points_from_uvd(u, v, d, *self._params())
        return torch.where(valid[..., None], points, torch.zeros_like(points)), valid

    # ---------------------------------------------------------------------------------------
    # uncertainty
    # ---------------------------------------------------------------------------------------
    def point_covariance(self, uvd: Tensor, sigma_px: float | Tensor,
                         min_disparity: float | None = None) -> Tensor:
        """First-order covariance ``(..., N, 3, 3)`` [m^2] of the triangulated points.

        ``J diag(s^2, s^2, s^2) J^T`` with ``J = d(x, y, z) / d(u_left, v, u_right)``: each of the
        three pixel coordinates has independent noise of std ``sigma_px`` (float or ``(..., N)``),
        so the disparity has variance ``2 s^2`` and is correlated with ``u_left``. Invalid items
        get zeros.
        """
        valid, u, v, d = self._safe_uvd(uvd, min_disparity)
        s2 = self._sigma(sigma_px, uvd) ** 2
        J = self._jacobian_point_wrt_pixels(u, v, d)
        cov = s2[..., None, None] * (J @ J.transpose(-1, -2))
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        return torch.where(valid[..., None, None], cov, torch.zeros_like(cov))

    def inverse_covariance(self, uvd: Tensor, sigma_px: float | Tensor,
                           min_disparity: float | None = None) -> tuple[Tensor, Tensor]:
        """Matrix weights ``(..., N, 3, 3)`` [1/m^2] and ``valid (..., N)``.

        Computed as ``K^T K / s^2`` with ``K = d(u_left, v, u_right) / d(x, y, z)`` (the
        projection Jacobian, exactly the inverse of the triangulation Jacobian), so no
        ill-conditioned covariance is ever inverted. Symmetric positive definite where valid;
        zeros where invalid, so those points drop out of a weighted cost.
        """
        valid, u, v, d = self._safe_uvd(uvd, min_disparity)
        W = _inverse_covariance(u, v, d, self._sigma(sigma_px, uvd), *self._params())
        return torch.where(valid[..., None, None], W, torch.zeros_like(W)), valid

    # ---------------------------------------------------------------------------------------
    # internals
    # ---------------------------------------------------------------------------------------
    def _min_disparity(self, min_disparity: float | None) -> float:
        d_min = self.min_disparity if min_disparity is None else float(min_disparity)
        if not (math.isfinite(d_min) and d_min > 0):
            raise ValueError(f"min_disparity must be positive and finite, got {d_min}")
        return d_min

    def _safe_uvd(self, uvd: Tensor,
                  min_disparity: float | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``valid`` mask and ``u, v, d`` with invalid items replaced by harmless values.

        Replacing (not just masking the output) keeps NaN/inf out of the backward pass too.
        """
        valid = self.invalid_codes(uvd, min_disparity) == 0
        safe = torch.tensor([self.cx, self.cy, self.fx * self.baseline], dtype=uvd.dtype,
                            device=uvd.device)  # a point 1 m straight ahead
        uvd = torch.where(valid[..., None], uvd, safe)
        u, v, d = uvd.unbind(-1)
        return valid, u, v, d

    def _sigma(self, sigma_px: float | Tensor, uvd: Tensor) -> Tensor:
        """Pixel std as a tensor broadcastable to ``uvd.shape[:-1]``; must be positive."""
        sigma = torch.as_tensor(sigma_px, dtype=uvd.dtype, device=uvd.device)
        try:   # numpy's: torch.broadcast_shapes costs ~0.3 ms a call (torch 2.13, CPU)
            fits = np.broadcast_shapes(tuple(sigma.shape), tuple(uvd.shape[:-1])) == tuple(uvd.shape[:-1])
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"sigma_px must be a float or broadcast to (..., N) = "
                             f"{tuple(uvd.shape[:-1])}, got {tuple(sigma.shape)}")
        if not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
            raise ValueError("sigma_px must be positive and finite")
        return sigma

    def _jacobian_point_wrt_pixels(self, u: Tensor, v: Tensor, d: Tensor) -> Tensor:
        """``d(x, y, z) / d(u_left, v, u_right)``, ``(..., N, 3, 3)``, for ``d = u_l - u_r``.

        With ``p = (x, y, z)``: column u_l = (-p + [B, 0, 0]) / d, column v = [0, fx B / fy, 0]
        / d, column u_r = p / d.
        """
        B, fx, fy = self.baseline, self.fx, self.fy
        inv_d = 1 / d
        x = (u - self.cx) * B * inv_d
        y = (v - self.cy) * (fx / fy) * B * inv_d
        z = fx * B * inv_d
        zero = torch.zeros_like(d)
        col_ul = torch.stack([(B - x) * inv_d, -y * inv_d, -z * inv_d], dim=-1)
        col_v = torch.stack([zero, (fx / fy) * B * inv_d, zero], dim=-1)
        col_ur = torch.stack([x * inv_d, y * inv_d, z * inv_d], dim=-1)
        return torch.stack([col_ul, col_v, col_ur], dim=-1)

    def _params(self) -> tuple[float, float, float, float, float]:
        return self.fx, self.fy, self.cx, self.cy, self.baseline


# -------------------------------------------------------------------------------------------
# the inverse stereo model as functions of the camera parameters (floats or tensors)
# -------------------------------------------------------------------------------------------
def _points_from_uvd(u, v, d, fx, fy, cx, cy, B) -> Tensor:
    """``z = fx B / d``, ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``: ``(..., N, 3)``."""
    z = fx * B / d
    return torch.stack([(u - cx) * (z / fx), (v - cy) * (z / fy), z], dim=-1)


def _pixels_wrt_point(u, v, d, fx, fy, cx, cy, B) -> Tensor:
    """``d(u_left, v, u_right) / d(x, y, z)``, ``(..., N, 3, 3)``, at the triangulated point.

    Rows: ``u_l = fx x/z + cx``, ``v = fy y/z + cy``, ``u_r = fx (x - B)/z + cx``; written in
    pixel quantities, ``fx / z = d / B`` and ``x / z = (u - cx) / fx``.
    """
    a = d / B  # fx / z
    zero = torch.zeros_like(d * a)
    row_ul = torch.stack([a + zero, zero, -a * (u - cx) / fx], dim=-1)
    row_v = torch.stack([zero, a * fy / fx + zero, -a * (v - cy) / fx], dim=-1)
    row_ur = torch.stack([a + zero, zero, -a * (u - d - cx) / fx], dim=-1)
    return torch.stack([row_ul, row_v, row_ur], dim=-2)


def _inverse_covariance(u, v, d, sigma: Tensor, fx, fy, cx, cy, B) -> Tensor:
    """``K^T K / s^2`` with ``K = d(pixels) / d(point)``: ``(..., N, 3, 3)``, symmetrised."""
    K = _pixels_wrt_point(u, v, d, fx, fy, cx, cy, B)
    W = (K.transpose(-1, -2) @ K) / (sigma ** 2)[..., None, None]
    return 0.5 * (W + W.transpose(-1, -2))


def stereo_points(pixels: Tensor, intrinsics: Tensor,
                  sigma_px: float | Tensor = 0.5) -> tuple[Tensor, Tensor]:
    """Inverse stereo model, differentiable in the camera parameters (for calibration).

    Args:
        pixels: ``(..., N, 3)`` measurements ``(u_left, v, u_right)`` in pixels.
        intrinsics: ``(5,)`` tensor ``[fx, fy, cx, cy, baseline]``; may require grad.
        sigma_px: pixel noise std (float or broadcastable to ``(..., N)``).
    Returns:
        points ``(..., N, 3)`` in the left optical frame and their inverse covariances
        ``(..., N, 3, 3)``: the same formulas as :meth:`StereoCamera.triangulate` and
        :meth:`StereoCamera.inverse_covariance`, with gradients w.r.t. ``intrinsics``.
    Raises:
        ValueError: wrong shapes, non-finite values, or a non-positive disparity (a point at or
            behind the camera, or left and right swapped).
    """
    if not isinstance(intrinsics, torch.Tensor) or intrinsics.shape != (5,):
        shape = tuple(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else intrinsics
        raise ValueError(f"intrinsics must be a (5,) tensor [fx, fy, cx, cy, baseline], got {shape}")
    _check_uvd(pixels)
    if not (torch.isfinite(pixels).all() and torch.isfinite(intrinsics).all()):
        raise ValueError("pixels and intrinsics must be finite")
    fx, fy, cx, cy, B = intrinsics.to(pixels.dtype).unbind()
    if not bool((fx > 0) & (fy > 0) & (B > 0)):
        raise ValueError(f"fx, fy and baseline must be positive, got {intrinsics.tolist()}")
    u, v, ur = pixels.unbind(-1)
    d = u - ur
    if not bool((d > 0).all()):
        n = int((d <= 0).sum())
        raise ValueError(f"{n} measurement(s) with non-positive disparity u_left - u_right: a point "
                         f"at or behind the camera, or left and right images swapped")
    sigma = torch.as_tensor(sigma_px, dtype=pixels.dtype, device=pixels.device)
    if not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
        raise ValueError("sigma_px must be positive and finite")
    sigma = sigma.expand(d.shape)
    points = _points_from_uvd(u, v, d, fx, fy, cx, cy, B)
    return points, _inverse_covariance(u, v, d, sigma, fx, fy, cx, cy, B)


def covariance_at(camera: StereoCamera, measured: np.ndarray, cov: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Stereo covariances ``(N, 3, 3)`` of points seen at ``at (N, 3)`` instead of where they were
    measured (``measured (N, 3)``, with covariances ``cov``): each item keeps its own pixel noise,
    read off ``cov``. Evaluated at a noisy measurement, the covariance is smaller for a point
    measured too close and larger for one measured too far, which biases a weighted fit; at a
    better estimate of the point it is not. Items whose ``at`` cannot be seen by the camera keep
    ``cov``. Numpy float64.
    """
    n = len(measured)   # both point sets in one call: per call, the torch overhead is most of the cost
    uvd = camera.project(torch.from_numpy(np.concatenate([measured, at]).astype(np.float64)))
    valid = (camera.invalid_codes(uvd) == 0).numpy()
    c = camera.point_covariance(uvd, 1.0).numpy()
    c0, ok0, c1, ok1 = c[:n], valid[:n], c[n:], valid[n:]
    tr0 = np.trace(c0, axis1=1, axis2=2)
    ok = ok0 & ok1 & (tr0 > 0)
    out = np.array(cov, dtype=np.float64, copy=True)
    out[ok] = c1[ok] * (np.trace(cov[ok], axis1=1, axis2=2) / tr0[ok])[:, None, None]
    return out

"""The registration node's logic without ROS: keypoints in, certified pose out.

Modes:
* ``odometry``: each frame is registered against the current keyframe (a previous frame) and
  poses chain ``T_odom_cam = T_odom_kf @ T_kf_cam``; a certified frame that has moved or turned
  far enough becomes the next keyframe.
* ``map``: each frame is registered against a keyframe of a :class:`~sdpr_loc.data.maps.KeyframeMap`:
  the keyframes nearest the previous pose, or (when there is none, or tracking was lost) the ones
  whose descriptor signature fits the frame best.

Registration: mutual-nearest-neighbour descriptor matches, RANSAC with Mahalanobis gating, a
certified refit (``sdpr_loc.geometry.registration``) with per-match weights
``W = (Sigma_kf + R Sigma_cam R^T)^-1`` (both points are noisy; the current frame's covariance is
rotated into the keyframe by the estimate). The pose covariance is the inverse of the cost's
Gauss-Newton Hessian at the optimum (Laplace approximation), expressed as ROS expects: position
of the camera in the parent frame, then rotation about the parent's fixed x, y, z axes.

A pose is ``certified`` only when the registration's optimality certificate holds AND the data
determine it (enough inliers, not degenerate). Every frame yields a :class:`TrackResult` with a
level (OK / WARN / ERROR) and the reason, whatever happens.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sdpr_loc.vision.keypoints import StereoKeypoints

__all__ = ["TrackerConfig", "TrackResult", "Tracker", "OK", "WARN", "ERROR", "MODES"]

OK, WARN, ERROR = 0, 1, 2
MODES = ("odometry", "map")


@dataclass
class TrackerConfig:
    """Tuning of :class:`Tracker` (the node's parameters of the same names)."""

    mode: str = "odometry"
    match_ratio: float = 0.9            # Lowe ratio on descriptor distances
    min_matches: int = 20               # fewer descriptor matches: no registration attempt
    min_inliers: int = 15               # fewer RANSAC inliers: pose not trusted (a small consensus can be wrong)
    ransac_iterations: int = 128
    ransac_threshold: float = 11.34     # chi-square 3 dof, 99 %
    keyframe_distance: float = 1.0      # m (odometry: new keyframe after this much motion)
    keyframe_angle: float = 10.0        # deg
    max_lost: int = 5                   # odometry: frames without a pose before re-seeding
    map_candidates: int = 3             # map: keyframes tried per frame
    exhaustive: bool = False            # map: try every candidate keyframe, keep the most inliers
                                        # (offline evaluation); False stops at the first good one
    registration: str = "certified"     # "certified"; baselines (never certified): "svd" (Horn),
                                        # "local" (Horn init + Gauss-Newton with the stereo covariances)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.match_ratio <= 1:
            raise ValueError(f"match_ratio must be in (0, 1], got {self.match_ratio}")
        if self.registration not in ("certified", "svd", "local"):
            raise ValueError(f"registration must be 'certified', 'svd' or 'local', got {self.registration!r}")
        if self.min_inliers < 3 or self.min_matches < self.min_inliers:
            raise ValueError("need 3 <= min_inliers <= min_matches")


@dataclass
class TrackResult:
    """Result of one frame. ``T`` (4, 4) is T_parent_camera (parent: odom or map frame) or None."""

    stamp_ns: int
    level: int
    reason: str
    T: np.ndarray | None = None
    covariance: np.ndarray | None = None     # (6, 6): x y z rotX rotY rotZ
    certified: bool = False
    trusted: bool = False                    # certified, or (baselines) enough inliers
    keypoints: int = 0
    matches: int = 0
    inliers: int = 0
    keyframe: int = -1
    min_eig: float = float("nan")
    margin: float = float("nan")
    gap: float = float("nan")
    method: str = "none"
    solve_ms: float = 0.0
    new_keyframe: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class _Keyframe:
    T: np.ndarray               # T_parent_keyframe
    cov: np.ndarray             # (6, 6) left-perturbation covariance of T (parent frame)
    points: np.ndarray          # (M, 3) float64
    sigma: np.ndarray           # (M, 3, 3) covariances
    descriptors: torch.Tensor   # (1, M, D)
    index: int = -1


def _hat(v: np.ndarray) -> np.ndarray:
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=np.float64)


def _angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))


def _adjoint(T: np.ndarray) -> np.ndarray:
    """Adjoint of T for twists ordered (translation, rotation)."""
    R, t = T[:3, :3], T[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = A[3:, 3:] = R
    A[:3, 3:] = _hat(t) @ R
    return A


def _covariances(Wm: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariances (N, 3, 3) from inverse covariances ``Wm`` where ``ok`` and positive definite;
    returns them (zeros elsewhere) and the narrowed mask."""
    ok = ok & np.isfinite(Wm).reshape(len(ok), 9).all(1)
    sigma = np.zeros_like(Wm)
    if ok.any():
        Ws = 0.5 * (Wm[ok] + Wm[ok].transpose(0, 2, 1))
        ev = np.linalg.eigvalsh(Ws)
        pd = ev[:, 0] > 1e-12 * np.maximum(ev[:, -1], 1e-300)
        idx = np.flatnonzero(ok)
        ok[idx[~pd]] = False
        if pd.any():
            sigma[idx[pd]] = np.linalg.inv(Ws[pd])
    return sigma, ok


def _usable(kp: StereoKeypoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """Valid, finite points with positive definite information: (P, Sigma, mask, descriptors)."""
    v = kp.valid[0].cpu().numpy().astype(bool)
    P = kp.points[0].detach().cpu().numpy().astype(np.float64)
    Wm = kp.inv_cov[0].detach().cpu().numpy().astype(np.float64)
    ok = v & np.isfinite(P).all(1) & (P[:, 2] > 0)
    sigma, ok = _covariances(Wm, ok)
    desc = kp.descriptors[:, ok].detach().to(torch.float32)
    return P[ok], sigma[ok], ok, desc


class Tracker:
    """Per-frame certified localization; see the module docstring.

    Args:
        config: TrackerConfig.
        keyframe_map: KeyframeMap (required in ``map`` mode).
        initial_pose: (4, 4) T_parent_camera of the first frame in ``odometry`` mode (identity).
    """

    def __init__(self, config: TrackerConfig | None = None, keyframe_map=None,
                 initial_pose: np.ndarray | None = None) -> None:
        self.config = config or TrackerConfig()
        if self.config.mode == "map" and (keyframe_map is None or len(keyframe_map) == 0):
            raise ValueError("map mode needs a keyframe map with at least one keyframe")
        self.map = keyframe_map
        self.initial_pose = np.eye(4) if initial_pose is None else np.asarray(initial_pose, float)
        self.keyframe: _Keyframe | None = None
        self.last_T: np.ndarray | None = None
        self.lost = 0
        self._gen = torch.Generator().manual_seed(int(self.config.seed))
        self._map_cache: dict[int, _Keyframe] = {}

    def reset(self) -> None:
        self.keyframe, self.last_T, self.lost = None, None, 0

    # ------------------------------------------------------------------------------------------
    def process(self, kp: StereoKeypoints, stamp_ns: int) -> TrackResult:
        """Localize one frame (``kp`` with B = 1). Never raises on bad data: it reports it."""
        P, sigma, _, desc = _usable(kp)
        n = int(P.shape[0])
        if n < self.config.min_inliers:
            return self._fail(stamp_ns, ERROR, f"too few usable keypoints ({n} < {self.config.min_inliers}): "
                              "dark, blurred or textureless frame", n)
        if self.config.mode == "map":
            return self._process_map(kp, P, sigma, desc, stamp_ns)
        return self._process_odometry(P, sigma, desc, stamp_ns)

    def _fail(self, stamp_ns: int, level: int, reason: str, n: int, **kw) -> TrackResult:
        self.lost += 1
        return TrackResult(stamp_ns=stamp_ns, level=level, reason=reason, keypoints=n, **kw)

    # ----- odometry -----
    def _process_odometry(self, P, sigma, desc, stamp_ns) -> TrackResult:
        cfg = self.config
        if self.keyframe is None or self.lost > cfg.max_lost:
            restart = self.keyframe is not None
            T0 = self.last_T if (restart and self.last_T is not None) else self.initial_pose
            cov0 = self.keyframe.cov if restart else np.zeros((6, 6))
            self.keyframe = _Keyframe(T0.copy(), cov0, P, sigma, desc)
            self.lost = 0
            why = ("tracking lost: re-seeded the keyframe at the last pose (odometry drift added)"
                   if restart else "first keyframe: it defines the odometry origin")
            return TrackResult(stamp_ns=stamp_ns, level=WARN if restart else OK, reason=why,
                                keypoints=len(P), new_keyframe=True)
        res = self._register(P, sigma, desc, self.keyframe, stamp_ns)
        if res.T is None or not res.trusted:
            return res
        self.last_T = res.T
        rel = np.linalg.inv(self.keyframe.T) @ res.T
        if (np.linalg.norm(rel[:3, 3]) >= cfg.keyframe_distance or _angle_deg(rel[:3, :3]) >= cfg.keyframe_angle
                or res.inliers < 3 * cfg.min_inliers):
            self.keyframe = _Keyframe(res.T.copy(), res.extra.pop("cov_left"), P, sigma, desc)
            res.new_keyframe = True
        return res

    # ----- map -----
    def _map_keyframe(self, i: int) -> _Keyframe:
        if i not in self._map_cache:
            if len(self._map_cache) > 64:
                self._map_cache.clear()
            kp = self.map.keyframe(int(i))
            P, sigma, _, desc = _usable(kp)
            self._map_cache[i] = _Keyframe(self.map.poses[i], np.zeros((6, 6)), P, sigma, desc, int(i))
        return self._map_cache[i]

    def _process_map(self, kp: StereoKeypoints, P, sigma, desc, stamp_ns) -> TrackResult:
        if desc.shape[-1] != self.map.descriptor_dim:
            return self._fail(stamp_ns, ERROR, f"descriptor length {desc.shape[-1]} differs from the map's "
                              f"{self.map.descriptor_dim} (map built with frontend {self.map.frontend!r})", len(P))
        return self._search_map(lambda: kp, lambda kf: self._register(P, sigma, desc, kf, stamp_ns),
                                stamp_ns, len(P))

    def process_dense(self, frame, stamp_ns: int) -> TrackResult:
        """Map mode with dense matching: each candidate keyframe's keypoints are matched against
        ``frame`` (:class:`~sdpr_loc.vision.dense.DenseFrame`, the live frame's network outputs),
        as the network was trained. ``TrackResult.keypoints`` counts the keyframe keypoints searched.
        Never raises on bad data: it reports it."""
        if self.config.mode != "map":
            raise ValueError("dense matching localizes against a map: use mode 'map'")
        if frame.descriptor_dim != self.map.descriptor_dim:
            return self._fail(stamp_ns, ERROR, f"descriptor length {frame.descriptor_dim} differs from the "
                              f"map's {self.map.descriptor_dim} (map built with frontend {self.map.frontend!r})", 0)
        return self._search_map(lambda: frame.keypoints,
                                lambda kf: self._register_dense(frame, kf, stamp_ns), stamp_ns, 0)

    def _search_map(self, place_keypoints, register, stamp_ns: int, n: int) -> TrackResult:
        """Try the candidate keyframes: nearest the last pose, or when lost the best place
        signatures of ``place_keypoints()`` (the live frame's keypoints, only computed then)."""
        cfg = self.config
        tracking = self.last_T is not None and self.lost <= cfg.max_lost
        if tracking:
            order = self.map.nearest(self.last_T, k=cfg.map_candidates)
        else:
            order = self.map.candidates(place_keypoints(), k=cfg.map_candidates)
        best = None
        for i in order:
            res = register(self._map_keyframe(int(i)))
            if best is None or (res.trusted, res.inliers) > (best.trusted, best.inliers):
                best = res
            if res.trusted and res.inliers >= 3 * cfg.min_inliers and not cfg.exhaustive:
                break
        if best is None:
            return self._fail(stamp_ns, ERROR, "no candidate keyframe (no place signature fits)", n)
        if best.T is not None and best.trusted:
            self.last_T = best.T
        if not tracking:
            best.reason = (best.reason + "; " if best.reason else "") + "relocalized by place signature"
        best.extra.pop("cov_left", None)
        return best

    # ----- one registration -----
    def _register(self, P, sigma, desc, kf: _Keyframe, stamp_ns: int) -> TrackResult:
        """Keypoint-to-keypoint descriptor matches with the keyframe, then :meth:`_solve`."""
        from sdpr_loc.vision.matching import hard_match

        cfg = self.config
        n = len(P)
        t0 = time.perf_counter()
        if desc.shape[-1] != kf.descriptors.shape[-1]:
            return self._fail(stamp_ns, ERROR, "descriptor length differs from the keyframe's", n,
                              keyframe=kf.index)
        idx, matched, _ = hard_match(desc, kf.descriptors, ratio=cfg.match_ratio)
        m = matched[0].numpy()
        j = idx[0].numpy()[m]
        nm = int(m.sum())
        if nm < cfg.min_matches:
            return self._fail(stamp_ns, ERROR, f"too few descriptor matches with keyframe "
                              f"({nm} < {cfg.min_matches})", n, matches=nm, keyframe=kf.index)
        return self._solve(P[m], sigma[m], kf.points[j], kf.sigma[j], kf, n, nm, stamp_ns, t0)

    def _register_dense(self, frame, kf: _Keyframe, stamp_ns: int) -> TrackResult:
        """Keyframe keypoints matched densely in the live frame, then :meth:`_solve`."""
        cfg = self.config
        n = len(kf.points)
        t0 = time.perf_counter()
        dm = frame.match(kf.descriptors[0])
        ok = dm.valid & np.isfinite(dm.points).all(1) & (dm.points[:, 2] > 0)
        S_src, m = _covariances(dm.inv_cov, ok)
        nm = int(m.sum())
        if nm < cfg.min_matches:
            return self._fail(stamp_ns, ERROR, f"too few dense matches with keyframe "
                              f"({nm} < {cfg.min_matches})", n, matches=nm, keyframe=kf.index)
        return self._solve(dm.points[m], S_src[m], kf.points[m], kf.sigma[m], kf, n, nm, stamp_ns, t0)

    def _solve(self, src, S_src, trg, S_trg, kf: _Keyframe, n: int, nm: int, stamp_ns: int,
               t0: float) -> TrackResult:
        """RANSAC + (certified) registration of live points ``src`` onto keyframe points ``trg``
        (covariances ``S_src``, ``S_trg``), the Laplace covariance and the verdict."""
        from sdpr_loc.geometry.registration import ransac, register

        cfg = self.config
        W0 = np.linalg.inv(S_trg + S_src)
        # Horn/SVD takes scalar weights only: the inverse mean variance of each match (what a user
        # of the closed form would do); the other methods use the full 3x3 information matrices
        w = np.ones(len(src))
        if cfg.registration == "svd":
            w = 3.0 / np.trace(S_trg + S_src, axis1=1, axis2=2)
            w = w / w.max()
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
        try:
            reg, inl = ransac(T(src), T(trg), weights=T(w), inv_cov=T(W0), threshold=cfg.ransac_threshold,
                              iterations=cfg.ransac_iterations, generator=self._gen, method=cfg.registration)
            R = reg.R[0].numpy()
            if _angle_deg(R) > 1.0:  # re-weight with the source covariance rotated into place
                W = np.linalg.inv(S_trg + R @ S_src @ R.T)
                init = reg.T.detach()
                reg = register(T(src), T(trg), weights=inl.to(torch.float64) * T(w), inv_cov=T(W), init=init,
                               method=cfg.registration)
            else:
                W = W0
        except (ValueError, RuntimeError, torch.linalg.LinAlgError) as err:
            return self._fail(stamp_ns, ERROR, f"registration failed: {err}", n, matches=nm, keyframe=kf.index)
        solve_ms = 1e3 * (time.perf_counter() - t0)
        cert = reg.certificate
        inliers = inl[0].numpy()
        ni = int(inliers.sum())
        R, t = reg.R[0].detach().numpy(), reg.t[0].detach().numpy()
        if not (np.isfinite(R).all() and np.isfinite(t).all()):
            return self._fail(stamp_ns, ERROR, "registration returned a non-finite pose", n,
                              matches=nm, inliers=ni, keyframe=kf.index)
        T_kf_cam = np.eye(4)
        T_kf_cam[:3, :3], T_kf_cam[:3, 3] = R, t
        T_par = kf.T @ T_kf_cam
        # Laplace covariance: J_i = d e_i / d(rho, phi) = [-I, [p_i]x], p_i = R src_i + t
        p = src[inliers] @ R.T + t
        Wi = W[inliers]
        J = np.zeros((ni, 3, 6))
        J[:, :, :3] = -np.eye(3)
        J[:, :, 3:] = np.stack([_hat(q) for q in p]) if ni else np.zeros((0, 3, 3))
        info = np.einsum("nai,nab,nbj->ij", J, Wi, J)
        cov_kf = np.linalg.pinv(info, hermitian=True)
        Ad = _adjoint(kf.T)
        cov_left = kf.cov + Ad @ cov_kf @ Ad.T
        G = np.eye(6)
        G[:3, 3:] = -_hat(T_par[:3, 3])      # left twist -> (position, fixed-axis rotation)
        cov = G @ cov_left @ G.T
        certified = bool(cert.certified[0]) and ni >= cfg.min_inliers
        trusted = certified or (cfg.registration != "certified" and ni >= cfg.min_inliers)
        reason = str(cert.reason[0]) if cert.reason else ""
        if ni < cfg.min_inliers:
            level, reason = ERROR, f"too few inliers ({ni} < {cfg.min_inliers})"
        elif not bool(cert.certified[0]):
            level, reason = WARN, f"not certified: {reason or 'certificate failed'}"
        else:
            level = OK
        if trusted:
            self.lost = 0
        else:
            self.lost += 1
        f = lambda x: float(x[0]) if x is not None else float("nan")  # noqa: E731
        return TrackResult(stamp_ns=stamp_ns, level=level, reason=reason, T=T_par, covariance=cov,
                            certified=certified, trusted=trusted, keypoints=n, matches=nm, inliers=ni, keyframe=kf.index,
                            min_eig=f(cert.min_eig), margin=f(cert.margin), gap=f(cert.gap),
                            method=str(cert.method[0]) if cert.method else "none", solve_ms=solve_ms,
                            extra={"cov_left": cov_left})

"""Per-frame certified localization without ROS: a live frame in, a certified pose out.

One path for every kind of live frame (:mod:`sdpr_loc.vision.frames`): a frame knows how to
find a keyframe's keypoints in itself (descriptor nearest neighbours for keypoint frames, dense
search for :class:`~sdpr_loc.vision.dense.DenseFrame`), the tracker does the rest.

Modes:
* ``odometry``: each frame is registered against the current keyframe (a previous frame) and
  poses chain ``T_odom_cam = T_odom_kf @ T_kf_cam``; a certified frame that has moved or turned
  far enough becomes the next keyframe (``record=True`` keeps them: teaching a map).
* ``map``: each frame is registered against a keyframe of a :class:`~sdpr_loc.data.maps.KeyframeMap`:
  the keyframes nearest the predicted pose, or (when there is none, or tracking was lost) the ones
  most of the frame's descriptors point to (nearest map descriptors: place recognition).

Pose prior: a constant-velocity prediction from the last two trusted poses, with an error
covariance that grows with the time since the last trusted pose (``prior_sigma_mps``,
``prior_sigma_dps``), or an initial pose with its covariance (:meth:`Tracker.set_pose`). With a
prior, dense frames search each keypoint only in a window around its predicted pixel, sized from
the prior's covariance (guided); without one (start-up, no velocity yet, lost) they search the
whole image (exhaustive); a frame whose guided search gives no trusted pose is
searched exhaustively once more.

Registration: RANSAC with Mahalanobis gating, a certified refit
(``sdpr_loc.geometry.registration``) with per-match weights ``W = (Sigma_kf + R Sigma_cam R^T)^-1``
(both points are noisy; the current frame's covariance is rotated into the keyframe by the
estimate). Matching settings (ratio test, gate, RANSAC iterations) are the model's
:class:`~sdpr_loc.vision.pipeline.LocalizerConfig`. The pose covariance is the inverse of the
cost's Gauss-Newton Hessian at the optimum (Laplace approximation), expressed as ROS expects:
position of the camera in the parent frame, then rotation about the parent's fixed x, y, z axes.

A pose is ``certified`` only when the registration's optimality certificate holds AND the data
determine it (enough inliers, not degenerate). Every frame yields a :class:`TrackResult` with a
level (OK / WARN / ERROR) and the reason, whatever happens.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from sdpr_loc.geometry.se3 import adjoint_np, hat_np, rotation_angle_deg, se3_exp_np, se3_log_np

from . import integrity as integ
from .frames import Keyframe, KeypointFrame, PosePrior
from .keypoints import StereoKeypoints
from .pipeline import LocalizerConfig, ransac_settings

__all__ = ["TrackerConfig", "TrackResult", "Tracker", "OK", "WARN", "ERROR", "MODES"]

OK, WARN, ERROR = 0, 1, 2
MODES = ("odometry", "map")


@dataclass
class TrackerConfig:
    """Tuning of :class:`Tracker` (the node's parameters of the same names)."""

    mode: str = "odometry"
    min_matches: int = 20               # fewer matches: no registration attempt
    min_inliers: int = 15               # fewer RANSAC inliers: pose not trusted (a small consensus can be wrong)
    keyframe_distance: float = 1.0      # m (odometry: new keyframe after this much motion)
    keyframe_angle: float = 10.0        # deg
    max_lost: int = 5                   # frames without a pose before re-seeding / relocalizing
    map_candidates: int = 3             # map: keyframes tried per frame
    enough_inliers: int = 45            # map: a trusted candidate with this many inliers ends the search
    exhaustive: bool = False            # map: try every candidate keyframe, keep the most inliers
                                        # (offline evaluation); False stops at the first good one
    registration: str = "certified"     # "certified"; baselines (never certified): "svd" (Horn),
                                        # "local" (Horn init + Gauss-Newton with the stereo covariances)
    guided: bool = True                 # dense frames: search windows around the predicted pixels
                                        # when there is a prediction (False: the whole image, always)
    prior_sigma_mps: float = 0.2        # std of the constant-velocity prediction error, m per s
    prior_sigma_dps: float = 2.0        # ... deg per s (since the last trusted pose)
    search_sigmas: float = 3.0          # guided window half-size: this many pixel std devs
    search_min_px: int = 3              # guided window half-size bounds (px)
    search_max_px: int = 16
    noise_refits: int = 2               # refits with the point covariances taken at the fused point
                                        # estimates (0: at the measured points, which biases the pose)
    seed: int = 0
    integrity: integ.IntegrityConfig = field(default_factory=integ.IntegrityConfig)  # checks, calibration

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.registration not in ("certified", "svd", "local"):
            raise ValueError(f"registration must be 'certified', 'svd' or 'local', got {self.registration!r}")
        if self.min_inliers < 3 or self.min_matches < self.min_inliers or self.enough_inliers < self.min_inliers:
            raise ValueError("need 3 <= min_inliers <= min_matches and min_inliers <= enough_inliers")
        if not 1 <= self.search_min_px <= self.search_max_px:
            raise ValueError(f"need 1 <= search_min_px <= search_max_px, got {self.search_min_px}, "
                             f"{self.search_max_px}")
        if not (self.prior_sigma_mps > 0 and self.prior_sigma_dps > 0 and self.search_sigmas > 0):
            raise ValueError("prior_sigma_mps, prior_sigma_dps and search_sigmas must be positive")
        if self.noise_refits < 0:
            raise ValueError(f"noise_refits must be >= 0, got {self.noise_refits}")


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
    keypoints: int = 0                       # keypoints searched (live ones, or the keyframe's for dense)
    matches: int = 0
    inliers: int = 0
    keyframe: int = -1
    min_eig: float = float("nan")
    margin: float = float("nan")
    gap: float = float("nan")
    method: str = "none"
    solve_ms: float = 0.0
    new_keyframe: bool = False
    search: str = ""                         # "guided", "exhaustive" (dense) or "keypoints"
    extra: dict = field(default_factory=dict)
    integrity: str = integ.FAIL              # OK / WARN / FAIL (vision/integrity.py); apart from certified
    integrity_reasons: list = field(default_factory=list)
    integrity_stats: dict = field(default_factory=dict)   # chi2, chi2_p, inlier_ratio, innovation, ...
    relocalized: bool = False                # no prior vouched for the pose: judged like a relocalization


class Tracker:
    """Per-frame certified localization; see the module docstring.

    Args:
        config: TrackerConfig.
        keyframe_map: KeyframeMap (required in ``map`` mode).
        initial_pose: (4, 4) T_parent_camera of the first frame in ``odometry`` mode (identity).
        matching: the model's LocalizerConfig (ratio test, RANSAC gate); defaults otherwise.
        record: odometry mode: keep every keyframe made (:attr:`recorded`) to build a map.
    """

    def __init__(self, config: TrackerConfig | None = None, keyframe_map=None,
                 initial_pose: np.ndarray | None = None, matching: LocalizerConfig | None = None,
                 record: bool = False) -> None:
        self.config = config or TrackerConfig()
        if self.config.mode == "map" and (keyframe_map is None or len(keyframe_map) == 0):
            raise ValueError("map mode needs a keyframe map with at least one keyframe")
        self.map = keyframe_map
        self.matching = matching or LocalizerConfig()
        self.initial_pose = np.eye(4) if initial_pose is None else np.asarray(initial_pose, float)
        self.record = bool(record)
        self.recorded: list[tuple[np.ndarray, int, StereoKeypoints]] = []
        self.keyframe: Keyframe | None = None
        self._gen = torch.Generator().manual_seed(int(self.config.seed))
        self._map_cache: dict[int, Keyframe] = {}
        self._tried: list[TrackResult] = []     # this frame's registrations (integrity: agreement)
        self.reset()

    @property
    def same_drive(self) -> bool:
        """Keyframes are earlier frames of this drive (odometry, teach), not a map's."""
        return self.config.mode == "odometry"

    def reset(self) -> None:
        """Forget the trajectory (keyframe, last poses, velocity); the map and recordings stay."""
        self.keyframe, self.last_T, self.lost = None, None, 0
        self.last_cov: np.ndarray | None = None    # error of an externally given last_T (set_pose)
        self.last_stamp: int | None = None
        self.velocity: np.ndarray | None = None    # body twist per second (translation, rotation)
        self._velocity_dt, self._pose_cov = 0.1, None    # the velocity's last interval (s), last pose's body cov
        self._vouches = True                 # the last pose may vouch for the next (see _trusted_pose)
        self._search_owed = False            # the next frame searches everywhere (see _process_map)

    def set_pose(self, T: np.ndarray, stamp_ns: int | None = None, cov: np.ndarray | None = None) -> None:
        """Give a pose prior (an initial pose estimate, e.g. RViz's ``initialpose``) with the
        covariance ``cov (6, 6)`` of its error (a perturbation in the camera frame, translation
        then rotation; None: exact). With ``stamp_ns`` None (an operator's estimate: its time says
        nothing) or equal to the next frame's, the next frame is searched in windows sized from
        ``cov``; else, with no velocity yet, around the keyframes nearest it, exhaustively. The
        velocity follows from the first two tracked poses."""
        self.last_T = np.asarray(T, dtype=np.float64)
        self.last_cov = None if cov is None else np.asarray(cov, dtype=np.float64)
        self.last_stamp = stamp_ns
        self.velocity, self._pose_cov = None, None
        self.lost, self._vouches = 0, True

    # ------------------------------------------------------------------------------------------
    def process(self, frame, stamp_ns: int, hurry: bool | Callable[[], bool] = False) -> TrackResult:
        """Localize one live frame (a frames.py frame, a DenseFrame, or StereoKeypoints with B = 1,
        taken as a KeypointFrame). Never raises on bad data: it reports it.

        hurry: "a newer frame is waiting" (a real-time caller), or a function asked at each
        decision. Hurried, the first trusted candidate keyframe ends the search when a motion
        prediction will check its pose (a relocalization still tries them all: their agreement
        is its check), and a frame whose guided search gives no pose it would publish (none
        trusted, or integrity FAIL) is not searched exhaustively once more (0.1-0.2 s on 2 CPU
        cores); the next frame is searched around a prediction whose uncertainty has grown with
        the time, and relocalizes after ``max_lost`` frames. Offline evaluation never hurries."""
        if not callable(hurry):
            hurry = (lambda: True) if hurry else (lambda: False)
        if isinstance(frame, StereoKeypoints):
            frame = KeypointFrame(frame, self.matching)
        if isinstance(frame, KeypointFrame) and len(frame.points) < self.config.min_inliers:
            n = len(frame.points)
            return self._fail(stamp_ns, ERROR, f"too few usable keypoints ({n} < {self.config.min_inliers}): "
                              "dark, blurred or textureless frame", n)
        if self.map is not None and frame.descriptor_dim != self.map.descriptor_dim:
            return self._fail(stamp_ns, ERROR, f"descriptor length {frame.descriptor_dim} differs from the "
                              f"map's {self.map.descriptor_dim} (map built with frontend {self.map.frontend!r})", 0)
        if self.config.mode == "map":
            return self._process_map(frame, stamp_ns, hurry)
        return self._process_odometry(frame, stamp_ns, hurry)

    def _fail(self, stamp_ns: int, level: int, reason: str, n: int, **kw) -> TrackResult:
        self.lost += 1
        return TrackResult(stamp_ns=stamp_ns, level=level, reason=reason, keypoints=n, **kw)

    # ----- pose prior -----
    def _predict(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Motion prediction ``(T_parent_camera, cov)`` from the last trusted pose; ``cov`` (6, 6)
        is the error covariance of the prediction (a perturbation in the camera frame,
        translation then rotation): constant velocity, error ``prior_sigma_*`` per second since
        that pose, plus the error of an initial pose (:meth:`set_pose`). ``cov`` is None when
        there is no velocity yet for a later frame: the pose is then only good for choosing
        nearby keyframes, not for windows (a zero-velocity guess at 5 m/s misses by metres and
        would pull the search, and with it the pose, towards no motion). None without a pose
        to start from (relocalize)."""
        if self.last_T is None or self.lost > self.config.max_lost:
            return None
        dt = 0.0 if self.last_stamp is None else max((stamp_ns - self.last_stamp) * 1e-9, 0.0)
        if self.velocity is None and dt > 1e-3:
            return self.last_T, None
        T = self.last_T if self.velocity is None else self.last_T @ se3_exp_np(self.velocity * dt)
        dt = max(dt, 0.02)
        st = self.config.prior_sigma_mps * dt
        sr = math.radians(self.config.prior_sigma_dps) * dt
        cov = np.diag([st * st] * 3 + [sr * sr] * 3)
        return T, cov if self.last_cov is None else cov + self.last_cov

    def _prior(self, pred, kf: Keyframe) -> PosePrior | None:
        if pred is None or pred[1] is None or not self.config.guided:
            return None
        cfg = self.config
        return PosePrior(np.linalg.inv(pred[0]) @ kf.T, pred[1], cfg.search_sigmas, cfg.search_min_px,
                         cfg.search_max_px)

    def _trusted_pose(self, res: TrackResult, stamp_ns: int) -> None:
        """Remember a trusted pose; the velocity is the mean of the last two frame-to-frame
        twists (one noisy pose moves the prediction half as much). A pose nothing vouched for
        that failed integrity is tracked from, but its prediction does not vouch for the next
        pose, nor do the ones after it until a pose passes: one wrong pose 3 m off gave a
        prediction tight enough to vouch for the next, as wrong, and the innovation test then
        followed the wrong track (validation sims of the ROS graph, worlds 0 and 17)."""
        T = res.T
        if (self.last_T is not None and self.last_cov is None and self.last_stamp is not None
                and stamp_ns > self.last_stamp and self.lost <= self.config.max_lost):
            self._velocity_dt = (stamp_ns - self.last_stamp) * 1e-9
            v = se3_log_np(np.linalg.inv(self.last_T) @ T) / self._velocity_dt
            self.velocity = v if self.velocity is None else 0.5 * (self.velocity + v)
        else:
            self.velocity = None
        self._pose_cov = integ.body_covariance(res.covariance, T) if res.covariance is not None else None
        self.last_T, self.last_stamp, self.lost, self.last_cov = T, stamp_ns, 0, None
        self._vouches = res.integrity != integ.FAIL or not res.relocalized

    def _prediction_noise(self, stamp_ns: int) -> np.ndarray:
        """Error covariance the noise of the poses behind the velocity adds to the prediction
        (body frame): with the velocity the mean of the last two twists and ``a`` the time ahead
        over their interval, the error is ``(1 + a/2) e_k - (a/2) e_(k-2)`` (pose errors
        ``e``; both taken with the last pose's covariance). A few cm of pose noise over 0.1 s is
        a velocity error of tenths of m/s: without this, correct poses failed the innovation test."""
        if self.velocity is None or self._pose_cov is None or self.last_stamp is None:
            return np.zeros((6, 6))
        a = max((stamp_ns - self.last_stamp) * 1e-9, 0.0) / max(self._velocity_dt, 1e-3)
        return ((1 + a / 2) ** 2 + (a / 2) ** 2) * self._pose_cov

    def _velocity_predicted(self, pred) -> bool:
        """``pred`` (:meth:`_predict`) extrapolates a velocity: its innovation test checks the pose."""
        return pred is not None and pred[1] is not None and self.velocity is not None

    def _reach(self, stamp_ns: int) -> np.ndarray:
        """Body covariance of where the platform can be since the last trusted pose when no
        velocity is known: a third of ``max_speed_mps`` / ``max_turn_dps`` over the elapsed time
        as 1 sigma, plus the last pose's own error (a relocalized pose 6.7 m from the one a
        frame before passed every other check)."""
        icfg = self.config.integrity
        dt = max((stamp_ns - self.last_stamp) * 1e-9, 0.02)
        st, sr = icfg.max_speed_mps * dt / 3, math.radians(icfg.max_turn_dps) * dt / 3
        cov = np.diag([st * st] * 3 + [sr * sr] * 3)
        for extra in (self.last_cov, self._pose_cov):
            if extra is not None:
                cov = cov + extra
        return cov

    # ----- odometry -----
    def _process_odometry(self, frame, stamp_ns, hurry: Callable[[], bool]) -> TrackResult:
        cfg = self.config
        if self.keyframe is None or self.lost > cfg.max_lost:
            restart = self.keyframe is not None
            T0 = self.last_T if (restart and self.last_T is not None) else self.initial_pose
            cov0 = self.keyframe.cov if restart else np.zeros((6, 6))
            kf = self._new_keyframe(frame, T0, cov0, stamp_ns)
            if len(kf.points) < cfg.min_inliers:
                return self._fail(stamp_ns, ERROR, f"too few usable keypoints for a keyframe "
                                  f"({len(kf.points)} < {cfg.min_inliers})", len(kf.points))
            self.keyframe = kf
            self.set_pose(T0, stamp_ns)
            why = ("tracking lost: re-seeded the keyframe at the last pose (odometry drift added)"
                   if restart else "first keyframe: it defines the odometry origin")
            return TrackResult(stamp_ns=stamp_ns, level=WARN if restart else OK, reason=why,
                               keypoints=len(kf.points), new_keyframe=True)
        pred = self._predict(stamp_ns)
        prior = self._prior(pred, self.keyframe)
        lost = self.lost
        res = self._register(frame, self.keyframe, prior, stamp_ns)
        self._check_integrity(res, stamp_ns, pred)
        if prior is not None and not _publishable(res) and not isinstance(frame, KeypointFrame) and not hurry():
            again = self._register(frame, self.keyframe, None, stamp_ns)   # the guided try does not count
            self._check_integrity(again, stamp_ns, pred)
            res = again if _better(again, res) else res
            self.lost = lost + (res.T is None)
        cov_left = res.extra.pop("cov_left", None)
        if res.T is None or not res.trusted:
            return res
        self._trusted_pose(res, stamp_ns)
        rel = np.linalg.inv(self.keyframe.T) @ res.T
        if (np.linalg.norm(rel[:3, 3]) >= cfg.keyframe_distance or rotation_angle_deg(rel[:3, :3]) >= cfg.keyframe_angle
                or res.inliers < 3 * cfg.min_inliers):
            kf = self._new_keyframe(frame, res.T, cov_left, stamp_ns)
            if len(kf.points) >= cfg.min_inliers:
                self.keyframe = kf
                res.new_keyframe = True
        return res

    def _new_keyframe(self, frame, T: np.ndarray, cov: np.ndarray, stamp_ns: int) -> Keyframe:
        kp = frame.keypoints
        if self.record and int(kp.valid[0].sum()) >= self.config.min_inliers:
            self.recorded.append((np.array(T, dtype=np.float64), int(stamp_ns), kp.detach().to("cpu")))
        return Keyframe.from_keypoints(kp, T, cov)

    # ----- map -----
    def _map_keyframe(self, i: int) -> Keyframe:
        if i not in self._map_cache:
            if len(self._map_cache) > 64:
                self._map_cache.clear()
            self._map_cache[i] = Keyframe.from_keypoints(self.map.keyframe(int(i)), self.map.poses[i], index=int(i))
        return self._map_cache[i]

    def _process_map(self, frame, stamp_ns: int, hurry: Callable[[], bool]) -> TrackResult:
        """Try the candidate keyframes: nearest the predicted pose (guided search), or when there
        is no prediction the keyframes the frame's descriptors vote for (exhaustive). When no
        guided registration is published, the same candidates are searched exhaustively; a
        tracker that is behind owes that search to the next frame instead, which then searches
        its candidates everywhere straight away.

        Why the debt: windows around a prediction extrapolated from an imprecise pose miss the
        true pixels (night frames of a fresh world: 2-3 window radii off, the whole-image search
        found twice the matches), so the next frame's windows would miss them as well, frame
        after frame. Through the ROS graph (world 102, alternated runs): success 72.7 -> 76.5 %,
        published poses missing 0.25 m / 2 deg 8.4 -> 4.6 %, as many frames processed."""
        cfg = self.config
        pred = self._predict(stamp_ns)
        owed, self._search_owed = self._search_owed, False
        predicted = pred is not None and pred[1] is not None    # a motion prediction with its covariance
        if predicted:
            order = self.map.nearest(pred[0], k=cfg.map_candidates)
        else:   # no motion prediction (the last pose alone is metres off at speed): place recognition
            order = self.map.candidates(frame.place_descriptors, k=cfg.map_candidates)
        lost = self.lost
        # hurried, the first trusted candidate ends the search only when a motion prediction will
        # check its pose (innovation): without one, the other candidates' agreement is the check
        # (a relocalization stopped at its first candidate published a pose 6.7 m off)
        stop = hurry if self._velocity_predicted(pred) else (lambda: False)
        guided = predicted and not owed and cfg.guided and not isinstance(frame, KeypointFrame)
        best = self._best_candidate(frame, order, None if owed else pred, stamp_ns, stop)
        if best is not None:
            self._check_integrity(best, stamp_ns, pred)
        # windows around a wrong prediction find a wrong pose, or too few matches: searched
        # everywhere, the same candidates give the pose when the windows missed it
        if guided and (best is None or not _publishable(best)):
            if hurry():
                self._search_owed = True
            else:
                again = self._best_candidate(frame, order, None, stamp_ns, stop)
                if again is not None:
                    self._check_integrity(again, stamp_ns, pred)   # agreement among these tries only
                    if _better(again, best):
                        best = again
        self.lost = lost                       # one frame, however many candidates failed
        if best is None:
            return self._fail(stamp_ns, ERROR, "no candidate keyframe (no descriptor votes for one)", 0)
        # a relocalization that fails integrity does not start tracking (tracked from, a wrong one
        # is followed consistently, and every later check agrees with it)
        if best.T is not None and best.trusted and not (pred is None and best.integrity == integ.FAIL):
            self._trusted_pose(best, stamp_ns)
        else:
            self.lost += 1
        if pred is None:
            _add_reason(best, "relocalized by place recognition")
        elif owed:
            _add_reason(best, "searched everywhere: owed by the frame before")
        best.extra.pop("cov_left", None)
        return best

    def _best_candidate(self, frame, order, pred, stamp_ns: int, stop: Callable[[], bool]) -> TrackResult | None:
        """The candidate with the most inliers, trusted first; ``stop()`` asked after a trusted one."""
        cfg, best = self.config, None
        for i in order:
            kf = self._map_keyframe(int(i))
            res = self._register(frame, kf, self._prior(pred, kf), stamp_ns)
            if best is None or (res.trusted, res.inliers) > (best.trusted, best.inliers):
                best = res
            if res.trusted and not cfg.exhaustive and (res.inliers >= cfg.enough_inliers or stop()):
                break
        return best

    # ----- one registration -----
    def _register(self, frame, kf: Keyframe, prior: PosePrior | None, stamp_ns: int) -> TrackResult:
        """Correspondences of ``frame`` with ``kf``, then :meth:`_solve`."""
        t0 = time.perf_counter()
        if frame.descriptor_dim != kf.descriptors.shape[-1]:
            return self._fail(stamp_ns, ERROR, "descriptor length differs from the keyframe's", 0,
                              keyframe=kf.index)
        corr = frame.correspond(kf, prior, same_drive=self.same_drive)
        search = "keypoints" if isinstance(frame, KeypointFrame) else ("guided" if prior else "exhaustive")
        nm = len(corr.index)
        if nm < self.config.min_matches:
            return self._fail(stamp_ns, ERROR, f"too few matches with keyframe ({nm} < {self.config.min_matches}, "
                              f"{search} search)", corr.searched, matches=nm, keyframe=kf.index, search=search)
        res = self._solve(corr.src, corr.S_src, kf.points[corr.index], kf.sigma[corr.index], kf,
                          corr.searched, nm, stamp_ns, t0, corr.camera)
        res.search = search
        return res

    def _solve(self, src, S_src, trg, S_trg, kf: Keyframe, n: int, nm: int, stamp_ns: int,
               t0: float, camera=None) -> TrackResult:
        """RANSAC + (certified) registration of live points ``src`` onto keyframe points ``trg``
        (covariances ``S_src``, ``S_trg``; ``camera``: the live one), the Laplace covariance and
        the verdict.

        The RANSAC fit weights each match with the covariances at the measured points. Those are
        noisy: a point measured too close gets too small a covariance, and the fit leans on it
        (on night drives the poses came out ~15 % of the way back towards the keyframe). With both
        cameras known, the inliers are refitted ``noise_refits`` times with the covariances at the
        fused point estimates (:func:`~sdpr_loc.geometry.registration.fused_points`)."""
        from sdpr_loc.geometry.registration import fused_points, laplace_covariance, ransac, register
        from sdpr_loc.geometry.stereo import covariance_at

        cfg, mc = self.config, self.matching
        W0 = np.linalg.inv(S_trg + S_src)
        # Horn/SVD takes scalar weights only: the inverse mean variance of each match (what a user
        # of the closed form would do); the other methods use the full 3x3 information matrices
        w = np.ones(len(src))
        if cfg.registration == "svd":
            w = 3.0 / np.trace(S_trg + S_src, axis1=1, axis2=2)
            w = w / w.max()
        T = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
        try:
            reg, inl = ransac(T(src), T(trg), weights=T(w), inv_cov=T(W0), generator=self._gen,
                              method=cfg.registration, **ransac_settings(mc))
            R, W = reg.R[0].numpy(), W0
            refit = lambda W, inl: register(T(src), T(trg), weights=inl.to(torch.float64) * T(w),  # noqa: E731
                                            inv_cov=T(W), init=reg.T.detach(), method=cfg.registration)
            if camera is not None and kf.camera is not None and cfg.noise_refits:
                for _ in range(cfg.noise_refits):   # covariances at the fused points, re-gate, refit
                    R, t = reg.R[0].detach().numpy(), reg.t[0].detach().numpy()
                    X = fused_points(src, S_src, trg, S_trg, R, t)
                    Sl = covariance_at(camera, src, S_src, (X - t) @ R)
                    Wf = np.linalg.inv(covariance_at(kf.camera, trg, S_trg, X) + R @ Sl @ R.T)
                    e = trg - src @ R.T - t
                    gate = (np.einsum("ni,nij,nj->n", e, Wf, e) < mc.ransac_threshold) & (w > 0)
                    if gate.sum() < cfg.min_inliers:
                        break
                    W, inl = Wf, torch.from_numpy(gate)[None]
                    reg = refit(W, inl)
            elif rotation_angle_deg(R) > 1.0:  # re-weight with the source covariance rotated into place
                W = np.linalg.inv(S_trg + R @ S_src @ R.T)
                reg = refit(W, inl)
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
        p = src[inliers] @ R.T + t
        Wi = W[inliers]
        cov_kf = laplace_covariance(src[inliers], Wi, R, t) * cfg.integrity.covariance_factor   # calibrated
        Ad = adjoint_np(kf.T)
        cov_reg = Ad @ cov_kf @ Ad.T                # this registration's share
        cov_left = kf.cov + cov_reg                 # ... plus the keyframe's (odometry: accumulated)
        G = np.eye(6)
        G[:3, 3:] = -hat_np(T_par[:3, 3])      # left twist -> (position, fixed-axis rotation)
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
        if not trusted:
            self.lost += 1
        f = lambda x: float(x[0]) if x is not None else float("nan")  # noqa: E731
        res = TrackResult(stamp_ns=stamp_ns, level=level, reason=reason, T=T_par, covariance=cov,
                          certified=certified, trusted=trusted, keypoints=n, matches=nm, inliers=ni,
                          keyframe=kf.index, min_eig=f(cert.min_eig), margin=f(cert.margin), gap=f(cert.gap),
                          method=str(cert.method[0]) if cert.method else "none", solve_ms=solve_ms,
                          extra={"cov_left": cov_left})
        e = trg[inliers] - p
        res.integrity_stats = self._registration_stats(float(np.einsum("ni,nij,nj->", e, Wi, e)), ni, nm,
                                                       G @ cov_reg @ G.T)
        self._tried.append(res)
        return res

    # ----- integrity (vision/integrity.py) -----
    def _registration_stats(self, cost: float, ni: int, nm: int, cov: np.ndarray) -> dict:
        """Consistency, support and precision of one registration (``cov``: its own share of the
        pose covariance; odometry's accumulated drift is not a registration's imprecision)."""
        icfg = self.config.integrity
        chi2, dof, p = integ.consistency(cost, ni, self.matching.ransac_threshold, icfg.noise_scale)
        return {"chi2": chi2, "chi2_dof": dof, "chi2_p": p, "inliers": ni, "inlier_ratio": ni / max(nm, 1),
                "position_std": integ.position_std(cov)}

    def _check_integrity(self, res: TrackResult, stamp_ns: int, pred) -> None:
        """The frame's verdict: the registration's statistics, plus innovation against the motion
        prediction and agreement with the other candidate registrations of this frame."""
        tried, self._tried = [r for r in self._tried if r.stamp_ns == stamp_ns and r is not res], []
        if res.T is None:
            res.integrity, res.integrity_reasons = integ.FAIL, [f"no pose: {res.reason}"]
            return
        s, icfg = res.integrity_stats, self.config.integrity
        Sb = integ.body_covariance(res.covariance, res.T)
        # a prior checks the pose (none: a relocalization; nor one from a pose that nothing vouched
        # for and that failed, see _trusted_pose); ``unvouched`` says why not
        unvouched = ("place recognition: no motion prior" if pred is None else
                     "" if self._vouches else "predicted from an unvouched pose that failed")
        if self._velocity_predicted(pred):
            P = pred[1] + self._prediction_noise(stamp_ns)
            s["innovation"], s["innovation_p"] = integ.innovation(pred[0], P, res.T, Sb)
            s["prediction_std"] = integ.position_std(P)
            if not unvouched and s["prediction_std"] > icfg.max_prediction_std:
                unvouched = f"prediction std {s['prediction_std']:.2f} m > {icfg.max_prediction_std:g} m"
        elif pred is not None and self.last_stamp is not None:     # the last trusted pose, no velocity
            s["innovation"], s["innovation_p"] = integ.innovation(self.last_T, self._reach(stamp_ns), res.T, Sb)
        others = [r for r in tried if r.T is not None and r.trusted]
        if others:
            s["agreement"] = max(integ.mahalanobis(res.T, r.T, Sb + integ.body_covariance(r.covariance, r.T))
                                 for r in others)
            dist = [float(np.linalg.norm(r.T[:3, 3] - res.T[:3, 3])) for r in others]
            s["agreement_m"] = max(dist)
            rival = max((r.inliers for r, d in zip(others, dist) if d > icfg.agreement_m), default=0)
            if rival:
                s["agreement_margin"] = res.inliers / rival
        res.relocalized = self.config.mode == "map" and bool(unvouched)
        res.integrity, res.integrity_reasons = integ.assess(s, icfg, unvouched if res.relocalized else "")


def _add_reason(res: TrackResult, why: str) -> None:
    res.reason = f"{res.reason}; {why}" if res.reason else why


def _publishable(res: TrackResult) -> bool:
    """Trusted and publishable by default (:func:`~sdpr_loc.vision.integrity.publishable`)."""
    return res.trusted and integ.publishable(res.integrity)


def _better(res: TrackResult, than: TrackResult | None) -> bool:
    """Whether ``res`` is the frame's pose rather than ``than``: trusted first, then publishable
    by its integrity; two untrusted ones by their inliers."""
    if than is None:
        return True
    key = lambda r: (r.trusted, integ.publishable(r.integrity))   # noqa: E731
    if key(res) != key(than):
        return key(res) > key(than)
    return not than.trusted and res.inliers > than.inliers

"""Images -> pose: keypoints, stereo, matching and the (certified) registration, end to end.

``Localizer(network, pose_block)`` maps a source and a target stereo frame to
``T_target_source`` (points in the source left optical frame -> target left optical frame).

* ``mode="soft"`` (training): source keypoints are soft-matched against every target pixel;
  the pseudo-points get their disparity from the target right image, so every quantity that
  reaches the registration is a differentiable function of the network weights. With
  ``pose_block="certified"`` the gradient comes from the KKT system at the certified global
  optimum; uncertified items get zero gradient and are flagged (``usable``).
* ``mode="hard"`` (inference): keypoints of both frames (:func:`extract_keypoints`), mutual
  nearest-neighbour matching, optional RANSAC, then the registration.

Registration inputs are float64 (the certificate tolerances assume it); the network runs in
float32 (bfloat16 autocast on CUDA).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from sdpr_loc.certify import Certificate
from sdpr_loc.geometry.registration import no_certificate, ransac, register

from .keypoints import StereoKeypoints
from .matching import as_cameras, hard_match, soft_match, stereo_match, stereo_points
from .network import KeypointNet, NetOutput, check_images

Tensor = torch.Tensor

__all__ = ["LocalizerConfig", "Localizer", "Localization", "extract_keypoints", "stereo_keypoints",
           "as_image_batch", "POSE_BLOCKS"]

POSE_BLOCKS = ("certified", "svd")


@dataclass(frozen=True)
class LocalizerConfig:
    """Matching and registration settings (stored in checkpoints next to the network's).

    match_temperature: softmax temperature of soft matching (cosine units).
    stereo_temperature: softmax temperature of the sub-pixel disparity window.
    max_disparity: stereo search range in pixels; disparity_window: +- pixels of the soft-argmax.
    min_stereo_similarity: stereo peaks below this cosine are invalid.
    stereo_levels: finest encoder levels used for stereo (0: all, like the descriptors).
    sigma_px: pixel noise for the point covariances.
    covariance: "stereo" (3x3 inverse covariances of the target points) or "isotropic" (identity:
        the scalar-weighted problem that the SVD block solves exactly).
    ratio, min_similarity, min_score: matching tests at inference (Lowe ratio on descriptor
        distances, minimum cosine, minimum detector score), keypoint to keypoint and dense alike.
    peak_radius: dense matching's ratio test compares the best pixel with the best one farther
        than this (px); subpixel_window: +- pixels of the dense sub-pixel window.
    subpixel_levels: dense matching of a frame against a keyframe of the same drive (odometry,
        teach): the guided search's peak is taken on the finest this many encoder levels and
        refined by a parabola through their cosines (0: the full descriptor's peak and soft-argmax,
        as trained and as used against a map). The coarse levels hold the peak back when the
        camera moves towards what it sees: all levels find a 2 % zoom's flow 0.65 of its length,
        the two finest 0.91; teach odometry came out ~6 % short with the fine levels' parabola
        alone, ~1 % with their peak as well.
    use_ransac, ransac_threshold, ransac_iterations: robust inference (Mahalanobis gate, squared,
        3 dof: 11.34 is the chi-square 99 % point; 3-point hypotheses). A 3-point SVD fit of
        stereo points, noisy in depth, is rarely close enough to gate the other inliers: on
        night matches 512 hypotheses give a consensus of 30.9 against 28.3 for 128 (2048: 32.2).

    This one configuration travels in the model checkpoint and is what training, ``sdpr-loc
    eval``, the tracker and the nodes use for matching.
    """

    match_temperature: float = 0.02
    stereo_temperature: float = 0.02
    max_disparity: int = 64
    disparity_window: int = 2
    min_stereo_similarity: float = 0.0
    stereo_levels: int = 3
    sigma_px: float = 0.5
    covariance: str = "stereo"
    ratio: float = 0.9
    min_similarity: float = 0.0
    min_score: float = 0.0
    use_ransac: bool = True
    ransac_threshold: float = 11.34
    ransac_iterations: int = 512
    peak_radius: int = 4
    subpixel_window: int = 2
    subpixel_levels: int = 2

    def __post_init__(self):
        if self.covariance not in ("stereo", "isotropic"):
            raise ValueError(f"covariance must be 'stereo' or 'isotropic', got {self.covariance!r}")
        for name in ("match_temperature", "stereo_temperature", "sigma_px", "ransac_threshold"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"LocalizerConfig.{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < float(self.ratio) <= 1:
            raise ValueError(f"LocalizerConfig.ratio must be in (0, 1], got {self.ratio!r}")
        if int(self.peak_radius) < 1 or int(self.subpixel_window) < 1:
            raise ValueError(f"LocalizerConfig.peak_radius and subpixel_window must be >= 1, got "
                             f"{self.peak_radius}, {self.subpixel_window}")
        if int(self.subpixel_levels) < 0:
            raise ValueError(f"LocalizerConfig.subpixel_levels must be >= 0, got {self.subpixel_levels}")
        if int(self.ransac_iterations) < 1:
            raise ValueError(f"LocalizerConfig.ransac_iterations must be >= 1, got {self.ransac_iterations}")
        if int(self.max_disparity) < 3:
            raise ValueError(f"max_disparity must be >= 3, got {self.max_disparity}")

    @classmethod
    def from_dict(cls, d: dict) -> "LocalizerConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def ransac_settings(config: LocalizerConfig) -> dict:
    """The keyword arguments of :func:`~sdpr_loc.geometry.registration.ransac` that ``config`` sets."""
    return {"threshold": float(config.ransac_threshold), "iterations": int(config.ransac_iterations)}


@dataclass
class Localization:
    """Result for a batch of B pairs with K source keypoints each.

    T (B, 4, 4) float64: T_target_source. certificate: per-item Certificate (never certified for
    the SVD block). usable (B,): items whose pose may be trusted and trained on (certified for
    the certified block; well-posed for the SVD block). source: the source StereoKeypoints.
    target_uv (B, K, 2), target_points (B, K, 3): the match of each source keypoint.
    matches (B, K): index into the target keypoints (hard mode), -1 for soft or unmatched.
    weights (B, K) float64: registration weights (0 = not used).
    match_logits (B, K, H*W): soft mode only, the source descriptors' correlation with every
    target pixel over the temperature (for the descriptor loss); None in hard mode.
    """

    T: Tensor
    certificate: Certificate
    usable: Tensor
    source: StereoKeypoints
    target_uv: Tensor
    target_points: Tensor
    matches: Tensor
    weights: Tensor
    match_logits: Tensor | None = None

    @property
    def uncertified(self) -> int:
        return int((~self.usable).sum())


def _split(out: NetOutput, n: int) -> tuple[NetOutput, NetOutput]:
    """Split a NetOutput of a 2n batch (source images first) into two."""
    def part(sl):
        return NetOutput(None if out.logits is None else out.logits[sl],
                         None if out.scores is None else out.scores[sl],
                         [f[sl] for f in out.features], out.size, out.padded)
    return part(slice(0, n)), part(slice(n, None))


def as_image_batch(x, device, name: str) -> Tensor:
    """Images (numpy or torch, see :func:`check_images`) as a ``(B, 1, H, W)`` float batch on ``device``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return check_images(x, name).to(device)


def stereo_keypoints(network: KeypointNet, left: NetOutput, right: NetOutput, cameras, cfg: LocalizerConfig
                     ) -> StereoKeypoints:
    """Keypoints, descriptors, stereo disparities and 3D points from the network's outputs."""
    uv, scores = network.keypoints(left)
    desc = network.descriptors(left, uv)
    st = stereo_match(network, left, uv, right, int(cfg.max_disparity), cfg.stereo_temperature,
                      int(cfg.disparity_window), cfg.min_stereo_similarity, int(cfg.stereo_levels))
    points, W, valid = stereo_points(cameras, uv, st.disparity, cfg.sigma_px)
    valid = valid & st.valid & (scores >= cfg.min_score)
    return StereoKeypoints(uv=uv, disparity=st.disparity, points=points, inv_cov=W * valid[..., None, None],
                           scores=scores, descriptors=desc, valid=valid)


def extract_keypoints(network: KeypointNet, left, right, camera, config: LocalizerConfig | None = None
                      ) -> StereoKeypoints:
    """Stereo keypoints of one or more frames (what the ROS keypoint node publishes).

    left, right: (H, W), (B, H, W) or (B, 1, H, W) gray in [0, 1] (tensors or numpy arrays).
    camera: StereoCamera, list of B, or (B, 5) tensor [fx, fy, cx, cy, baseline].
    Gradients flow when called outside ``torch.no_grad``.
    """
    cfg = config or LocalizerConfig()
    device = next(network.parameters()).device
    lt = as_image_batch(left, device, "left")
    rt = as_image_batch(right, device, "right")
    if lt.shape != rt.shape:
        raise ValueError(f"left {tuple(lt.shape)} and right {tuple(rt.shape)} differ in shape")
    cams = as_cameras(camera, lt.shape[0])
    return stereo_keypoints(network, network(lt), network.encode(rt), cams, cfg)


_FEW = "fewer than 3 usable matches"


def _scatter_certificate(sub: Certificate, idx: Tensor, B: int) -> Certificate:
    """A B-item certificate holding ``sub`` at ``idx``; the other items are uncertified (_FEW)."""
    out = {}
    for f in fields(sub):
        v = getattr(sub, f.name)
        if isinstance(v, torch.Tensor):
            fill = False if v.dtype == torch.bool else (0 if f.name == "multipliers" else float("nan"))
            full = torch.full((B, *v.shape[1:]), fill, dtype=v.dtype, device=v.device)
            full[idx.to(v.device)] = v
            out[f.name] = full
        elif isinstance(v, list):
            full = ["none" if f.name == "method" else _FEW] * B if f.name in ("method", "reason") else [None] * B
            for j, i in enumerate(idx.tolist()):
                full[i] = v[j]
            out[f.name] = full
        else:
            out[f.name] = v
    return Certificate(**out)


def _well_posed(weights: Tensor) -> Tensor:
    return (weights > 0).sum(-1) >= 3


class Localizer(nn.Module):
    """(source stereo frame, target stereo frame) -> T_target_source, certificate, matches.

    network: KeypointNet. pose_block: "certified" (QCQP + certificate + KKT gradients) or "svd"
    (scalar-weighted closed form, no certificate). ``forward(source (B, 2, H, W), target
    (B, 2, H, W), camera, mode=None)`` with channels (left, right); mode defaults to "soft" in
    training mode and "hard" in eval mode.
    """

    def __init__(self, network: KeypointNet, pose_block: str = "certified",
                 config: LocalizerConfig | None = None, generator_seed: int = 0):
        super().__init__()
        if pose_block not in POSE_BLOCKS:
            raise ValueError(f"pose_block must be one of {POSE_BLOCKS}, got {pose_block!r}")
        self.network = network
        self.pose_block = pose_block
        self.config = config or LocalizerConfig()
        self.generator_seed = int(generator_seed)

    def _check_pair(self, source: Tensor, target: Tensor) -> None:
        for name, x in (("source", source), ("target", target)):
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 2:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must have shape (B, 2, H, W) (left, right), got {shape}")
        if source.shape != target.shape:
            raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")

    def _register(self, src: Tensor, trg: Tensor, w: Tensor, W: Tensor, robust: bool):
        """Register the well-posed items (>= 3 weighted matches); the rest get the identity.

        Leaving degenerate items out of the solve keeps NaNs (SVD backward at repeated zero
        singular values) out of the batch's gradient.
        """
        B = src.shape[0]
        if self.config.covariance == "isotropic":
            W = torch.eye(3, dtype=W.dtype, device=W.device).expand_as(W).contiguous()
        method = "certified" if self.pose_block == "certified" else "svd"
        ok = _well_posed(w)
        T = torch.eye(4, dtype=src.dtype, device=src.device).repeat(B, 1, 1)
        idx = ok.nonzero().flatten()
        if len(idx) == 0:
            return T, no_certificate(B, src, _FEW), ok, w
        s, t, ww, WW = src[idx], trg[idx], w[idx], W[idx]
        if robust:
            g = torch.Generator().manual_seed(self.generator_seed)
            reg, inl = ransac(s, t, ww, WW, generator=g, method=method, **ransac_settings(self.config))
            ww = ww * inl.to(ww.dtype)
            w = w.index_copy(0, idx, ww)
        else:
            reg = register(s, t, ww, WW, method=method)
        T = T.index_copy(0, idx, reg.T)
        cert = reg.certificate if len(idx) == B else _scatter_certificate(reg.certificate, idx, B)
        usable = ok.clone()
        if method == "certified":
            usable[idx] = reg.certificate.certified
        usable &= _well_posed(w)
        return T, cert, usable, w

    def forward(self, source: Tensor, target: Tensor, camera, mode: str | None = None) -> Localization:
        self._check_pair(source, target)
        mode = mode or ("soft" if self.training else "hard")
        if mode not in ("soft", "hard"):
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        device = next(self.network.parameters()).device
        source, target = source.to(device).float(), target.to(device).float()
        B = source.shape[0]
        cams = as_cameras(camera, B)
        net, cfg = self.network, self.config
        left = net(torch.cat([source[:, :1], target[:, :1]]))
        right = net.encode(torch.cat([source[:, 1:], target[:, 1:]]))
        (ls, lt), (rs, rt) = _split(left, B), _split(right, B)
        kps = stereo_keypoints(net, ls, rs, cams, cfg)
        if mode == "soft":
            sm = soft_match(kps.descriptors, net.dense_descriptors(lt), lt.scores, cfg.match_temperature)
            st = stereo_match(net, lt, sm.uv, rt, int(cfg.max_disparity), cfg.stereo_temperature,
                              int(cfg.disparity_window), cfg.min_stereo_similarity, int(cfg.stereo_levels))
            trg, W, valid_t = stereo_points(cams, sm.uv, st.disparity, cfg.sigma_px)
            valid = kps.valid & valid_t & st.valid
            w = sm.similarity.clamp_min(0) * kps.scores * sm.score * valid
            target_uv, matches = sm.uv, torch.full_like(valid, -1, dtype=torch.long)
            robust, logits = False, sm.logits
        else:
            kpt = stereo_keypoints(net, lt, rt, cams, cfg)
            idx, matched, sim = hard_match(kps.descriptors, kpt.descriptors, kps.valid, kpt.valid,
                                           cfg.ratio, cfg.min_similarity)
            take = lambda x: torch.gather(x, 1, idx.view(B, -1, *[1] * (x.dim() - 2)).expand(  # noqa: E731
                B, idx.shape[1], *x.shape[2:]))
            trg, W, target_uv = take(kpt.points), take(kpt.inv_cov), take(kpt.uv)
            valid = matched
            w = sim.clamp_min(0) * kps.scores * take(kpt.scores.unsqueeze(-1)).squeeze(-1) * valid
            matches = torch.where(matched, idx, torch.full_like(idx, -1))
            robust, logits = cfg.use_ransac, None
        w = w.double()
        T, cert, usable, w = self._register(kps.points, trg, w, W, robust)
        return Localization(T=T, certificate=cert, usable=usable, source=kps,
                            target_uv=target_uv, target_points=trg, matches=matches, weights=w,
                            match_logits=logits)

    @torch.no_grad()
    def localize(self, source: Tensor, target: Tensor, camera) -> Localization:
        """Inference (hard matching, no gradients) regardless of the module's mode."""
        return self.forward(source, target, camera, mode="hard")


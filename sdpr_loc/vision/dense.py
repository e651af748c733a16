"""Keyframe keypoints matched in a live frame's dense descriptors: how the network was trained.

Training soft-matches one frame's keypoints against every pixel of the other frame
(:func:`~sdpr_loc.vision.matching.soft_match`, with ``keypoints_from = keyframe``: the
keyframe's keypoints against the live frame). Matching keypoint to keypoint instead needs the
detector to fire at the same 3D points in both frames, which nothing trains. :class:`DenseFrame`
deploys the trained task: each keyframe keypoint finds its best pixel in the live left image
(ratio test against the best pixel outside a small radius, sub-pixel soft-argmax around the
peak), then its disparity in the live right image, then its 3D point and inverse covariance in
the live camera, ready for RANSAC and the certified registration.

Two searches, one answer:

* **exhaustive** (no pose prior: start-up, relocalization): the whole image, coarse to fine:
  the cosines on a grid of every 4th pixel, then every pixel around the grid's best few local
  maxima (:meth:`DenseFrame._exhaustive`);
* **guided** (a pose prior): each keypoint is projected into the live image and only a window of
  ``radius`` pixels around the prediction is searched. Both searches compute the same cosine at a
  pixel, so when the exhaustive peak lies inside the window both return the same pixel and
  sub-pixel position. A peak on the window's border is not a local maximum of the window (the
  true one may lie outside): it is rejected. Against a keyframe of the same drive (odometry,
  teach) the guided search scores the finest ``subpixel_levels`` levels only: the coarse levels
  pull the peak towards the keyframe's pixel as the camera moves forward.

Neither search builds the full-resolution descriptor map (240 numbers a pixel). A dense
descriptor is the centred, normalised concatenation of the encoder levels upsampled bilinearly,
and both steps commute with the dot product: for a centred unit keyframe descriptor ``d`` (the
network's descriptors are), ``cos(p) = sum_l up_l(d_l . f_l)(p) / n(p)`` where ``d_l . f_l`` is
taken at each level's own resolution (a level with 8x bigger pixels costs 64x less) and
``n(p)``, the norm of the centred concatenation, is the same for every keypoint and computed once
per frame (:attr:`DenseFrame.norm`). Window pixels blend ``d_l . f_l`` (:meth:`DenseFrame._correlate`);
the exhaustive search's grid holds whole descriptors, sampled once per frame. Projected
descriptors (``descriptor_dim > 0``) do not factor per level: those networks sample whole
descriptors at the window pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from .frames import Correspondences, Guide, Keyframe, PosePrior, covariances, search_windows
from .keypoints import StereoKeypoints
from .matching import as_cameras, stereo_match, stereo_points
from .network import KeypointNet
from .pipeline import LocalizerConfig, as_image_batch, stereo_keypoints

Tensor = torch.Tensor

__all__ = ["DenseFrame", "DenseMatches"]


@dataclass
class DenseMatches:
    """For M keyframe keypoints: live pixel ``uv (M, 2)``, live 3D point ``points (M, 3)`` and
    ``inv_cov (M, 3, 3)`` (float64), descriptor cosine ``similarity (M,)`` and ``valid (M,)``
    (passed the ratio test and found a disparity)."""

    uv: np.ndarray
    points: np.ndarray
    inv_cov: np.ndarray
    similarity: np.ndarray
    valid: np.ndarray

    @classmethod
    def empty(cls, M: int = 0) -> "DenseMatches":
        z = np.zeros
        return cls(z((M, 2)), z((M, 3)), z((M, 3, 3)), z(M), z(M, dtype=bool))


class DenseFrame:
    """A live stereo frame run through the network once, matched against any number of keyframes.

    ``keypoints`` (B = 1, on CPU) are the frame's own stereo keypoints, computed on first use
    (a new keyframe, place recognition). The matching settings (ratio test, peak radius,
    sub-pixel window, temperatures) are the model's :class:`LocalizerConfig`.
    """

    def __init__(self, network: KeypointNet, left, right, camera, config: LocalizerConfig | None = None):
        self.network, self.config = network, config or LocalizerConfig()
        device = next(network.parameters()).device
        lt = as_image_batch(left, device, "left")
        rt = as_image_batch(right, device, "right")
        if lt.shape != rt.shape or lt.shape[0] != 1:
            raise ValueError(f"need one left and one right image of one shape, got {tuple(lt.shape)} "
                             f"and {tuple(rt.shape)}")
        self.cameras = as_cameras(camera, 1)
        self.camera = self.cameras[0]
        # one image at a time (on CPU a batch of two is slower than two batches of one), the right
        # one only to the levels stereo matching uses; detector: on demand
        with torch.inference_mode():
            self.left = network.encode(lt)
            self.right = network.encode(rt, int(self.config.stereo_levels))
        self.size = self.left.size                                       # (H, W)
        self._norms: dict[int, Tensor] = {}

    @property
    def norm(self) -> Tensor:
        """(H, W) norm of the centred concatenated descriptor at every pixel, before normalising
        (:meth:`norm_of` all levels)."""
        return self.norm_of(len(self.left.features))

    def norm_of(self, levels: int) -> Tensor:
        """(H, W) norm of the centred concatenation of the finest ``levels`` levels at every
        pixel, before normalising: ``sqrt(sum_l |up_l f_l|^2 - (sum_l sum up_l f_l)^2 / D)``
        (cached per ``levels``).

        No level is upsampled with its channels: a bilinear blend of four cells has the squared
        norm ``sum_ij w_i w_j f_i . f_j``, so each level needs only the dot products of
        neighbouring cells at its own resolution (self, right, down, both diagonals), blended
        along x for each cell row, then along y (~2x faster than upsampling the levels).
        """
        if levels not in self._norms:
            self._norms[levels] = self._norm(levels)
        return self._norms[levels]

    def _norm(self, levels: int) -> Tensor:
        H, W = self.size
        dev = self._dev
        sq, total = torch.zeros(H, W, device=dev), torch.zeros(H, W, device=dev)
        dot = torch.linalg.vecdot
        with torch.inference_mode():
            for level, f in enumerate(self._channels_last[:levels]):             # (h, w, C)
                if level == 0:                                                   # full resolution
                    f = f[:H, :W]
                    sq += dot(f, f)
                    total += f.sum(-1)
                    continue
                h, w, _ = f.shape
                f = torch.cat([f, f[-1:]], 0)
                f = torch.cat([f, f[:, -1:]], 1)          # (h + 1, w + 1, C): the border cell repeated
                q, c = dot(f, f), f.sum(-1)
                right, down = dot(f[:, :-1], f[:, 1:]), dot(f[:-1], f[1:])
                diagonals = dot(f[:-1, :-1], f[1:, 1:]) + dot(f[:-1, 1:], f[1:, :-1])
                x0, _, a = _cells(torch.arange(W, device=dev), 2 ** level, w)
                y0, _, b = _cells(torch.arange(H, device=dev), 2 ** level, h)
                x1, ma = x0 + 1, 1 - a
                row = ma * ma * q[:, x0] + 2 * ma * a * right[:, x0] + a * a * q[:, x1]       # (h + 1, W)
                rows = ma * ma * down[:, x0] + ma * a * diagonals[:, x0] + a * a * down[:, x1]  # (h, W)
                cx = ma * c[:, x0] + a * c[:, x1]
                b, mb = b[:, None], 1 - b[:, None]
                sq += mb * mb * row[y0] + 2 * mb * b * rows[y0] + b * b * row[y0 + 1]
                total += mb * cx[y0] + b * cx[y0 + 1]
        D = sum(f.shape[1] for f in self.left.features[:levels])
        return torch.sqrt((sq - total * total / D).clamp_min(1e-24))

    @cached_property
    def _channels_last(self) -> list[Tensor]:
        """The left encoder levels as (h, w, C): one keypoint's patch is contiguous rows."""
        return [f[0].permute(1, 2, 0).contiguous() for f in self.left.features]

    @property
    def _dev(self) -> torch.device:
        return self.left.features[0].device

    @cached_property
    def keypoints(self) -> StereoKeypoints:
        with torch.inference_mode():
            return stereo_keypoints(self.network, self.network.detect(self.left), self.right, self.cameras,
                                    self.config).detach().to("cpu")

    @property
    def descriptor_dim(self) -> int:
        return int(self.network.config.feature_dim)

    @property
    def place_descriptors(self) -> Tensor:
        """``(N, D)`` descriptors at the centre of every keypoint cell (place recognition), taken
        from the whole-image search's grid (:attr:`_grid`, which the relocalization then searches
        with; a centre off the grid takes the grid pixel above and left of it): as many as the
        detector gives, without running it (the decoder and the keypoints' stereo, ~80 ms of a
        ~320 ms relocalization on 2 CPU cores). Night frames against a day map, a true keyframe
        among the three voted for: 49 / 50 (validation world 103) and 50 / 50 (world 0) frames, as
        with the detected keypoints (49 / 50 both)."""
        grid, gu, gv = self._grid
        H, W = self.size
        c, s = int(self.network.config.cell), self.COARSE_STRIDE
        cols = torch.arange(c // 2, W, c, device=grid.device) // s
        rows = torch.arange(c // 2, H, c, device=grid.device) // s
        index = (rows[:, None] * len(gu) + cols[None, :]).reshape(-1)
        return grid[:, index].T.to("cpu", torch.float32)

    def precompute(self, same_drive: bool = False) -> None:
        """The per-frame half of dense matching ahead of any keyframe: the descriptor norms a
        guided search reads (all levels; for ``same_drive`` keyframes the finest, :meth:`match`)."""
        self.norm_of(self._levels(same_drive) or len(self.left.features))

    def _levels(self, same_drive: bool) -> int:
        """Levels the peak is taken on: the finest ``subpixel_levels`` for keyframes of this drive,
        else 0 (all)."""
        return int(self.config.subpixel_levels) if same_drive else 0

    # ------------------------------------------------------------------------------------------
    def correspond(self, kf: Keyframe, prior: PosePrior | None = None, same_drive: bool = False) -> Correspondences:
        """The keyframe's keypoints found in this frame: guided by ``prior``, else exhaustive;
        ``same_drive``: the keyframe is an earlier frame of this drive (:meth:`match`)."""
        guide = None if prior is None else search_windows(kf.points, prior, self.camera, self.size)
        dm = self.match(kf.descriptors, guide, same_drive)
        ok = dm.valid & np.isfinite(dm.points).all(1) & (dm.points[:, 2] > 0)
        S, m = covariances(dm.inv_cov, ok)
        idx = np.flatnonzero(m)
        idx = idx[_one_per_pixel(dm.uv[idx], dm.similarity[idx])]
        return Correspondences(dm.points[idx], S[idx], idx, len(kf.points), self.camera)

    def match(self, descriptors: Tensor, guide: Guide | None = None, same_drive: bool = False) -> DenseMatches:
        """Live correspondences of keyframe keypoints with unit ``descriptors (M, D)``: exhaustive
        without ``guide``, else searched in the guide's windows. The sub-pixel peak: the trained
        soft-argmax, or with ``same_drive`` (keyframes of this drive: odometry, teach) the
        finest ``subpixel_levels`` levels' parabola (:meth:`_peak`); a guided ``same_drive``
        search also takes its peak and ratio test on those levels (the coarse ones hold the peak
        back when the camera moves forward)."""
        levels = self._levels(same_drive)
        D = self.descriptor_dim
        if descriptors.dim() != 2 or descriptors.shape[1] != D:
            raise ValueError(f"descriptors must be (M, {D}), got {tuple(descriptors.shape)}")
        M = descriptors.shape[0]
        if guide is not None and not (len(guide.uv) == len(guide.radius) == len(guide.inside) == M):
            raise ValueError(f"guide must hold one window per descriptor ({M}), got {len(guide.uv)}")
        if M == 0:
            return DenseMatches.empty()
        if guide is None:
            return self._finish(*self._exhaustive(descriptors, levels), np.ones(M, dtype=bool))
        take = np.flatnonzero(guide.inside)
        out = DenseMatches.empty(M)
        if len(take):
            # windows of similar size together: one wide window would size every keypoint's
            take = take[np.argsort(guide.radius[take], kind="stable")]
            groups = np.split(take, np.searchsorted(guide.radius[take], self.WINDOW_GROUPS, side="right"))
            found = [self._windowed(descriptors[torch.from_numpy(g)], guide.uv[g], guide.radius[g], levels)
                     for g in groups if len(g)]
            got = self._finish(*(torch.cat(x) for x in zip(*found)), np.ones(len(take), dtype=bool))
            for name in ("uv", "points", "inv_cov", "similarity", "valid"):
                getattr(out, name)[take] = getattr(got, name)
        return out

    WINDOW_GROUPS = (4, 8)     # guided search: keypoints with radius <= 4, <= 8 and above, searched apart
    COARSE_STRIDE = 4          # whole-image search: cosines on a grid of every 4th pixel first,
    COARSE_PEAKS = 3           # ... then every pixel around the grid's best 3 local maxima
    MAX_CORRELATIONS = 1 << 22  # grid cosines held at once (large images: descriptors in chunks)

    @cached_property
    def _grid(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(D, n)`` unit descriptors at every ``COARSE_STRIDE``-th pixel (each level sampled at the
        pixel, as the full map holds it), with the grid's pixel columns and rows."""
        H, W = self.size
        s, dev = self.COARSE_STRIDE, self._dev
        gu, gv = torch.arange(0, W, s, device=dev), torch.arange(0, H, s, device=dev)
        pix = torch.stack([gu[None, :].expand(len(gv), -1), gv[:, None].expand(-1, len(gu))], -1)
        with torch.inference_mode():
            d = self.network.descriptors(self.left, pix.reshape(1, -1, 2).to(torch.float32))[0]
        return d.T.contiguous(), gu, gv

    def _exhaustive(self, descriptors: Tensor, levels: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(uv (M, 2), best cosine (M,), unique (M,)) over the whole image, coarse to fine.

        The cosines on a grid of every ``COARSE_STRIDE``-th pixel (:attr:`_grid`) pick the
        ``COARSE_PEAKS`` best local maxima; every pixel within ``COARSE_STRIDE`` of them is then
        scored (:meth:`_correlate`): the best is the peak. The ratio test's second best is the
        best farther than ``peak_radius`` from the peak among those pixels, a ring of pixels just
        beyond the peak radius (where a broad peak's flank is highest) and the grid. Night frames
        against a day map: the peak of scoring every pixel for 2032 of 2034 keypoints and its
        ratio test for all but 10 (6 of them right), at ~1/3 of the cost (bench/dense_search.py).
        """
        H, W = self.size
        grid, gu, gv = self._grid
        n = max(1, self.MAX_CORRELATIONS // grid.shape[1])
        if descriptors.shape[0] > n:       # large images (KITTI: 1242 x 375): bounded memory
            parts = [self._exhaustive(descriptors[k:k + n], levels) for k in range(0, descriptors.shape[0], n)]
            return tuple(torch.cat(x) for x in zip(*parts))
        cfg, dev = self.config, self._dev
        s, pr, M = self.COARSE_STRIDE, int(cfg.peak_radius), descriptors.shape[0]
        desc = descriptors.to(dev, torch.float32)
        with torch.inference_mode():
            coarse = (desc @ grid).reshape(M, len(gv), len(gu))
            pad = F.pad(coarse, (1, 1, 1, 1), value=-2.0)                      # 3 x 3 local maxima
            top = torch.maximum(torch.maximum(pad[:, :-2], pad[:, 1:-1]), pad[:, 2:])
            top = torch.maximum(torch.maximum(top[..., :-2], top[..., 1:-1]), top[..., 2:])
            k = min(self.COARSE_PEAKS, coarse[0].numel())
            peaks = coarse.masked_fill(coarse < top, -2.0).reshape(M, -1).topk(k, -1).indices   # (M, k)
            ou, ov = _offsets(s, dev)
            U = gu[peaks % len(gu)][..., None] + ou                             # (M, k, K)
            V = gv[peaks // len(gu)][..., None] + ov
            inside = (U >= 0) & (U < W) & (V >= 0) & (V < H)
            corr = self._correlate(desc.repeat_interleave(k, 0), U.clamp(0, W - 1).reshape(M * k, -1),
                                   V.clamp(0, H - 1).reshape(M * k, -1)).reshape(M, k, -1)
            corr = corr.masked_fill(~inside, -2.0).reshape(M, -1)
            best, i = corr.max(-1)
            m = torch.arange(M, device=dev)
            bu, bv = U.reshape(M, -1)[m, i], V.reshape(M, -1)[m, i]
            far = lambda u, v: ((u - bu[:, None]).abs() > pr) | ((v - bv[:, None]).abs() > pr)  # noqa: E731
            second = corr.masked_fill(~far(U.reshape(M, -1), V.reshape(M, -1)), -2.0).amax(-1)
            ru, rv = _offsets(pr + s - 1, dev)
            ring = (ru.abs() > pr) | (rv.abs() > pr)
            RU, RV = bu[:, None] + ru[ring], bv[:, None] + rv[ring]
            flank = self._correlate(desc, RU.clamp(0, W - 1), RV.clamp(0, H - 1))
            flank = flank.masked_fill((RU < 0) | (RU >= W) | (RV < 0) | (RV >= H), -2.0)
            second = torch.maximum(second, flank.amax(-1))
            second = torch.maximum(second, _grid_max_outside(coarse, bu, bv, s, pr))
            w = torch.arange(-int(cfg.subpixel_window), int(cfg.subpixel_window) + 1, device=dev)
            U = (bu[:, None, None] + w[None, None, :]).clamp(0, W - 1).expand(-1, len(w), -1)
            V = (bv[:, None, None] + w[None, :, None]).clamp(0, H - 1).expand(-1, -1, len(w))
            uv = self._peak(desc, U, V, lambda: self._correlate(desc, U.reshape(M, -1), V.reshape(M, -1)), levels)
        return uv, best, self._unique(best, second)

    def _windowed(self, descriptors: Tensor, uv_pred: np.ndarray, radius: np.ndarray, levels: int = 0
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """(uv (M, 2), best cosine (M,), unique (M,)) searched within ``radius`` of ``uv_pred``
        (``levels`` > 0: on the finest this many levels, the cosine theirs).

        Two passes of descriptor sampling, all keypoints at once: the integer pixels of each
        keypoint's own window (peak and ratio test), then the sub-pixel window around each peak.
        Window pixels outside the image are not searched; the sub-pixel window clamps at the
        image border like the exhaustive search.
        """
        cfg, dev = self.config, self.left.features[0].device
        H, W = self.size
        M = descriptors.shape[0]
        ou, ov = _offsets(int(np.max(radius)), dev)
        c = torch.from_numpy(np.rint(uv_pred)).to(dev).long()                 # (M, 2) window centres
        U, V = c[:, :1] + ou[None], c[:, 1:] + ov[None]                        # (M, K)
        rad = torch.from_numpy(np.asarray(radius)).to(dev)[:, None]
        search = (U >= 0) & (U < W) & (V >= 0) & (V < H) & (ou.abs()[None] <= rad) & (ov.abs()[None] <= rad)
        desc = descriptors.to(dev, torch.float32)
        L = int(levels) if self.network.project is None else 0
        with torch.inference_mode():
            peak_desc = desc if L <= 0 else self._finest(desc, L)
            corr = self._correlate(peak_desc, U.clamp(0, W - 1), V.clamp(0, H - 1), L).masked_fill(~search, -2.0)
            best, k = corr.max(-1)
            bu, bv = ou[k], ov[k]                                               # peak offsets
            border = (bu.abs() == rad[:, 0]) | (bv.abs() == rad[:, 0])
            far = ((ou[None] - bu[:, None]).abs() > cfg.peak_radius) | \
                  ((ov[None] - bv[:, None]).abs() > cfg.peak_radius)
            second = corr.masked_fill(~far, -2.0).max(-1).values
            w = torch.arange(-int(cfg.subpixel_window), int(cfg.subpixel_window) + 1, device=dev)
            pu, pv = c[:, 0] + bu, c[:, 1] + bv
            GU = (pu[:, None, None] + w[None, None, :]).clamp(0, W - 1).expand(-1, len(w), -1)
            GV = (pv[:, None, None] + w[None, :, None]).clamp(0, H - 1).expand(-1, -1, len(w))
            uv = self._peak(desc, GU, GV, lambda: self._correlate(desc, GU.reshape(M, -1), GV.reshape(M, -1)), levels,
                            peak_desc if L > 0 else None)
        return uv, best, self._unique(best, second) & ~border & search.any(-1)

    def _finest(self, desc: Tensor, levels: int) -> Tensor:
        """The finest ``levels`` levels' part of unit descriptors ``desc (M, D)``, centred and normalised."""
        C = sum(self.network.config.channels[:levels])
        return F.normalize(desc[:, :C] - desc[:, :C].mean(-1, keepdim=True), dim=-1)

    def _correlate(self, desc: Tensor, U: Tensor, V: Tensor, levels: int = 0) -> Tensor:
        """Cosine ``(M, K)`` of ``desc (M, D)`` with the live descriptors at integer pixels
        ``U, V (M, K)`` in the image (what the full map holds there); each row's pixels lie in a
        small window. ``levels`` > 0: of the finest this many levels' descriptors (``desc`` is
        then :meth:`_finest`).

        Per level, the dot products are taken once per coarse cell of the patch that covers a
        row's window, then blended bilinearly at the row's pixels: a window of 13 x 13 pixels
        touches 3 x 3 cells of the coarsest level.
        """
        M, K = U.shape
        if self.network.project is not None:   # projected descriptors: sample them whole
            pix = torch.stack([U, V], -1).reshape(1, -1, 2).float()
            d = self.network.descriptors(self.left, pix)[0].reshape(M, K, -1)
            return torch.linalg.vecdot(d, desc[:, None])
        L = int(levels) or len(self._channels_last)
        dot, c0 = None, 0
        for level, f in enumerate(self._channels_last[:L]):
            h, w, C = f.shape
            d = desc[:, c0:c0 + C]
            c0 += C
            if level == 0:                     # full resolution: the pixels themselves (inside the image)
                dot = torch.linalg.vecdot(_rows(f, V * w + U), d[:, None])   # (vecdot: ~3x einsum's speed)
                continue
            x0, x1, ax = _cells(U, 2 ** level, w)
            y0, y1, ay = _cells(V, 2 ** level, h)
            ox, oy = x0.min(1, keepdim=True).values, y0.min(1, keepdim=True).values   # patch corners
            P = int(torch.maximum(x1 - ox, y1 - oy).max()) + 1
            j = torch.arange(P, device=desc.device)
            cx, cy = (ox + j).clamp(max=w - 1), (oy + j).clamp(max=h - 1)              # (M, P)
            patch = _rows(f, cy[:, :, None] * w + cx[:, None, :])                     # (M, P, P, C)
            cells = torch.linalg.vecdot(patch, d[:, None, None]).reshape(M, P * P)
            i00, dx, dy = (y0 - oy) * P + (x0 - ox), x1 - x0, (y1 - y0) * P     # corners in the patch
            top = torch.lerp(cells.gather(1, i00), cells.gather(1, i00 + dx), ax)
            bottom = torch.lerp(cells.gather(1, i00 + dy), cells.gather(1, i00 + dy + dx), ax)
            dot += torch.lerp(top, bottom, ay)
        W = self.size[1]
        return dot / self.norm_of(L).reshape(-1).index_select(0, (V * W + U).reshape(-1)).reshape(M, K)

    def _unique(self, best: Tensor, second: Tensor) -> Tensor:
        dist = lambda s: torch.sqrt((2 - 2 * s).clamp_min(0))  # noqa: E731 (unit vectors)
        return dist(best) < self.config.ratio * dist(second)

    def _peak(self, desc: Tensor, U: Tensor, V: Tensor, cosines, levels: int = 0, fine: Tensor | None = None
              ) -> Tensor:
        """Sub-pixel peak ``(M, 2)`` in the windows of integer pixels ``U, V (M, w, w)`` around each
        keypoint's best pixel: the trained soft-argmax of ``cosines()`` (the full descriptor's,
        (M, w * w)), or for ``levels`` > 0 a parabola through the cosines of the finest ``levels``
        levels (their part of the descriptor, centred and normalised: ``fine`` when the caller
        has it), along u and along v at the window's best pixel off its rim (projected
        descriptors: always the soft-argmax).

        Why two: the coarse levels see a neighbourhood that grows as the camera moves towards it
        and hold the peak back (a 2 % zoom's flow is found 0.65 of its length; the two finest
        levels: 0.91), which shrank odometry and maps taught from it by ~9 %; across a change of
        light (a night frame against a day map) the fine levels are the noisier (median error
        1.7 px against 1.4)."""
        L = int(levels)
        M, w, _ = U.shape
        if L <= 0 or self.network.project is not None or M == 0:
            return self._subpixel(cosines(), U, V)
        fine = self._finest(desc, L) if fine is None else fine
        pix = torch.stack([U, V], -1).reshape(1, -1, 2).to(torch.float32)
        live = self.network.descriptors(self.left, pix, L)[0].reshape(M, w * w, -1)
        c = torch.linalg.vecdot(live, fine[:, None]).reshape(M, w, w)
        k = c.reshape(M, -1).argmax(-1)              # the finest levels' best pixel (not on the rim)
        i, j = (k // w).clamp(1, w - 2), (k % w).clamp(1, w - 2)
        m = torch.arange(M, device=c.device)
        c0 = c[m, i, j]

        def vertex(a: Tensor, b: Tensor) -> Tensor:   # of the parabola through (-1, a), (0, c0), (1, b)
            den = a - 2 * c0 + b
            return torch.where(den < 0, 0.5 * (a - b) / den.clamp(max=-1e-12), torch.zeros_like(den)).clamp(-0.5, 0.5)

        return torch.stack([U[m, i, j] + vertex(c[m, i, j - 1], c[m, i, j + 1]),
                            V[m, i, j] + vertex(c[m, i - 1, j], c[m, i + 1, j])], -1).to(torch.float32)

    def _subpixel(self, corr_window: Tensor, U: Tensor, V: Tensor) -> Tensor:
        """Soft-argmax (the training temperature) of the correlations at pixels ``U, V (M, w, w)``."""
        M = corr_window.shape[0]
        p = torch.softmax(corr_window / self.config.match_temperature, -1)
        return torch.stack([(p * U.reshape(M, -1)).sum(-1), (p * V.reshape(M, -1)).sum(-1)], -1)

    def _finish(self, uv: Tensor, best: Tensor, unique: Tensor, keep: np.ndarray) -> DenseMatches:
        """Stereo, 3D points and covariances of the live pixels ``uv (M, 2)``."""
        cfg = self.config
        np_ = lambda x: x.detach().cpu().numpy()  # noqa: E731
        out = DenseMatches.empty(len(uv))
        out.uv, out.similarity = np_(uv).astype(np.float64), np_(best).astype(np.float64)
        tried = np.flatnonzero(np_(unique) & keep)           # stereo only for matches that can be used
        if len(tried):
            with torch.inference_mode():
                at = uv[torch.from_numpy(tried).to(uv.device)][None].float()
                st = stereo_match(self.network, self.left, at, self.right, int(cfg.max_disparity),
                                  cfg.stereo_temperature, int(cfg.disparity_window), cfg.min_stereo_similarity,
                                  int(cfg.stereo_levels))
                P, Wm, ok = stereo_points(self.cameras, at, st.disparity, cfg.sigma_px)
            out.points[tried], out.inv_cov[tried] = np_(P[0]), np_(Wm[0])
            out.valid[tried] = np_(ok[0] & st.valid[0]).astype(bool)
        return out


def _grid_max_outside(coarse: Tensor, u: Tensor, v: Tensor, s: int, r: int) -> Tensor:
    """``(M,)`` best of each row's grid cosines ``coarse (M, h, w)`` (grid pixels ``s`` apart)
    farther than ``r`` pixels from its peak ``u, v (M,)`` (along u or v): the grid cells within
    ``r`` (at most ``(2 r // s + 1)^2``) are set to -2 in a copy, instead of testing every cell
    (~3x faster on a 240x320 image's grid: bench/dense_search.py)."""
    M, h, w = coarse.shape
    o = torch.arange(2 * r // s + 1, device=coarse.device)
    rows = torch.div(v - r + s - 1, s, rounding_mode="floor").clamp(min=0)[:, None] + o   # first grid line >= v - r
    cols = torch.div(u - r + s - 1, s, rounding_mode="floor").clamp(min=0)[:, None] + o
    near = (((rows < h) & (rows * s <= v[:, None] + r))[:, :, None]
            & ((cols < w) & (cols * s <= u[:, None] + r))[:, None, :]).reshape(M, -1)
    cells = (rows.clamp(max=h - 1)[:, :, None] * w + cols.clamp(max=w - 1)[:, None, :]).reshape(M, -1)
    out = coarse.reshape(M, -1).clone()
    # amin: a clamped index outside the box (+2) leaves its cell as it is, whatever else lands there
    out.scatter_reduce_(1, cells, torch.where(near, -2.0, 2.0).to(out.dtype), "amin")
    return out.amax(-1)


def _one_per_pixel(uv: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices (sorted) keeping, of the matches that landed on the same live pixel, the most
    similar one: two keyframe keypoints that find the same pixel would count its noise twice and
    the pose covariance would claim a precision the data do not have."""
    if len(uv) == 0:
        return np.zeros(0, dtype=np.int64)
    cell = np.floor(uv).astype(np.int64)
    key = cell[:, 1] * (int(cell[:, 0].max()) + 2) + cell[:, 0]
    order = np.lexsort((-score, key))                     # by pixel, most similar first
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order[1:]] != key[order[:-1]]
    return np.sort(order[first])


def _cells(u: Tensor, s: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear cells ``(i0, i1, weight of i1)`` of full-resolution pixels ``u`` in a level of
    ``n`` cells ``s`` pixels wide (``align_corners=False``, clamped at the border: what
    ``F.interpolate`` and ``grid_sample`` do)."""
    x = ((u.to(torch.float32) + 0.5) / s - 0.5).clamp(0, n - 1)
    i0 = x.floor().long()
    return i0, (i0 + 1).clamp(max=n - 1), x - i0


def _offsets(r: int, device) -> tuple[Tensor, Tensor]:
    """Pixel offsets ``(du, dv)`` of a (2 r + 1)^2 window, row-major."""
    o = torch.arange(-r, r + 1, device=device)
    return o.repeat(len(o)), o.repeat_interleave(len(o))


def _rows(f: Tensor, index: Tensor) -> Tensor:
    """``f (h, w, C)`` at flat cell indices ``index (...)``: ``(..., C)`` (index_select: ~4x faster
    on CPU than advanced indexing ``f[v, u]``)."""
    C = f.shape[-1]
    return f.reshape(-1, C).index_select(0, index.reshape(-1)).reshape(*index.shape, C)

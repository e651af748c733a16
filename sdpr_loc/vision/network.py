"""Keypoint UNet in the style of Gridseth & Barfoot 2022 ("Keeping an eye on things").

One shared encoder feeds three outputs:

* a detector head: one keypoint per ``cell x cell`` block of the image, the expected pixel
  position under a spatial softmax of the detector logits inside the block (differentiable, so
  the pose loss moves the keypoints);
* a score head: sigmoid confidence per pixel, sampled at the keypoints;
* descriptors: the encoder levels sampled bilinearly at a pixel (equivalently: every level
  upsampled to full resolution and concatenated), optionally projected to ``descriptor_dim``,
  centred and unit-normalised, so that their dot product is a zero-normalised cross-correlation
  (ReLU features are all positive: without centring every pair of descriptors looks alike).
  Using all levels mixes fine localisation with context that survives a change of lighting.

Pixel convention (everywhere in ``sdpr_loc.vision``): pixel ``(i, j)`` has its centre at
``u = j, v = i``; images are gray ``(B, 1, H, W)`` in [0, 1].
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

__all__ = ["NetworkConfig", "KeypointNet", "NetOutput", "sample_map", "check_images"]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of :class:`KeypointNet` (stored in checkpoints as a plain dict).

    width: channels of the first level (doubled at each level below).
    levels: encoder levels (the image is downsampled ``levels - 1`` times).
    cell: keypoint cell size in pixels: one keypoint per ``cell x cell`` block.
    descriptor_dim: 0 to use the concatenated encoder levels as the descriptor (length
        ``width * (2**levels - 1)``), else a learned linear projection to this length.
    norm: "group" (GroupNorm: independent of the batch, so DDP replicas and batch-1 inference
        behave like training) or "none".
    detector_temperature: softmax temperature of the detector inside each cell.
    amp: use bfloat16 autocast when running on CUDA (ignored on CPU).
    """

    width: int = 16
    levels: int = 4
    cell: int = 16
    descriptor_dim: int = 0
    norm: str = "group"
    detector_temperature: float = 1.0
    amp: bool = True

    def __post_init__(self):
        for name in ("width", "levels", "cell"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"NetworkConfig.{name} must be a positive int, got {v!r}")
        if self.levels < 2:
            raise ValueError(f"NetworkConfig.levels must be >= 2, got {self.levels}")
        if not isinstance(self.descriptor_dim, int) or self.descriptor_dim < 0:
            raise ValueError(f"NetworkConfig.descriptor_dim must be an int >= 0, got {self.descriptor_dim!r}")
        if self.norm not in ("group", "none"):
            raise ValueError(f"NetworkConfig.norm must be 'group' or 'none', got {self.norm!r}")
        if not float(self.detector_temperature) > 0:
            raise ValueError("NetworkConfig.detector_temperature must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        """Build from a dict, ignoring keys that belong to other configs."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def channels(self) -> list[int]:
        return [self.width * 2 ** i for i in range(self.levels)]

    @property
    def feature_dim(self) -> int:
        """Length of the descriptor (after the optional projection)."""
        return self.descriptor_dim or sum(self.channels)

    @property
    def multiple(self) -> int:
        """Input sizes are padded internally to a multiple of this."""
        return 2 ** (self.levels - 1)


@dataclass
class NetOutput:
    """What one pass over the left image gives.

    logits (B, 1, H, W): detector logits; scores (B, 1, H, W): sigmoid scores;
    features: encoder levels, level l of shape (B, width * 2**l, Hp / 2**l, Wp / 2**l);
    size: (H, W) of the input image; padded: (Hp, Wp), the extent the features cover.
    """

    logits: Tensor | None
    scores: Tensor | None
    features: list[Tensor]
    size: tuple[int, int]
    padded: tuple[int, int]


def check_images(images: Tensor, name: str = "images") -> Tensor:
    """Return ``(B, 1, H, W)`` float32 from ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 2:
        images = images[None, None]
    elif images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"{name} must be gray with shape (B, 1, H, W), (B, H, W) or (H, W), "
                         f"got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1], got {images.dtype}")
    return images.float()


def sample_map(fmap: Tensor, uv: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear samples ``(B, K, C)`` of ``fmap (B, C, h, w)`` at full-resolution pixels ``uv (B, K, 2)``.

    ``fmap`` covers a full-resolution extent ``size = (H, W)`` at any resolution (a lower level
    covers it with bigger pixels); positions outside are clamped to the border.
    """
    # A level with pixels s times bigger has pixel j centred at full-res u = j s + (s - 1) / 2,
    # so with align_corners=False the normalised coordinate is the same at every level.
    H, W = size
    gx = (uv[..., 0] + 0.5) / W * 2 - 1
    gy = (uv[..., 1] + 0.5) / H * 2 - 1
    grid = torch.stack([gx, gy], -1).unsqueeze(1).to(fmap.dtype)       # (B, 1, K, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(2).transpose(1, 2)                              # (B, K, C)


def _block(cin: int, cout: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=1, bias=norm == "none"))
        if norm == "group":
            layers.append(nn.GroupNorm(max(1, cout // 4), cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class KeypointNet(nn.Module):
    """UNet: encoder levels -> (decoder -> detector logits, scores) + descriptors.

    ``forward(images (B, 1, H, W)) -> NetOutput``; ``encode`` runs the encoder only (what the
    right image needs for stereo matching, and a live frame matched densely), ``detect`` adds the
    detector to it. Any H, W: the input is padded to a multiple of
    ``2**(levels-1)`` and the outputs cropped back, so the features cover exactly the image.
    """

    def __init__(self, config: NetworkConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = NetworkConfig(**overrides)
        elif overrides:
            raise ValueError("pass either a NetworkConfig or keyword overrides, not both")
        self.config = config
        ch, norm = config.channels, config.norm
        self.enc = nn.ModuleList([_block(1 if i == 0 else ch[i - 1], ch[i], norm)
                                  for i in range(config.levels)])
        self.dec = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i], norm)
                                  for i in reversed(range(config.levels - 1))])
        self.detector = nn.Conv2d(ch[0], 1, 1)
        self.score = nn.Conv2d(ch[0], 1, 1)
        self.project = (nn.Linear(sum(ch), config.descriptor_dim, bias=False)
                        if config.descriptor_dim else None)

    # ------------------------------------------------------------------------------------------
    def _autocast(self, x: Tensor):
        if self.config.amp and x.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prepare(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Per-image standardisation (gain/offset invariance for lighting changes) and padding."""
        x = check_images(images)
        H, W = x.shape[-2:]
        mean = x.mean((2, 3), keepdim=True)
        std = x.std((2, 3), keepdim=True).clamp_min(1e-3)
        x = (x - mean) / std
        m = self.config.multiple
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, (H, W)

    def _encode(self, x: Tensor, levels: int | None = None) -> list[Tensor]:
        feats = []
        for i, block in enumerate(self.enc[:levels]):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        return feats

    def encode(self, images: Tensor, levels: int | None = None) -> NetOutput:
        """Encoder levels only (no detector/score): for the right image's stereo matching.
        ``levels``: only the finest this many (stereo needs no more: each skipped level is
        ~1/4 of the encoder's work)."""
        x, size = self._prepare(images)
        with self._autocast(x):
            feats = self._encode(x, levels or None)
        return NetOutput(None, None, [f.float() for f in feats], size, tuple(x.shape[-2:]))

    def forward(self, images: Tensor) -> NetOutput:
        x, (H, W) = self._prepare(images)
        with self._autocast(x):
            feats = self._encode(x)
            logits, scores = self._decode(feats, H, W)
        return NetOutput(logits.float(), scores.float(), [f.float() for f in feats], (H, W),
                         tuple(x.shape[-2:]))

    def detect(self, out: NetOutput) -> NetOutput:
        """``out`` of :meth:`encode` with the detector added: ``forward`` in two steps, for frames
        whose keypoints are needed only sometimes (the decoder is ~2/3 of a forward pass)."""
        with self._autocast(out.features[0]):
            logits, scores = self._decode(out.features, *out.size)
        return NetOutput(logits.float(), scores.float(), out.features, out.size, out.padded)

    def _decode(self, feats: list[Tensor], H: int, W: int) -> tuple[Tensor, Tensor]:
        y = feats[-1]
        for block, skip in zip(self.dec, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
        return self.detector(y)[..., :H, :W], torch.sigmoid(self.score(y)[..., :H, :W])

    # ------------------------------------------------------------------------------------------
    def keypoints(self, out: NetOutput) -> tuple[Tensor, Tensor]:
        """``uv (B, K, 2)`` and ``scores (B, K)``: one soft keypoint per full cell.

        K = (H // cell) * (W // cell) in row-major cell order; a partial cell at the right or
        bottom border is not used.
        """
        if out.logits is None:
            raise ValueError("keypoints need the detector output: call forward, not encode")
        c = self.config.cell
        H, W = out.size
        hc, wc = H // c, W // c
        if hc == 0 or wc == 0:
            raise ValueError(f"image {W}x{H} is smaller than one keypoint cell ({c} px)")
        B = out.logits.shape[0]
        lg = out.logits[..., :hc * c, :wc * c].reshape(B, hc, c, wc, c).permute(0, 1, 3, 2, 4)
        prob = torch.softmax(lg.reshape(B, hc, wc, c * c) / self.config.detector_temperature, -1)
        prob = prob.reshape(B, hc, wc, c, c)
        offs = torch.arange(c, dtype=prob.dtype, device=prob.device)
        du = (prob.sum(-2) * offs).sum(-1)                                # (B, hc, wc)
        dv = (prob.sum(-1) * offs).sum(-1)
        u = du + (torch.arange(wc, device=prob.device, dtype=prob.dtype) * c)[None, None, :]
        v = dv + (torch.arange(hc, device=prob.device, dtype=prob.dtype) * c)[None, :, None]
        uv = torch.stack([u, v], -1).reshape(B, hc * wc, 2)
        return uv, sample_map(out.scores, uv, out.size).squeeze(-1)

    def descriptors(self, out: NetOutput, uv: Tensor, levels: int | None = None) -> Tensor:
        """Unit descriptors ``(B, K, D)`` at pixels ``uv (B, K, 2)`` from the encoder levels.

        levels: use only the finest ``levels`` levels, unprojected (stereo matching: the coarse
        levels see the image borders, which breaks their shift equivariance on small images).
        """
        n = len(out.features) if not levels else min(int(levels), len(out.features))
        d = torch.cat([sample_map(f, uv, out.padded) for f in out.features[:n]], -1)
        if self.project is not None and n == self.config.levels:   # all levels (out may hold fewer)
            d = self.project(d)
        return F.normalize(d - d.mean(-1, keepdim=True), dim=-1)

    def dense_descriptors(self, out: NetOutput) -> Tensor:
        """Unit descriptors ``(B, D, H, W)`` at every pixel (levels upsampled and concatenated)."""
        H, W = out.size
        ups = []
        for i, f in enumerate(out.features):
            s = 2 ** i
            if s > 1:  # the level covers the padded image: upsample to it, then crop
                f = F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
            ups.append(f[..., :H, :W])
        d = torch.cat(ups, 1)
        if self.project is not None:
            d = torch.einsum("bchw,dc->bdhw", d, self.project.weight)
        return F.normalize(d - d.mean(1, keepdim=True), dim=1)

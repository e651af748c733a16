"""Matching: stereo disparity on a known shift, hard and soft matching, triangulation."""
import pytest
import torch
import torch.nn.functional as F

from sdpr_loc.geometry.stereo import StereoCamera
from sdpr_loc.vision.matching import as_cameras, hard_match, soft_match, stereo_match, stereo_points
from sdpr_loc.vision.network import KeypointNet, NetworkConfig


def _texture(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, 1, h, w)
    for s in (2, 4, 8):  # multi-scale smooth noise: distinctive everywhere
        x += F.interpolate(torch.rand(1, 1, h // s + 2, w // s + 2, generator=g), size=(h, w),
                           mode="bicubic", align_corners=False)
    return (x - x.min()) / (x.max() - x.min())


def _shift(img, d):
    """Right image of a fronto-parallel plane at constant disparity d: right(u) = left(u + d)."""
    h, w = img.shape[-2:]
    u = torch.arange(w, dtype=torch.float32) + d
    gx = (u + 0.5) / w * 2 - 1
    gy = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).unsqueeze(0)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return KeypointNet(NetworkConfig(width=8, cell=8)).eval()


def _disparities(net, d_true, max_disparity=16, temperature=0.02, levels=3):
    left = _texture(64, 96)
    right = _shift(left, d_true)
    with torch.no_grad():
        lo, ro = net(left), net.encode(right)
        uv, _ = net.keypoints(lo)
        st = stereo_match(net, lo, uv, ro, max_disparity, temperature, levels=levels)
    ok = st.valid & (uv[..., 0] > d_true + 4)          # the match must be inside the right image
    assert ok.float().mean() > 0.7
    return (st.disparity - d_true)[ok]


@pytest.mark.parametrize("d_true", [4.0, 8.0])
def test_stereo_peak_at_the_true_integer_disparity(net, d_true):
    """With a vanishing temperature the estimate is the correlation peak. Shifts by multiples of
    4 px move the three finest levels (strides 1, 2, 4) by whole pixels, so the peak must sit
    exactly on the truth: checks the pixel conventions of candidates and level sampling."""
    err = _disparities(net, d_true, temperature=1e-4).abs()
    assert (err < 1e-3).float().mean() > 0.95


@pytest.mark.parametrize("d_true", [5.0, 7.5])
def test_stereo_disparity_of_shifted_texture(net, d_true):
    err = _disparities(net, d_true).abs()
    assert err.median() < 0.3, err.median()           # sub-pixel, even untrained
    assert (err < 1.0).float().mean() > 0.95


def test_stereo_match_differentiable_and_checked(net):
    left = _texture(32, 48)
    lo, ro = net(left), net.encode(_shift(left, 4.0))
    uv, _ = net.keypoints(lo)
    st = stereo_match(net, lo, uv, ro, 12, 0.05)
    st.disparity.sum().backward()
    g = net.enc[0][0].weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    with pytest.raises(ValueError, match="max_disparity"):
        stereo_match(net, lo, uv, ro, 2, 0.05)
    with pytest.raises(ValueError, match="uv"):
        stereo_match(net, lo, uv[:, :3, 0], ro, 12, 0.05)


def test_hard_match_recovers_permutation_and_rejects_ambiguous():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(2, 20, 16, generator=g), dim=-1)
    perm = torch.randperm(20, generator=g)
    b = a[:, perm] + 0.01 * torch.randn(2, 20, 16, generator=g)
    b = F.normalize(b, dim=-1)
    idx, matched, sim = hard_match(a, b)
    assert matched.all()
    assert torch.equal(perm[idx], torch.arange(20).expand(2, 20))
    assert (sim > 0.99).all()
    # a duplicated target descriptor fails the ratio test
    b2 = torch.cat([b, b[:, :1]], 1)
    _, matched2, _ = hard_match(a, b2, ratio=0.8)
    assert not matched2[:, perm[0]].any() and matched2.sum() == 2 * 19
    # invalid keypoints never match
    va = torch.ones(2, 20, dtype=torch.bool)
    va[:, 3] = False
    _, m3, _ = hard_match(a, b, valid_a=va)
    assert not m3[:, 3].any()
    with pytest.raises(ValueError, match="agree"):
        hard_match(a, b[..., :8])


def test_soft_match_finds_itself(net):
    img = _texture(48, 64, seed=3)
    with torch.no_grad():
        out = net(img)
        uv, _ = net.keypoints(out)
        desc = net.descriptors(out, uv)
        sm = soft_match(desc, net.dense_descriptors(out), out.scores, temperature=0.01)
    err = (sm.uv - uv).norm(dim=-1)
    assert err.median() < 0.5
    assert sm.similarity.shape == (1, 48) and (sm.similarity <= 1 + 1e-5).all()
    assert ((sm.score > 0) & (sm.score < 1)).all()
    with pytest.raises(ValueError, match="temperature"):
        soft_match(desc, net.dense_descriptors(out), out.scores, temperature=0.0)


def test_stereo_points_match_camera_and_per_item_cameras():
    c1 = StereoCamera(100.0, 100.0, 40.0, 30.0, 0.2)
    c2 = StereoCamera(120.0, 110.0, 41.0, 29.0, 0.3)
    uv = torch.tensor([[[10.0, 20.0], [50.0, 5.0]], [[12.0, 3.0], [60.0, 40.0]]])
    d = torch.tensor([[4.0, 0.1], [8.0, 2.5]])
    pts, W, valid = stereo_points([c1, c2], uv, d, 0.5)
    assert pts.dtype == torch.float64 and W.shape == (2, 2, 3, 3)
    assert valid.tolist() == [[True, False], [True, True]]          # 0.1 px < min_disparity
    for b, cam in enumerate((c1, c2)):
        uvd = torch.cat([uv[b], d[b, :, None]], -1).double()
        p, _ = cam.triangulate(uvd)
        torch.testing.assert_close(pts[b], p)
        torch.testing.assert_close(W[b], cam.inverse_covariance(uvd, 0.5)[0])
    pts_same, _, _ = stereo_points(as_cameras(torch.tensor([100.0, 100.0, 40.0, 30.0, 0.2]), 2), uv, d, 0.5)
    torch.testing.assert_close(pts_same[0], pts[0])


def test_as_cameras_checks():
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        as_cameras(torch.zeros(3, 4), 3)
    with pytest.raises(ValueError, match="StereoCamera"):
        as_cameras("cam", 1)

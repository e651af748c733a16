"""Localizer: shapes, exact identity, gradients through the certified block (vs the SVD block
and finite differences), masking of unusable items, extract_keypoints."""
import copy

import numpy as np
import pytest
import torch

from sdpr_loc.data.synth import default_camera, make_world, render_drive
from sdpr_loc.geometry.registration import register
from sdpr_loc.geometry.se3 import random_rotation, se3_exp
from sdpr_loc.training.losses import pose_loss
from sdpr_loc.vision.keypoints import StereoKeypoints
from sdpr_loc.vision.network import KeypointNet, NetworkConfig
from sdpr_loc.vision.pipeline import Localizer, LocalizerConfig, extract_keypoints

H, W = 64, 96
CFG = LocalizerConfig(max_disparity=24)


@pytest.fixture(scope="module")
def pairs():
    """Two repeat (dusk) frames with their nearest teach (day) frames and ground truth."""
    world = make_world(0)
    cam = default_camera(H, W)
    teach = list(render_drive(world, "teach", "day", frames=3, camera=cam))[1:]
    rep = list(render_drive(world, "repeat", "day", frames=3, camera=cam, noise=False))[1:]
    stack = lambda fr: torch.stack([torch.from_numpy(np.stack([f.left, f.right])) for f in fr])  # noqa: E731
    T = torch.stack([torch.from_numpy(np.linalg.inv(t.pose) @ r.pose) for t, r in zip(teach, rep)])
    return stack(rep), stack(teach), T, cam


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return KeypointNet(NetworkConfig(**{"width": 8, "cell": 8, **kw}))


def test_shapes_soft_and_hard(pairs):
    src, trg, T_gt, cam = pairs
    loc = Localizer(_net(), "certified", CFG)
    res = loc(src, trg, cam, mode="soft")
    K = (H // 8) * (W // 8)
    assert res.T.shape == (2, 4, 4) and res.T.dtype == torch.float64
    torch.testing.assert_close(res.T[:, 3], torch.tensor([[0, 0, 0, 1.0]] * 2, dtype=torch.float64))
    R = res.T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert isinstance(res.source, StereoKeypoints) and res.source.points.shape == (2, K, 3)
    assert res.target_uv.shape == (2, K, 2) and res.weights.shape == (2, K)
    assert (res.matches == -1).all() and (res.weights >= 0).all()
    assert len(res.certificate) == 2 and res.usable.dtype == torch.bool
    loc.eval()
    hard = loc(src, trg, cam)                      # eval mode -> hard matching
    assert hard.T.shape == (2, 4, 4) and hard.matches.shape == (2, K)
    m = hard.matches >= 0
    assert m.any() and (hard.weights[~m] == 0).all()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        loc(src[:, :1], trg, cam)
    with pytest.raises(ValueError, match="mode"):
        loc(src, trg, cam, mode="fuzzy")
    with pytest.raises(ValueError, match="pose_block"):
        Localizer(_net(), "ransac")


def test_identical_frames_give_identity(pairs):
    """Same frame as source and target: every keypoint matches itself, T is the identity."""
    src, _, _, cam = pairs
    loc = Localizer(_net(), "certified", CFG).eval()
    res = loc.localize(src, src, cam)
    assert res.usable.all() and res.certificate.certified.all()
    torch.testing.assert_close(res.T, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), atol=1e-8, rtol=0)


def _pose_grads(loc, src, trg, cam, T_gt):
    loc.network.zero_grad()
    res = loc(src, trg, cam, mode="soft")
    loss, _ = pose_loss(res.T, T_gt, res.usable)
    loss.backward()
    return res, {n: p.grad.clone() for n, p in loc.network.named_parameters()}


def test_gradient_reaches_network_through_certified_block(pairs):
    """The pose loss touches the network only through the registration: its gradient must
    arrive at every part of the network, finite and non-zero."""
    src, trg, T_gt, cam = pairs
    loc = Localizer(_net(), "certified", CFG).train()
    res, g = _pose_grads(loc, src, trg, cam, T_gt)
    assert res.usable.all(), [r for r in res.certificate.reason]
    for name, grad in g.items():
        assert torch.isfinite(grad).all(), name
    for name in ("enc.0.0.weight", "enc.3.0.weight", "dec.2.0.weight", "detector.weight", "score.weight"):
        assert g[name].abs().sum() > 0, name


def test_certified_gradient_equals_svd_gradient_isotropic(pairs):
    """Isotropic weights: both blocks solve the same weighted least squares exactly (SVD in
    closed form, certified by QCQP + certificate), so the network gradients must agree."""
    src, trg, T_gt, cam = pairs
    cfg = LocalizerConfig(max_disparity=24, covariance="isotropic")
    net = _net()
    res_c, g_c = _pose_grads(Localizer(net, "certified", cfg).train(), src, trg, cam, T_gt)
    res_s, g_s = _pose_grads(Localizer(copy.deepcopy(net), "svd", cfg).train(), src, trg, cam, T_gt)
    assert res_c.certificate.certified.all()
    torch.testing.assert_close(res_c.T, res_s.T, atol=1e-7, rtol=0)
    for name in g_c:
        scale = g_s[name].abs().max().clamp_min(1e-12)
        assert (g_c[name] - g_s[name]).abs().max() / scale < 1e-3, name


def test_pose_block_gradient_noise_free_matches_svd_and_finite_differences():
    """Noise-free isotropic registration: d loss / d (trg, weights) from the certified block's
    KKT backward == the SVD closed form's autograd == central finite differences."""
    g = torch.Generator().manual_seed(3)
    N = 12
    src = torch.randn(1, N, 3, generator=g, dtype=torch.float64) * 2 + torch.tensor([0, 0, 8.0], dtype=torch.float64)
    R = random_rotation(1, generator=g, dtype=torch.float64)
    t = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    trg0 = src @ R.transpose(1, 2) + t.unsqueeze(1)
    w0 = torch.rand(1, N, generator=g, dtype=torch.float64) + 0.5
    T_ref = se3_exp(torch.tensor([[0.1, 0.0, -0.2, 0.02, -0.01, 0.03]], dtype=torch.float64))

    def loss(method, trg, w):
        reg = register(src, trg, w, None, method=method)
        return pose_loss(reg.T, T_ref)[0]

    grads = {}
    for method in ("certified", "svd"):
        trg, w = trg0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        loss(method, trg, w).backward()
        grads[method] = (trg.grad, w.grad)
    torch.testing.assert_close(grads["certified"][0], grads["svd"][0], atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(grads["certified"][1], grads["svd"][1], atol=1e-8, rtol=1e-6)
    eps = 1e-6
    for i, j in ((0, 0), (3, 2), (7, 1)):
        d = torch.zeros_like(trg0)
        d[0, i, j] = eps
        fd = (loss("svd", trg0 + d, w0) - loss("svd", trg0 - d, w0)) / (2 * eps)
        assert abs(float(fd) - float(grads["certified"][0][0, i, j])) < 1e-6


def test_unusable_items_are_masked_with_zero_gradient():
    """An item with fewer than 3 weighted matches is not registered: identity pose, flagged,
    counted, and it sends no (and no NaN) gradient back."""
    g = torch.Generator().manual_seed(0)
    src = (torch.randn(2, 10, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 6.0])).requires_grad_(True)
    trg = (src.detach() + 0.1).requires_grad_(True)
    w = torch.ones(2, 10, dtype=torch.float64)
    w[1, 2:] = 0
    W = torch.eye(3, dtype=torch.float64).expand(2, 10, 3, 3)
    for block in ("certified", "svd"):
        loc = Localizer(_net(), block, CFG)
        T, cert, usable, _ = loc._register(src, trg, w, W, robust=False)
        assert usable.tolist() == [True, False] and not cert.certified[1]
        assert "fewer than 3" in cert.reason[1]
        torch.testing.assert_close(T[1], torch.eye(4, dtype=torch.float64))
        src.grad = trg.grad = None
        pose_loss(T, torch.eye(4, dtype=torch.float64).expand(2, 4, 4), usable)[0].backward()
        assert torch.isfinite(src.grad).all() and (src.grad[1] == 0).all() and src.grad[0].abs().sum() > 0


def test_extract_keypoints_interface(pairs):
    src, _, _, cam = pairs
    net = _net().eval()
    with torch.no_grad():
        kp = extract_keypoints(net, src[0, 0].numpy(), src[0, 1].numpy(), cam, CFG)
    K = (H // 8) * (W // 8)
    assert kp.uv.shape == (1, K, 2) and kp.disparity.shape == (1, K) and kp.points.shape == (1, K, 3)
    assert kp.inv_cov.shape == (1, K, 3, 3) and kp.descriptors.shape == (1, K, net.config.feature_dim)
    assert kp.valid.dtype == torch.bool and kp.valid.float().mean() > 0.5
    assert kp.points.dtype == torch.float64 and (kp.points[kp.valid][:, 2] > 0).all()
    assert (torch.linalg.eigvalsh(kp.inv_cov[kp.valid]) > 0).all()
    assert (kp.inv_cov[~kp.valid] == 0).all()
    with pytest.raises(ValueError, match="differ in shape"):
        extract_keypoints(net, src[0, 0], src[0, 1, :32], cam)

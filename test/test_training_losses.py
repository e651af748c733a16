"""Pose and keypoint losses against closed forms; the uncertified-item policy; config loading."""
import math
from dataclasses import fields

import pytest
import torch
import yaml

from sdpr_loc.geometry.se3 import se3_exp
from sdpr_loc.geometry.stereo import StereoCamera
from sdpr_loc.training.config import DataConfig, Params, TrainConfig, default_config_path, load_params, parse_override
from sdpr_loc.training.losses import descriptor_loss, keypoint_loss, pose_loss
from sdpr_loc.training.trainer import oriented
from sdpr_loc.vision.network import NetworkConfig
from sdpr_loc.vision.pipeline import LocalizerConfig

D = torch.float64


def test_pose_loss_closed_forms():
    I = torch.eye(4, dtype=D).expand(3, 4, 4)
    T = I.clone()
    T[0, :3, 3] = torch.tensor([0.3, -0.4, 0.0], dtype=D)                      # 0.5 m
    T[1] = se3_exp(torch.tensor([0, 0, 0, 0, 0, 0.2], dtype=D))                # 0.2 rad about z
    loss, per = pose_loss(T, I, trans_weight=2.0, rot_weight=10.0)
    torch.testing.assert_close(per, torch.tensor([2 * 0.25, 10 * 0.04, 0.0], dtype=D))
    torch.testing.assert_close(loss, per.mean())


def test_pose_loss_mask_drops_items_and_their_gradient():
    T = se3_exp(torch.randn(3, 6, dtype=D) * 0.1).requires_grad_(True)
    I = torch.eye(4, dtype=D).expand(3, 4, 4)
    mask = torch.tensor([True, False, True])
    loss, per = pose_loss(T, I, mask)
    torch.testing.assert_close(loss, (per[0] + per[2]) / 2)
    loss.backward()
    assert (T.grad[1] == 0).all() and T.grad[0].abs().sum() > 0
    T.grad = None
    empty, _ = pose_loss(T, I, torch.zeros(3, dtype=torch.bool))
    empty.backward()                                   # still differentiable, all zeros
    assert float(empty.detach()) == 0 and (T.grad == 0).all()
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        pose_loss(T[:, :3], I)


def test_keypoint_loss_zero_at_truth_and_huber_elsewhere():
    cam = StereoCamera(100.0, 100.0, 48.0, 32.0, 0.2)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1, 20, 3, generator=g, dtype=D) * torch.tensor([2, 1, 2], dtype=D) + torch.tensor([-1, -0.5, 5], dtype=D)
    T = se3_exp(torch.tensor([[0.1, 0.0, 0.3, 0.0, 0.02, 0.0]], dtype=D))
    p_t = pts @ T[0, :3, :3].T + T[0, :3, 3]
    uv = cam.project(p_t)[..., :2].float()
    valid = torch.ones(1, 20, dtype=torch.bool)
    assert float(keypoint_loss(pts, valid, uv, T, [cam], (64, 96))) < 1e-6
    shifted = uv + torch.tensor([3.0, 0.0])                              # 3 px in u: Huber(2) = 2*(3-1) = 4
    inside = (uv[..., 0] + 0 <= 95) & (uv[..., 0] >= 0) & (uv[..., 1] >= 0) & (uv[..., 1] <= 63)
    assert inside.sum() > 5
    torch.testing.assert_close(keypoint_loss(pts, valid, shifted, T, [cam], (64, 96), delta=2.0),
                               torch.tensor(4.0), atol=1e-4, rtol=0)
    # points projecting outside the target image, and masked items, do not count
    far = keypoint_loss(pts, valid, shifted, T, [cam], (64, 96), mask=torch.tensor([False]))
    assert float(far) == 0


def test_descriptor_loss_is_cross_entropy_at_the_ground_truth_pixel():
    """Integer ground-truth pixels: equals torch's cross_entropy with that pixel as the class
    (an independent reference); sub-pixel: the bilinear mix of the four neighbours' log-probs."""
    H, W = 12, 16
    cam = StereoCamera(20.0, 20.0, 7.0, 5.0, 0.2)
    uv_true = torch.tensor([[[3.0, 4.0], [10.0, 2.0], [15.0, 11.0], [0.0, 0.0]]], dtype=D)
    z = torch.tensor([[4.0, 5.0, 6.0, 3.0]], dtype=D)
    pts = torch.stack([(uv_true[..., 0] - cam.cx) * z / cam.fx, (uv_true[..., 1] - cam.cy) * z / cam.fy, z], -1)
    T = torch.eye(4, dtype=D)[None]
    logits = torch.randn(1, 4, H * W, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    valid = torch.ones(1, 4, dtype=torch.bool)
    got = descriptor_loss(logits, pts, valid, T, [cam], (H, W))
    label = (uv_true[0, :, 1] * W + uv_true[0, :, 0]).round().long()
    ref = torch.nn.functional.cross_entropy(logits[0], label)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    got.backward()
    assert logits.grad.abs().sum() > 0
    # half a pixel to the right: the mean of the two neighbours' cross-entropies
    pts_half = pts.clone()
    pts_half[..., 0] += 0.5 * z / cam.fx
    half = descriptor_loss(logits.detach()[:, :2], pts_half[:, :2], valid[:, :2], T, [cam], (H, W))
    logp = torch.log_softmax(logits.detach()[0, :2], -1)
    ref_half = -0.5 * (logp[[0, 1], label[:2]] + logp[[0, 1], label[:2] + 1]).mean()
    torch.testing.assert_close(half, ref_half, atol=1e-5, rtol=1e-5)
    # invalid points, points behind the camera or outside the image, and masked items do not count
    assert float(descriptor_loss(logits.detach(), pts, torch.zeros_like(valid), T, [cam], (H, W))) == 0
    behind = pts * torch.tensor([1.0, 1.0, -1.0], dtype=D)
    assert float(descriptor_loss(logits.detach(), behind, valid, T, [cam], (H, W))) == 0
    assert float(descriptor_loss(logits.detach(), pts, valid, T, [cam], (H, W), mask=torch.tensor([False]))) == 0
    with pytest.raises(ValueError, match="logits must be"):
        descriptor_loss(logits[..., :-1], pts, valid, T, [cam], (H, W))


def test_pairs_oriented_keypoints_on_the_keyframe():
    T = se3_exp(torch.tensor([[0.3, -0.1, 0.5, 0.02, 0.1, -0.05]], dtype=D))
    batch = {"source": torch.zeros(1, 2, 4, 4), "target": torch.ones(1, 2, 4, 4), "T_target_source": T}
    s, t, T_live = oriented(batch, "live")
    assert float(s.sum()) == 0 and T_live is T
    s, t, T_kf = oriented(batch, "keyframe")
    assert float(s.sum()) == 32 and float(t.sum()) == 0
    torch.testing.assert_close(T_kf @ T, torch.eye(4, dtype=D)[None])
    with pytest.raises(ValueError, match="keypoints_from"):
        TrainConfig(keypoints_from="map")


def test_yaml_is_the_source_of_defaults():
    """The dataclass defaults mirror config/train.yaml exactly (so the two cannot drift)."""
    doc = yaml.safe_load(default_config_path().read_text())["trainer_node"]["ros__parameters"]
    flat = {}
    for group in (NetworkConfig, LocalizerConfig, TrainConfig, DataConfig):
        for f in fields(group):
            flat[f.name] = getattr(group(), f.name)
    assert set(doc) == set(flat)
    for k, v in doc.items():
        assert (v == flat[k]) or (isinstance(v, float) and math.isclose(v, flat[k])), (k, v, flat[k])
    p = load_params()
    assert p.network == NetworkConfig() and p.train == TrainConfig() and p.localizer == LocalizerConfig()


def test_config_overrides_and_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("trainer_node:\n  ros__parameters:\n    width: 8\n    lr: 1\n")
    p = load_params(path, {"epochs": "3", "augment": "false"})
    assert p.network.width == 8 and p.train.lr == 1.0 and p.train.epochs == 3 and p.train.augment is False
    assert p.network.cell == NetworkConfig().cell                    # the rest from the package file
    with pytest.raises(ValueError, match="unknown training parameter.*'widht'"):
        load_params(None, {"widht": 3})
    with pytest.raises(ValueError, match="'width' must be of type int"):
        load_params(None, {"width": "wide"})
    with pytest.raises(ValueError, match="pose_block"):
        load_params(None, {"pose_block": "gn"})
    with pytest.raises(ValueError, match="freeze: unknown group"):
        load_params(None, {"freeze": "encoder,brain"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("width: 3\n")
    with pytest.raises(ValueError, match="ros__parameters"):
        load_params(bad)
    assert parse_override("freeze=encoder") == ("freeze", "encoder") and parse_override("epochs=3") == ("epochs", 3)
    assert load_params(None, dict([parse_override("lr=1e-4")])).train.lr == 1e-4   # YAML reads 1e-4 as text
    with pytest.raises(ValueError, match="key=value"):
        parse_override("lr")
    assert Params.from_flat(p.to_flat()) == p

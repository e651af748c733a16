"""KeypointNet: shapes, pixel conventions, padding, determinism, devices, input checks."""
import pytest
import torch

from sdpr_loc.vision.keypoints import StereoKeypoints
from sdpr_loc.vision.network import KeypointNet, NetworkConfig, sample_map


def _net(**kw):
    torch.manual_seed(0)
    return KeypointNet(NetworkConfig(**{"width": 4, "cell": 8, **kw}))


def test_shapes_and_ranges():
    net = _net()
    x = torch.rand(2, 1, 64, 96)
    out = net(x)
    assert out.logits.shape == (2, 1, 64, 96) and out.scores.shape == (2, 1, 64, 96)
    assert [tuple(f.shape) for f in out.features] == [(2, 4, 64, 96), (2, 8, 32, 48), (2, 16, 16, 24),
                                                      (2, 32, 8, 12)]
    uv, scores = net.keypoints(out)
    assert uv.shape == (2, 8 * 12, 2) and scores.shape == (2, 96)
    assert (scores > 0).all() and (scores < 1).all()
    # each soft keypoint stays inside its own cell
    cell_u = torch.arange(12).repeat(8) * 8
    cell_v = torch.arange(8).repeat_interleave(12) * 8
    assert ((uv[..., 0] >= cell_u) & (uv[..., 0] <= cell_u + 7)).all()
    assert ((uv[..., 1] >= cell_v) & (uv[..., 1] <= cell_v + 7)).all()
    d = net.descriptors(out, uv)
    assert d.shape == (2, 96, net.config.feature_dim) == (2, 96, 60)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 96))
    dense = net.dense_descriptors(out)
    assert dense.shape == (2, 60, 64, 96)


def test_descriptor_sampling_matches_dense_map_at_pixels():
    """Sampling the levels at a pixel == the dense (upsampled, concatenated) map there: one
    pixel convention (centre of pixel (i, j) at u = j, v = i) at every level."""
    net = _net(descriptor_dim=24)
    out = net(torch.rand(1, 1, 48, 80))
    dense = net.dense_descriptors(out)
    ij = torch.tensor([[0, 0], [5, 7], [47, 79], [20, 33], [13, 64]])
    uv = ij.flip(-1).float().unsqueeze(0)
    d = net.descriptors(out, uv)
    torch.testing.assert_close(d[0], dense[0, :, ij[:, 0], ij[:, 1]].T, atol=1e-5, rtol=1e-5)


def test_odd_sizes_are_padded_and_cropped():
    net = _net()
    out = net(torch.rand(1, 1, 61, 90))
    assert out.logits.shape[-2:] == (61, 90) and out.padded == (64, 96)
    uv, _ = net.keypoints(out)
    assert uv.shape == (1, 7 * 11, 2)          # partial cells at the border are not used
    assert net.dense_descriptors(out).shape[-2:] == (61, 90)
    assert net.encode(torch.rand(1, 61, 90)).features[0].shape[-2:] == (64, 96)


def test_detect_after_encode_is_forward():
    """A live frame encodes first and runs the detector only when it needs keypoints: the two
    steps give forward's outputs."""
    net = _net()
    x = torch.rand(2, 1, 61, 90)
    a, b = net(x), net.detect(net.encode(x))
    torch.testing.assert_close(b.logits, a.logits)
    torch.testing.assert_close(b.scores, a.scores)
    assert net.encode(x).logits is None and b.padded == a.padded and b.size == a.size


def test_determinism_with_seed():
    a, b = _net(), _net()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(1, 1, 32, 48)
    o1, o2 = a(x), b(x)
    assert torch.equal(o1.logits, o2.logits) and torch.equal(o1.features[-1], o2.features[-1])


def test_illumination_gain_invariance():
    """Per-image standardisation: a global gain and offset do not change the outputs."""
    net = _net()
    x = torch.rand(1, 1, 32, 48) * 0.5
    torch.testing.assert_close(net(x).logits, net(0.3 * x + 0.1).logits, atol=1e-4, rtol=1e-4)


def test_device_moves_and_keypoints_to():
    net = _net().to("cpu")
    out = net(torch.rand(1, 32, 48))
    assert out.logits.device.type == "cpu"
    kp = StereoKeypoints(uv=torch.zeros(1, 3, 2), disparity=torch.zeros(1, 3), points=torch.zeros(1, 3, 3),
                         inv_cov=torch.zeros(1, 3, 3, 3), scores=torch.zeros(1, 3),
                         descriptors=torch.zeros(1, 3, 4), valid=torch.zeros(1, 3, dtype=torch.bool))
    assert kp.to("cpu").uv.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_under_autocast():
    net = _net().cuda()
    out = net(torch.rand(1, 1, 64, 96, device="cuda"))
    assert out.logits.is_cuda and out.logits.dtype == torch.float32
    uv, _ = net.keypoints(out)
    assert torch.isfinite(net.descriptors(out, uv)).all()


def test_bad_inputs_raise():
    net = _net()
    with pytest.raises(ValueError, match="gray"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        net(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="smaller than one keypoint cell"):
        net.keypoints(net(torch.rand(1, 1, 4, 40)))
    with pytest.raises(ValueError, match="width"):
        NetworkConfig(width=0)
    with pytest.raises(ValueError, match="norm"):
        NetworkConfig(norm="batch")
    with pytest.raises(ValueError, match="encode"):
        net.keypoints(net.encode(torch.rand(1, 1, 32, 32)))


def test_sample_map_bilinear_between_pixels():
    fmap = torch.arange(12.0).reshape(1, 1, 3, 4)
    v = sample_map(fmap, torch.tensor([[[1.5, 1.0], [0.0, 0.5]]]), (3, 4))
    torch.testing.assert_close(v[0, :, 0], torch.tensor([5.5, 2.0]))

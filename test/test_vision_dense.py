"""Dense matching of map keypoints in a live frame (vision/dense.py) against ground truth."""
import numpy as np
import pytest
import torch

from sdpr_loc.data.render import StereoRenderer
from sdpr_loc.data.synth import make_world, render_drive
from sdpr_loc.vision.dense import DenseFrame
from sdpr_loc.vision.frontend import default_model_path, load_model
from sdpr_loc.vision.pipeline import LocalizerConfig, extract_keypoints


@pytest.fixture(scope="module")
def setup():
    network, cfg, _ = load_model(str(default_model_path()), "cpu")
    frames = list(render_drive(make_world(11), "teach", "day", frames=4, seed=0))
    return network, cfg, frames


def _valid(kp):
    kp = kp.detach()
    v = kp.valid[0]
    return kp.uv[0][v].numpy(), kp.points[0][v].double().numpy(), kp.descriptors[0][v]


def test_keypoints_of_the_same_frame_find_themselves(setup):
    network, cfg, frames = setup
    fr = frames[0]
    live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
    uv, P, desc = _valid(live.keypoints)
    m = live.match(desc)
    assert m.valid.mean() > 0.5
    err = np.linalg.norm(m.uv[m.valid] - uv[m.valid], axis=1)
    assert np.median(err) < 0.75, np.median(err)
    rel = np.linalg.norm(m.points[m.valid] - P[m.valid], axis=1) / P[m.valid, 2]
    assert np.median(rel) < 0.02
    assert np.isfinite(m.inv_cov[m.valid]).all() and (np.linalg.eigvalsh(m.inv_cov[m.valid])[:, 0] > 0).all()


def test_matches_in_a_moved_frame_follow_the_ground_truth_motion(setup):
    """Keypoints of frame 0 matched densely in frame 2 (1 m further): most matches land within
    3 px of where the rendered ground truth (true depth, true poses) puts them."""
    network, cfg, frames = setup
    kf, fr = frames[0], frames[2]
    uv0, _, desc = _valid(extract_keypoints(network, kf.left, kf.right, kf.camera, cfg))
    m = DenseFrame(network, fr.left, fr.right, fr.camera, cfg).match(desc)
    assert m.valid.sum() >= 30
    cam = kf.camera
    depth = StereoRenderer(make_world(11), cam, "day").depth(kf.pose)
    z = depth[np.clip(np.round(uv0[:, 1]).astype(int), 0, depth.shape[0] - 1),
              np.clip(np.round(uv0[:, 0]).astype(int), 0, depth.shape[1] - 1)].astype(np.float64)
    z = np.where(np.isfinite(z), z, np.nan)  # sky: no ground truth
    P0 = np.stack([(uv0[:, 0] - cam.cx) * z / cam.fx, (uv0[:, 1] - cam.cy) * z / cam.fy, z], -1)
    T_live_kf = np.linalg.inv(fr.pose) @ kf.pose
    p = P0 @ T_live_kf[:3, :3].T + T_live_kf[:3, 3]
    uv_true = np.stack([cam.fx * p[:, 0] / p[:, 2] + cam.cx, cam.fy * p[:, 1] / p[:, 2] + cam.cy], -1)
    check = m.valid & np.isfinite(uv_true).all(1)
    px = np.linalg.norm(m.uv[check] - uv_true[check], axis=1)
    assert np.mean(px < 3.0) > 0.6, np.percentile(px, [25, 50, 75])


def test_bad_descriptors_are_named_and_empty_is_empty(setup):
    network, cfg, frames = setup
    fr = frames[0]
    live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
    with pytest.raises(ValueError, match="descriptors must be"):
        live.match(torch.zeros(5, 3))
    empty = live.match(torch.zeros(0, live.descriptor_dim))
    assert empty.valid.shape == (0,) and empty.points.shape == (0, 3)
    with pytest.raises(ValueError, match="one left and one right"):
        DenseFrame(network, fr.left, fr.right[:-2], fr.camera, cfg)
    with pytest.raises(ValueError, match="ratio"):
        LocalizerConfig(ratio=1.5)



def test_tracker_localizes_densely_and_reports_bad_maps(setup):
    """Map of frames 0, 2 (day); frame 1 localized by dense matching without any prior (place
    signature), certified and within 10 cm of ground truth; an ORB map is refused with a reason."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.tracker import ERROR, Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[2]], extract, every_m=0.01, frontend="network")
    tracker = Tracker(TrackerConfig(mode="map", exhaustive=True), kmap, matching=cfg)
    fr = frames[1]
    res = tracker.process(DenseFrame(network, fr.left, fr.right, fr.camera, cfg), fr.stamp_ns)
    assert res.certified and res.trusted, res.reason
    assert "place recognition" in res.reason
    assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.1
    orb, _ = make_extractor("orb")
    orb_map = build_map([frames[0], frames[2]], orb, every_m=0.01, frontend="orb")
    bad = Tracker(TrackerConfig(mode="map"), orb_map).process(
        DenseFrame(network, fr.left, fr.right, fr.camera, cfg), fr.stamp_ns)
    assert bad.level == ERROR and bad.T is None and "descriptor length" in bad.reason


def test_an_initial_pose_is_searched_around(setup):
    """An initial pose 15 cm off with its covariance (set_pose, as from RViz's initialpose): the
    next frame is searched in windows around it (guided) and localized; the frame after (no
    velocity yet) exhaustively around the nearest keyframes; then guided with the velocity, in
    windows narrower than the initial pose's."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[1], frames[3]], extract, every_m=0.01, frontend="network")
    tracker = Tracker(TrackerConfig(mode="map"), kmap, matching=cfg)
    T0 = frames[1].pose.copy()
    T0[:3, 3] += [0.1, 0.0, -0.1]
    tracker.set_pose(T0, None, np.diag([0.15 ** 2] * 3 + [np.radians(2.0) ** 2] * 3))
    windows, searches = {}, []
    for k in (1, 2, 3):
        fr = frames[k]
        live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
        match = live.match
        live.match = lambda d, guide=None, *rest, k=k, match=match: (windows.setdefault(k, []).append(
            None if guide is None else np.median(guide.radius)), match(d, guide, *rest))[1]
        res = tracker.process(live, fr.stamp_ns)
        searches.append(res.search)
        assert res.certified, (k, res.search, res.reason)
        assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25, (k, res.T[:3, 3] - fr.pose[:3, 3])
    assert searches == ["guided", "exhaustive", "guided"], searches
    assert tracker.velocity is not None and windows[1][0] > windows[3][0], windows


def _prior_case(setup, live_index=2, sigma_m=0.05, sigma_deg=0.5):
    from sdpr_loc.vision.frames import Keyframe, PosePrior, search_windows

    network, cfg, frames = setup
    kf, fr = frames[0], frames[live_index]
    kfr = Keyframe.from_keypoints(extract_keypoints(network, kf.left, kf.right, kf.camera, cfg).detach(), kf.pose)
    live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
    prior = PosePrior(np.linalg.inv(fr.pose) @ kf.pose,
                      np.diag([sigma_m ** 2] * 3 + [np.radians(sigma_deg) ** 2] * 3), 3.0, 3, 8)
    return kfr, live, search_windows(kfr.points, prior, live.camera, live.size), prior


def test_guided_search_finds_what_the_exhaustive_search_finds_inside_the_window(setup):
    """Same pixel and sub-pixel position wherever the exhaustive peak lies inside the window (both
    compute the full map's cosines at those pixels); guided never accepts a peak on the
    window's border; windows come from the prior's covariance through the projection."""
    kfr, live, guide, _ = _prior_case(setup)
    ex = live.match(kfr.descriptors)
    gd = live.match(kfr.descriptors, guide)
    inside = guide.inside & (np.abs(ex.uv - guide.uv).max(1) <= guide.radius - 1)
    assert (inside & ex.valid).sum() >= 30
    assert gd.valid[inside & ex.valid].all()        # a window holds no second best the image lacks
    both = inside & ex.valid
    assert np.abs(gd.uv[both] - ex.uv[both]).max() < 1e-3
    rel = np.linalg.norm(gd.points[both] - ex.points[both], axis=1) / ex.points[both, 2]
    assert rel.max() < 1e-4                          # float32 rounding of the same pixel
    for same_drive in (False, True):
        # the peak pixel is inside the window, not on its rim; the sub-pixel step moves it by at
        # most subpixel_window + 1/2 (the fine levels' parabola)
        gd = live.match(kfr.descriptors, guide, same_drive)
        reach = guide.radius + (live.config.subpixel_window if same_drive else 0)
        peak = np.rint(gd.uv) - np.rint(guide.uv)
        assert not (gd.valid & (np.abs(peak).max(1) > reach)).any()
    # near points move more under the same pose uncertainty: bigger windows
    near = kfr.points[:, 2] < np.percentile(kfr.points[:, 2], 25)
    far = kfr.points[:, 2] > np.percentile(kfr.points[:, 2], 75)
    assert guide.radius[near].mean() > guide.radius[far].mean()


def test_same_drive_guided_search_finds_the_whole_flow(setup):
    """Driving forward, the coarse levels hold the all-level peak back towards the keyframe's pixel
    (they see a neighbourhood that grows): odometry and maps taught from it came out ~6 % short.
    Against a keyframe of the same drive the guided search peaks on the finest levels: the flow
    found is within 5 % of the true one (the projection of the keyframe points under the true
    motion), where the all-level search finds < 95 % of it, and no fewer matches."""
    kfr, live, guide, _ = _prior_case(setup, live_index=2)
    cam, P = live.camera, kfr.points
    uv0 = np.stack([cam.fx * P[:, 0] / P[:, 2] + cam.cx, cam.fy * P[:, 1] / P[:, 2] + cam.cy], -1)
    flow = guide.uv - uv0                                           # the true flow of each point
    moved = guide.inside & (np.linalg.norm(flow, axis=1) > 2)

    def found(m):
        ok = m.valid & moved
        f = m.uv[ok] - uv0[ok]
        return float(np.median((f * flow[ok]).sum(1) / (flow[ok] ** 2).sum(1))), int(ok.sum())

    fine, n_fine = found(live.match(kfr.descriptors, guide, same_drive=True))
    coarse, n_all = found(live.match(kfr.descriptors, same_drive=True))
    assert abs(fine - 1) < 0.05 and coarse < 0.95, (fine, coarse)
    assert n_fine >= n_all >= 50


def test_search_windows_follow_the_projection():
    """Predicted pixels are the pinhole projection of the moved points; the half-size is 3 sigma
    (+1 px) of the first-order pixel covariance, checked against sampled pose perturbations."""
    from sdpr_loc.geometry.se3 import se3_exp_np
    from sdpr_loc.geometry.stereo import StereoCamera
    from sdpr_loc.vision.frames import PosePrior, search_windows

    cam = StereoCamera(fx=200.0, fy=210.0, cx=160.0, cy=120.0, baseline=0.24, width=320, height=240)
    rng = np.random.default_rng(3)
    P = np.stack([rng.uniform(-3, 3, 50), rng.uniform(-1, 1, 50), rng.uniform(2, 20, 50)], -1)
    T = se3_exp_np(np.array([0.1, -0.05, 0.3, 0.01, -0.02, 0.005]))
    cov = np.diag([0.02 ** 2] * 3 + [np.radians(0.3) ** 2] * 3)
    g = search_windows(P, PosePrior(T, cov, 3.0, 1, 1000), cam, (240, 320))
    p = P @ T[:3, :3].T + T[:3, 3]
    uv = np.stack([200 * p[:, 0] / p[:, 2] + 160, 210 * p[:, 1] / p[:, 2] + 120], -1)
    assert np.allclose(g.uv[g.inside], uv[g.inside], atol=1e-9)
    # Monte-Carlo pixel spread under left perturbations of the pose
    xs = rng.multivariate_normal(np.zeros(6), cov, 4000)
    spread = []
    for x in xs:
        q = P @ (se3_exp_np(x) @ T)[:3, :3].T + (se3_exp_np(x) @ T)[:3, 3]
        spread.append(np.stack([200 * q[:, 0] / q[:, 2] + 160, 210 * q[:, 1] / q[:, 2] + 120], -1))
    sd = np.sqrt(np.linalg.eigvalsh(np.einsum("kni,knj->nij", np.array(spread) - uv, np.array(spread) - uv)
                                    / len(xs))[:, -1])
    expected = np.ceil(3 * sd + 1)
    assert np.abs(g.radius - expected).max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dense_matching_agrees_with_cpu(setup):
    """The network's CUDA path (bfloat16 autocast) matches like the CPU path."""
    from sdpr_loc.vision.frontend import load_model as load

    network, cfg, frames = setup
    gpu, gcfg, _ = load(str(default_model_path()), "cuda")
    kfr, live, guide, _ = _prior_case(setup)
    fr = frames[2]
    glive = DenseFrame(gpu, fr.left, fr.right, fr.camera, gcfg)
    a, b = live.match(kfr.descriptors, guide), glive.match(kfr.descriptors, guide)
    both = a.valid & b.valid
    assert both.sum() >= 0.8 * a.valid.sum()
    assert np.median(np.linalg.norm(a.uv[both] - b.uv[both], axis=1)) < 0.25

def test_matching_in_chunks_equals_matching_at_once(setup):
    """match() bounds its correlation memory (1242x375 frames) by matching keypoints in chunks;
    the result must not depend on the chunk size."""
    network, cfg, frames = setup
    fr = frames[1]
    live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
    _, _, desc = _valid(DenseFrame(network, frames[0].left, frames[0].right, frames[0].camera, cfg).keypoints)
    whole = live.match(desc)
    H, W = fr.left.shape
    live.MAX_CORRELATIONS = 7 * H * W      # chunks of 7 keypoints (the last one shorter)
    parts = live.match(desc)
    assert len(desc) > 7 and len(desc) % 7
    # float32 products blocked differently differ in the last bits; the 0.02 soft-argmax temperature
    # turns that into ~1e-3 px: equal up to that, never a different peak
    assert (parts.valid == whole.valid).mean() > 0.99
    np.testing.assert_allclose(parts.similarity, whole.similarity, atol=1e-5)
    np.testing.assert_allclose(parts.uv, whole.uv, atol=0.01)
    both = parts.valid & whole.valid
    np.testing.assert_allclose(parts.points[both], whole.points[both], rtol=1e-3, atol=1e-3)


def test_window_cosines_equal_the_full_descriptor_map(setup):
    """The guided search's per-level cosines (dot products at each level's resolution, blended,
    over a norm map computed once) are the full-resolution map's, at the image border too."""
    network, cfg, frames = setup
    fr = frames[1]
    live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
    _, _, desc = _valid(DenseFrame(network, frames[0].left, frames[0].right, frames[0].camera, cfg).keypoints)
    H, W = live.size
    g = torch.Generator().manual_seed(0)
    M, r = len(desc), 9
    cu = torch.randint(0, W, (M, 1), generator=g)
    cv = torch.randint(0, H, (M, 1), generator=g)
    cu[:4, 0], cv[:4, 0] = torch.tensor([0, W - 1, 0, W - 1]), torch.tensor([0, 0, H - 1, H - 1])  # corners
    o = torch.arange(-r, r + 1)
    U = (cu + o.repeat(len(o))[None]).clamp(0, W - 1)
    V = (cv + o.repeat_interleave(len(o))[None]).clamp(0, H - 1)
    full = (desc @ network.dense_descriptors(live.left)[0].reshape(-1, H * W)).gather(1, V * W + U)
    np.testing.assert_allclose(live._correlate(desc, U, V).numpy(), full.numpy(), atol=2e-5)


def _full_map_search(live, desc, levels=0):
    """The exhaustive search as it was before it factored per level: cosines with the full map
    (``dense_descriptors``), the first maximum, the best pixel outside the peak radius, the
    sub-pixel soft-argmax (``levels`` > 0: :func:`_fine_peak`). (uv, best, unique, cosines (M, HW))."""
    cfg, (H, W), M = live.config, live.size, len(desc)
    corr = desc @ live.network.dense_descriptors(live.left)[0].reshape(-1, H * W)
    best, arg = corr.max(-1)
    bu, bv = arg % W, arg // W
    r = torch.arange(-int(cfg.peak_radius), int(cfg.peak_radius) + 1)
    near = ((bv[:, None, None] + r[None, :, None]).clamp(0, H - 1) * W
            + (bu[:, None, None] + r[None, None, :]).clamp(0, W - 1)).reshape(M, -1)
    second = corr.scatter(1, near, -2.0).max(-1).values
    w = torch.arange(-int(cfg.subpixel_window), int(cfg.subpixel_window) + 1)
    U = (bu[:, None, None] + w[None, None, :]).clamp(0, W - 1).expand(-1, len(w), -1)
    V = (bv[:, None, None] + w[None, :, None]).clamp(0, H - 1).expand(-1, -1, len(w))
    uv = (_fine_peak(live, desc, U, V, levels) if levels
          else live._subpixel(corr.gather(1, (V * W + U).reshape(M, -1)), U, V))
    return uv, best, live._unique(best, second), corr


def _fine_peak(live, desc, U, V, L):
    """The sub-pixel peak from full-resolution maps of the finest ``L`` levels (upsampled,
    concatenated, centred, normalised): the best pixel of the window off its rim, then a
    parabola through it and its neighbours along u and along v."""
    import torch.nn.functional as F

    H, W = live.size
    ups = [F.interpolate(f, scale_factor=2 ** i, mode="bilinear", align_corners=False)[0, :, :H, :W]
           for i, f in enumerate(live.left.features[:L])]
    fmap = torch.cat(ups).double()
    fmap = fmap - fmap.mean(0, keepdim=True)
    fmap = fmap / fmap.norm(dim=0, keepdim=True)
    C = fmap.shape[0]
    d = desc[:, :C].double()
    d = (d - d.mean(-1, keepdim=True)) / (d - d.mean(-1, keepdim=True)).norm(dim=-1, keepdim=True)
    out = np.zeros((len(desc), 2))
    w = U.shape[-1]
    for m in range(len(desc)):
        c = np.einsum("cij,c->ij", fmap[:, V[m], U[m]].numpy(), d[m].numpy())
        i, j = np.unravel_index(np.argmax(c), c.shape)
        i, j = min(max(i, 1), w - 2), min(max(j, 1), w - 2)

        def vertex(a, c0, b):
            den = a - 2 * c0 + b
            return float(np.clip(0.5 * (a - b) / den, -0.5, 0.5)) if den < 0 else 0.0
        out[m] = (U[m, i, j] + vertex(c[i, j - 1], c[i, j], c[i, j + 1]),
                  V[m, i, j] + vertex(c[i - 1, j], c[i, j], c[i + 1, j]))
    return torch.from_numpy(out).float()


@pytest.mark.parametrize("crop,levels", [((0, 0), 0), ((3, 5), 0), ((0, 0), 2)],
                         ids=["240x320", "padded-237x315", "fine-peak"])
def test_exhaustive_search_finds_the_peak_of_the_full_descriptor_map(setup, crop, levels):
    """The whole-image search (coarse grid, then every pixel around its best local maxima; the
    full map is never built) finds what scoring every pixel of the full-resolution map finds: the
    same best cosine, peak pixel, sub-pixel position and ratio test for nearly every keypoint,
    also on a padded image (levels cropped like ``dense_descriptors`` crops them)."""
    network, cfg, frames = setup
    fr = frames[1]
    H, W = fr.left.shape[0] - crop[0], fr.left.shape[1] - crop[1]
    live = DenseFrame(network, fr.left[:H, :W], fr.right[:H, :W], fr.camera, cfg)
    _, _, desc = _valid(DenseFrame(network, frames[0].left, frames[0].right, frames[0].camera, cfg).keypoints)
    uv, best, unique = live._exhaustive(desc, levels)
    ref_uv, ref_best, ref_unique, corr = _full_map_search(live, desc, levels)
    assert (best <= ref_best + 1e-5).all()          # a cosine of the map, never above its maximum
    assert (unique == ref_unique).float().mean() > 0.98
    # what a match is made of (the ratio test passed): the same peak and sub-pixel position;
    # the peaks that differ are ambiguous ones (the map's best is within 0.005 of another place)
    same = (uv - ref_uv).abs().max(-1).values < 1e-3
    assert same[ref_unique].float().mean() > 0.98, same[ref_unique].float().mean()
    assert ((best - ref_best).abs() < 1e-5)[same].all()
    assert 0 < unique.sum() < len(unique)


@pytest.mark.parametrize("config", [dict(levels=3, width=8), dict(descriptor_dim=24)], ids=["3-levels", "projected"])
def test_exhaustive_search_of_other_networks(config):
    """Any number of levels, projected descriptors (which do not factor per level): the whole-image
    search finds each descriptor's best cosine of the full map. Untrained networks, descriptors of
    live pixels, an odd-sized image (padded)."""
    from sdpr_loc.geometry.stereo import StereoCamera
    from sdpr_loc.vision.network import KeypointNet, NetworkConfig

    torch.manual_seed(0)
    network = KeypointNet(NetworkConfig(cell=8, **config)).eval()
    g = torch.Generator().manual_seed(1)
    # smoothed noise: image-like (white noise through an untrained network has no coarse structure)
    left, right = (torch.nn.functional.avg_pool2d(torch.rand(1, 49, 74, generator=g), 5, 1)[0] for _ in range(2))
    cam = StereoCamera(fx=60.0, fy=60.0, cx=35.0, cy=22.0, baseline=0.2, width=70, height=45)
    live = DenseFrame(network, left, right, cam)
    with torch.inference_mode():
        uv = torch.rand(1, 40, 2, generator=g) * torch.tensor([69.0, 44.0])
        desc = network.descriptors(live.left, uv)[0]
        full = (desc @ network.dense_descriptors(live.left)[0].reshape(-1, 45 * 70)).max(-1).values.numpy()
    m = live.match(desc)
    assert (m.similarity <= full + 1e-5).all()
    found = np.abs(m.similarity - full) < 1e-5
    assert found.mean() > 0.9, found.mean()


def test_place_recognition_finds_night_frames_in_a_day_map():
    """Relocalization's candidates: for night frames of a route taught by day, a keyframe among the
    three nearest the true pose is among the three the frame's descriptors (one per keypoint
    cell) vote for (the mean-descriptor signature this replaced found one for 11 of these 16
    frames), and the frame runs no detector for them."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor, make_frames

    world = make_world(103)                      # a validation world
    teach = list(render_drive(world, "teach", "day", frames=24))
    night = list(render_drive(world, "repeat", "night", frames=16))
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map(teach, extract, every_m=1.0, frontend="network")
    make_frame, _, _ = make_frames("network", "dense", device="cpu")
    hits = []
    for f in night:
        frame = make_frame(f.left, f.right, f.camera)
        voted = kmap.candidates(frame.place_descriptors, k=3)
        hits.append(bool(set(kmap.nearest(f.pose, k=3).tolist()) & set(voted.tolist())))
        assert "keypoints" not in frame.__dict__       # the detector (cached when run) did not run
    assert len(kmap) >= 8 and sum(hits) >= 15, hits


def test_subpixel_peak_follows_the_flow_of_a_forward_motion(setup):
    """A frame zoomed 3 % about its centre (the camera moving towards what it sees): matched as a
    frame of the same drive (the finest levels' parabola) it finds most of each keypoint's radial
    flow; the full descriptor's soft-argmax (as trained, used against maps) holds the peaks back
    (coarse levels see a neighbourhood that grew), which shrank odometry by ~9 %."""
    from scipy import ndimage

    from sdpr_loc.vision.frames import Guide

    network, cfg, frames = setup
    fr = frames[0]
    uv0, _, desc = _valid(DenseFrame(network, fr.left, fr.right, fr.camera, cfg).keypoints)
    z, c = 1.03, np.array([fr.camera.cx, fr.camera.cy])
    yy, xx = np.mgrid[0:fr.left.shape[0], 0:fr.left.shape[1]].astype(np.float64)
    zoom = lambda img: ndimage.map_coordinates(img, [c[1] + (yy - c[1]) / z, c[0] + (xx - c[0]) / z],  # noqa: E731
                                               order=3, mode="nearest").astype(np.float32)
    true = c + (uv0 - c) * z
    H, W = fr.left.shape
    inside = (true[:, 0] > 8) & (true[:, 0] < W - 9) & (true[:, 1] > 8) & (true[:, 1] < H - 9)
    guide = Guide(uv=true, radius=np.full(len(true), 6), inside=inside)
    ratio = {}
    live = DenseFrame(network, zoom(fr.left), zoom(fr.right), fr.camera, cfg)
    for levels in (0, cfg.subpixel_levels):
        m = live.match(desc, guide, same_drive=levels > 0)
        ok = m.valid & (np.linalg.norm(true - uv0, axis=1) > 1.5)
        flow = true[ok] - uv0[ok]
        ratio[levels] = float(((m.uv[ok] - uv0[ok]) * flow).sum() / (flow * flow).sum())
        assert ok.sum() >= 40
    assert ratio[cfg.subpixel_levels] > 0.83, ratio          # measured 0.88 (soft-argmax: 0.72)
    assert ratio[cfg.subpixel_levels] > ratio[0] + 0.1, ratio


def test_a_hurried_frame_skips_the_exhaustive_second_search(setup):
    """A prior 2 m off with a small covariance: the guided search finds no trusted pose. Unhurried,
    the frame is searched exhaustively once more and localized; hurried (a newer frame waits, the
    nodes' real-time case) the guided failure is the answer and no pixel beyond the windows is
    searched, and the next frame, hurried too, searches everywhere straight away and is localized."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[1], frames[3]], extract, every_m=0.01, frontend="network")
    fr = frames[2]
    wrong = fr.pose.copy()
    wrong[:3, 3] += fr.pose[:3, :3] @ np.array([2.0, 0.0, 0.0])      # 2 m to the camera's right
    for hurry in (True, False):
        tracker = Tracker(TrackerConfig(mode="map"), kmap, matching=cfg)
        tracker.set_pose(wrong, None, np.diag([0.02 ** 2] * 3 + [np.radians(0.2) ** 2] * 3))
        live = DenseFrame(network, fr.left, fr.right, fr.camera, cfg)
        guides, match = [], live.match
        live.match = lambda d, guide=None, *rest, match=match: (guides.append(guide is not None), match(d, guide, *rest))[1]
        res = tracker.process(live, fr.stamp_ns, hurry=hurry)
        if hurry:
            assert all(guides) and res.search == "guided" and not res.trusted, (guides, res.reason)
            guides.clear()
            res = tracker.process(live, fr.stamp_ns + 1, hurry=True)
            assert guides and not any(guides) and res.search == "exhaustive" and res.certified, (guides, res.reason)
            assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25
        else:
            assert not all(guides) and res.search == "exhaustive" and res.certified, res.reason
            assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25


def test_a_hurried_frame_ends_its_search_at_the_first_trusted_candidate(setup):
    """Tracking with a motion prediction: unhurried, every candidate keyframe is registered (none
    has ``enough_inliers``) and the one with the most inliers wins; hurried (asked when a
    candidate is trusted: a newer frame has arrived meanwhile) the first trusted one is the
    answer, right within the tracker tests' accuracy. A relocalization (no prior) tries every
    candidate however hurried: their agreement is the only check of its pose."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[1], frames[3]], extract, every_m=0.01, frontend="network")
    live = [DenseFrame(network, f.left, f.right, f.camera, cfg) for f in frames[:3]]
    tried = {}
    for kidnapped in (False, True):
        for hurried in (False, True):
            tracker = Tracker(TrackerConfig(mode="map", enough_inliers=10_000), kmap, matching=cfg)
            if not kidnapped:     # two tracked frames: a velocity, so a motion prediction
                tracker.set_pose(frames[0].pose, frames[0].stamp_ns)
                for f, fr in zip(live[:2], frames[:2]):
                    assert tracker.process(f, fr.stamp_ns).certified
            fr, f = frames[2], DenseFrame(network, frames[2].left, frames[2].right, frames[2].camera, cfg)
            calls = []
            f.correspond = lambda kf, *a, g=f.correspond, **k: (calls.append(kf.index), g(kf, *a, **k))[1]
            res = tracker.process(f, fr.stamp_ns, hurry=lambda: hurried)
            assert res.certified and res.search == ("exhaustive" if kidnapped else "guided"), res.reason
            assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25
            tried[kidnapped, hurried] = calls
    assert [len(tried[False, h]) for h in (False, True)] == [3, 1], tried
    assert [len(tried[True, h]) for h in (False, True)] == [3, 3], tried


def test_a_pose_with_no_velocity_behind_it_must_be_reachable_from_the_last_one(setup):
    """The frame after a start or a relocalization has no motion prediction, only the last
    trusted pose: a certified pose farther from it than the platform can move in the time between
    (``max_speed_mps``, ``max_turn_dps``) fails integrity (innovation); one within reach passes."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[1], frames[3]], extract, every_m=0.01, frontend="network")
    prev, fr = frames[1], frames[2]
    dt = (fr.stamp_ns - prev.stamp_ns) * 1e-9
    verdicts = {}
    for shift in (0.0, 3.0 * 10.0 * dt + 3.0):       # the last pose right, or 3 m beyond 3 sigma of reach
        last = prev.pose.copy()
        last[:3, 3] += prev.pose[:3, :3] @ np.array([shift, 0.0, 0.0])
        tracker = Tracker(TrackerConfig(mode="map"), kmap, matching=cfg)
        tracker.set_pose(last, prev.stamp_ns)
        res = tracker.process(DenseFrame(network, fr.left, fr.right, fr.camera, cfg), fr.stamp_ns)
        assert res.certified and np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25, res.reason
        verdicts[shift] = (res.integrity, res.integrity_reasons, res.integrity_stats.get("innovation_p"))
    (ok, _, p_ok), (bad, why, p_bad) = verdicts.values()
    assert ok == "OK" and p_ok > 1e-3, verdicts
    assert bad == "FAIL" and any(r.startswith("innovation") for r in why), verdicts


def test_a_relocalization_needs_more_support_than_tracking(setup):
    """A relocalized pose (no prior at all) is vouched for by nothing but its own inliers: below
    ``min_relocalization_inliers`` it FAILs integrity and does not start tracking (the next frame
    relocalizes again); with enough it is published and tracked from."""
    import dataclasses

    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.vision.integrity import IntegrityConfig
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    network, cfg, frames = setup
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map([frames[0], frames[1], frames[3]], extract, every_m=0.01, frontend="network")
    fr = frames[2]
    for need, verdict in ((IntegrityConfig().min_relocalization_inliers, "OK"), (10_000, "FAIL")):
        icfg = dataclasses.replace(IntegrityConfig(), min_relocalization_inliers=need)
        tracker = Tracker(TrackerConfig(mode="map", integrity=icfg), kmap, matching=cfg)
        res = tracker.process(DenseFrame(network, fr.left, fr.right, fr.camera, cfg), fr.stamp_ns)
        assert res.certified and res.search == "exhaustive" and res.integrity == verdict, res.integrity_reasons
        assert np.linalg.norm(res.T[:3, 3] - fr.pose[:3, 3]) < 0.25
        assert (tracker.last_T is not None) == (verdict == "OK")
        if verdict == "FAIL":
            assert any("relocalized" in r for r in res.integrity_reasons), res.integrity_reasons


@pytest.mark.parametrize("stride,radius", [(4, 4), (4, 1), (4, 9), (2, 3), (8, 4)])
def test_grid_maximum_outside_the_peak_equals_masking_every_cell(stride, radius):
    """The whole-image search's second best on the grid: only the cells near the peak are set
    aside; the same as testing every cell, peaks at the image borders included."""
    from sdpr_loc.vision.dense import _grid_max_outside

    g = torch.Generator().manual_seed(stride * 100 + radius)
    H, W, M = 61, 83, 400
    gu, gv = torch.arange(0, W, stride), torch.arange(0, H, stride)
    coarse = torch.rand(M, len(gv), len(gu), generator=g) * 2 - 1
    u = torch.cat([torch.randint(0, W, (M - 4,), generator=g), torch.tensor([0, W - 1, 0, W - 1])])
    v = torch.cat([torch.randint(0, H, (M - 4,), generator=g), torch.tensor([0, 0, H - 1, H - 1])])
    far = ((gu[None, None, :] - u[:, None, None]).abs() > radius) | ((gv[None, :, None] - v[:, None, None]).abs() > radius)
    expected = coarse.masked_fill(~far, -2.0).reshape(M, -1).amax(-1)
    assert torch.equal(_grid_max_outside(coarse, u, v, stride, radius), expected)

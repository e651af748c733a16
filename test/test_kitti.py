"""KITTI import: tiny KITTI-layout folders written here (odometry and raw) -> rosbag2 -> read back."""
import math

import numpy as np
import pytest

from sdpr_loc.cli import main as cli
from sdpr_loc.data.bags import StereoBag
from sdpr_loc.data.import_kitti import import_kitti
from sdpr_loc.data.kitti import EARTH_RADIUS, KittiFormatError, open_kitti, oxts_poses

cv2 = pytest.importorskip("cv2")

FX, CX, CY, B = 701.25, 300.5, 95.25, 0.5371
H, W = 48, 72  # deliberately not 240x320


def _rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def _poses(n):
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        T[i, :3, :3] = _rot_y(3.0 * i)
        T[i, :3, 3] = (0.1 * i, -0.02 * i, 1.25 * i)
    return T


def _row(M):
    return " ".join(f"{v:.12e}" for v in np.asarray(M).reshape(-1))


def _images(folder, n, rng, color=False):
    folder.mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3) if color else (H, W), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i:06d}.png"), img)


def make_odometry(root, n=3, seq="04", baseline=B, poses=True, rng=None):
    rng = rng or np.random.default_rng(0)
    s = root / "sequences" / seq
    _images(s / "image_0", n, rng)
    _images(s / "image_1", n, rng)
    P0 = np.array([[FX, 0, CX, 0], [0, FX, CY, 0], [0, 0, 1, 0]])
    P1 = P0.copy()
    P1[0, 3] = -FX * baseline
    (s / "calib.txt").write_text(f"P0: {_row(P0)}\nP1: {_row(P1)}\nP2: {_row(P0)}\nP3: {_row(P1)}\n")
    (s / "times.txt").write_text("".join(f"{0.1037 * i:.6e}\n" for i in range(n)))
    if poses:
        (root / "poses").mkdir()
        (root / "poses" / f"{seq}.txt").write_text("".join(_row(T[:3]) + "\n" for T in _poses(n)))
    return s


def test_odometry_round_trip_exact(tmp_path):
    make_odometry(tmp_path / "kitti", n=4)
    out = tmp_path / "drive.mcap"
    assert cli(["import-kitti", str(tmp_path / "kitti"), "--sequence", "04", "--out", str(out), "--no-progress"]) == 0
    with StereoBag(out) as bag:
        frames = list(bag)
    assert len(frames) == 4
    src = tmp_path / "kitti" / "sequences" / "04"
    for i, fr in enumerate(frames):
        c = fr.camera
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (FX, FX, CX, CY, W, H)
        assert c.baseline == pytest.approx(B, abs=1e-12)
        assert fr.stamp_ns == round(0.1037 * i * 1e9)
        np.testing.assert_allclose(fr.pose, _poses(4)[i], atol=1e-12)
        left = cv2.imread(str(src / "image_0" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(np.rint(fr.left * 255).astype(np.uint8), left)


def test_color_cameras_and_half_scale(tmp_path):
    root = tmp_path / "kitti"
    s = make_odometry(root, n=2)
    rng = np.random.default_rng(1)
    _images(s / "image_2", 2, rng, color=True)
    _images(s / "image_3", 2, rng, color=True)
    drive = open_kitti(root, "04", cameras="color", scale=0.5)
    assert (drive.camera.width, drive.camera.height) == (W // 2, H // 2)
    assert drive.camera.fx == FX / 2 and drive.camera.cx == pytest.approx((CX + 0.5) / 2 - 0.5)
    fr = next(drive.frames())
    bgr = cv2.imread(str(s / "image_2" / "000000.png"))
    gray = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(fr.left, gray)


def test_oxts_conversion_hand_computed():
    lat, lon, alt = 49.0, 8.4, 112.0
    packets = np.array([[lat, lon, alt, 0.0, 0.0, 0.0],
                        [lat, lon + 1e-4, alt + 0.5, 0.0, 0.0, math.pi / 2]])
    T = oxts_poses(packets)
    s = math.cos(math.radians(lat))
    assert T[0, 0, 3] == pytest.approx(s * EARTH_RADIUS * math.radians(lon), rel=1e-12)
    assert T[0, 1, 3] == pytest.approx(s * EARTH_RADIUS * math.log(math.tan(math.radians(90 + lat) / 2)), rel=1e-12)
    assert T[1, 0, 3] - T[0, 0, 3] == pytest.approx(s * EARTH_RADIUS * math.radians(1e-4), rel=1e-9)
    assert T[1, 2, 3] == alt + 0.5
    np.testing.assert_allclose(T[1, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)  # yaw 90 deg


def make_raw(tmp_path, n=3):
    date = tmp_path / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    rng = np.random.default_rng(2)
    for cam in ("image_00", "image_01"):
        _images(drive / cam / "data", n, rng)
        (drive / cam / "timestamps.txt").write_text(
            "".join(f"2011-09-26 13:02:{25 + i:02d}.{964389445 + i:09d}\n" for i in range(n)))
    (drive / "oxts" / "data").mkdir(parents=True)
    for i in range(n):  # east by 1e-5 deg of longitude per frame, heading north-east turning
        vals = [49.0, 8.4 + 1e-5 * i, 110.0, 0.0, 0.0, 0.1 * i] + [0.0] * 24
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(" ".join(f"{v:.10f}" for v in vals) + "\n")
    P0 = np.array([[FX, 0, CX, 0], [0, FX, CY, 0], [0, 0, 1, 0]])
    P1 = P0.copy()
    P1[0, 3] = -FX * B
    (date / "calib_cam_to_cam.txt").write_text(
        f"calib_time: 09-Jan-2012 13:57:47\nR_rect_00: {_row(np.eye(3))}\n"
        f"P_rect_00: {_row(P0)}\nP_rect_01: {_row(P1)}\n")
    # velodyne axes (x fwd, y left, z up) -> camera axes (x right, y down, z fwd); imu == velo
    R = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=float)
    (date / "calib_velo_to_cam.txt").write_text(f"R: {_row(R)}\nT: 0 0 0\n")
    (date / "calib_imu_to_velo.txt").write_text(f"R: {_row(np.eye(3))}\nT: 0 0 0\n")
    return drive


def test_raw_layout_poses_and_stamps(tmp_path):
    drive = make_raw(tmp_path)
    out = tmp_path / "raw.mcap"
    import_kitti(drive, out, progress=False)
    with StereoBag(out) as bag:
        frames = list(bag)
    assert len(frames) == 3
    assert frames[1].stamp_ns - frames[0].stamp_ns == 1_000_000_001
    assert frames[0].stamp_ns % 1_000_000_000 == 964389445
    np.testing.assert_allclose(frames[0].pose, np.eye(4), atol=1e-9)
    # frame 1: moved east by s R dlon with heading yaw 0 at frame 0 -> the camera's z (forward) axis
    step = math.cos(math.radians(49.0)) * EARTH_RADIUS * math.radians(1e-5)
    np.testing.assert_allclose(frames[1].pose[:3, 3], [0, 0, step], atol=1e-6)
    # yaw 0.1 rad about the IMU's up axis = about the camera's -y axis
    a = 0.1
    np.testing.assert_allclose(frames[1].pose[:3, :3], _rot_y(-math.degrees(a)), atol=1e-9)


@pytest.mark.parametrize("damage, name", [
    (lambda s, r: (s / "calib.txt").unlink(), "calib.txt"),
    (lambda s, r: (s / "calib.txt").write_text((s / "calib.txt").read_text().replace(
        f"{-FX * B:.12e}", f"{0.0:.12e}", 1)), "calib.txt"),
    (lambda s, r: (s / "image_1" / "000002.png").unlink(), "image_1"),
    (lambda s, r: (s / "image_0" / "000001.png").write_bytes(b"\x89PNG broken"), "000001.png"),
    (lambda s, r: (r / "poses" / "04.txt").write_text(
        "\n".join((r / "poses" / "04.txt").read_text().splitlines()[:2]) + "\n"), "04.txt"),
    (lambda s, r: (s / "times.txt").write_text("0\n0.1\n"), "times.txt"),
])
def test_bad_folders_name_the_file_and_leave_nothing(tmp_path, damage, name, capsys):
    root = tmp_path / "kitti"
    seq = make_odometry(root, n=3)
    damage(seq, root)
    out = tmp_path / "out" / "drive.mcap"
    with pytest.raises(KittiFormatError, match=name.replace(".", r"\.")):
        import_kitti(root, out, sequence="04", progress=False)
    assert cli(["import-kitti", str(root), "--sequence", "04", "--out", str(out), "--no-progress"]) == 2
    assert name in capsys.readouterr().err
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary left either


def test_existing_bag_kept_on_error(tmp_path):
    root = tmp_path / "kitti"
    seq = make_odometry(root, n=2)
    out = tmp_path / "drive.mcap"
    import_kitti(root, out, sequence="04", progress=False)
    before = out.read_bytes()
    (seq / "image_0" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(KittiFormatError):
        import_kitti(root, out, sequence="04", force=True, progress=False)
    assert out.read_bytes() == before
    with pytest.raises(FileExistsError):
        import_kitti(root, out, sequence="04", progress=False)

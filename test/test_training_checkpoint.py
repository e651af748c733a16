"""Checkpoints: round trip, safe loading, clear errors, atomic writes, RNG states."""
import random

import numpy as np
import pytest
import torch

from sdpr_loc.training import checkpoint as ck
from sdpr_loc.training.checkpoint import (CheckpointError, atomic_save, load_checkpoint, load_network,
                                          load_state_checked, rng_state, save_network, set_rng_state)
from sdpr_loc.vision.network import KeypointNet, NetworkConfig
from sdpr_loc.vision.pipeline import LocalizerConfig


def _net(width=4):
    torch.manual_seed(0)
    return KeypointNet(NetworkConfig(width=width, cell=8, descriptor_dim=16))


def test_network_round_trip(tmp_path):
    net = _net()
    path = save_network(tmp_path / "m.pt", net, LocalizerConfig(max_disparity=32), {"epoch": 3, "data": "synthetic"})
    back = load_network(path)
    assert back.config == net.config and not back.training
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    raw = load_checkpoint(path)
    assert raw["localizer"]["max_disparity"] == 32 and raw["meta"] == {"epoch": 3, "data": "synthetic"}
    assert ck.load_localizer_config(path) == LocalizerConfig(max_disparity=32)


def test_loading_is_weights_only(tmp_path, monkeypatch):
    path = save_network(tmp_path / "m.pt", _net())
    seen = {}
    real = torch.load

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    load_network(path)
    assert seen.get("weights_only") is True


def test_corrupt_truncated_and_foreign_files(tmp_path):
    path = save_network(tmp_path / "m.pt", _net())
    data = path.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*trunc.pt.*truncated, corrupt"):
        load_network(trunc)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_network(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an sdpr_loc keypoint checkpoint"):
        load_network(foreign)
    nokey = tmp_path / "nokey.pt"
    torch.save({"format": ck.FORMAT, "version": 1, "config": {}}, nokey)
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['model'\]"):
        load_network(nokey)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.pt")


def test_mismatched_weights_name_the_key_and_shapes(tmp_path):
    path = save_network(tmp_path / "m.pt", _net(width=4))
    state = load_checkpoint(path)["model"]
    with pytest.raises(CheckpointError, match=r"key 'enc.0.0.weight': checkpoint shape \(4, 1, 3, 3\) vs model \(8, 1, 3, 3\)"):
        load_state_checked(_net(width=8), state)
    del state["score.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \['score.bias'\].*unexpected keys \['extra.weight'\]"):
        load_state_checked(_net(width=4), state)


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(2)}, path)

    def dying_save(obj, f, *a, **kw):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]          # no temp file left behind


def test_rng_state_round_trip_through_a_safe_load(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    atomic_save({"rng": rng_state()}, tmp_path / "r.pt")
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_configs_must_be_plain(tmp_path):
    with pytest.raises(ValueError, match="int/float/str/bool"):
        save_network(tmp_path / "m.pt", _net(), extra={"bad": [1, 2]})

"""Data: stereo drives in rosbag2 files, synthetic stereo worlds, and training pairs.

* :mod:`.bags` -- :class:`StereoBag` (read, streaming), :func:`write_stereo_bag`.
* :mod:`.messages` -- standard ROS messages <-> numpy (bags and nodes); :mod:`.errors` -- BagError family.
* :mod:`.synth` -- :func:`make_world`, :func:`render_drive` (teach/repeat, day/dusk/night).
* :mod:`.room` -- :class:`StereoRoom`: a textured box that renders in milliseconds (tests).
* :mod:`.dataset` -- :class:`PairDataset` (teach/repeat), :class:`OdometryDataset`.

Names are imported lazily, so ``import sdpr_loc.data`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "StereoFrame": "bags", "StereoTopics": "bags", "StereoBag": "bags", "BagIndex": "bags",
    "write_stereo_bag": "bags", "bag_checksum": "bags",
    "camera_from_infos": "messages", "decode_image": "messages", "encode_image": "messages",
    "BagError": "errors", "UnreadableBagError": "errors", "MissingTopicError": "errors",
    "EmptyBagError": "errors", "TopicTypeError": "errors", "UnsupportedEncodingError": "errors",
    "ImageSizeMismatchError": "errors", "MissingCameraInfoError": "errors",
    "MalformedMessageError": "errors",
    "StereoRoom": "room",
    "World": "synth", "make_world": "synth", "render_drive": "synth", "drive_poses": "synth",
    "default_camera": "synth", "StereoRenderer": "synth", "CONDITIONS": "synth",
    "Condition": "synth",
    "PairDataset": "dataset", "OdometryDataset": "dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'sdpr_loc.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)

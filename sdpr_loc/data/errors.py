"""Why a bag or a stereo message cannot be used: one class per problem.

All are :class:`~sdpr_loc.errors.UserError` (``sdpr-loc`` prints one line, exit status 2) and
``ValueError`` (the nodes turn them into a diagnostic); messages name the bag, topic or field and
the fix. Raised by the bag reader and writer (:mod:`.bags`) and the message conversions
(:mod:`.messages`), which the nodes use too.
"""
from __future__ import annotations

from sdpr_loc.errors import UserError

__all__ = ["BagError", "UnreadableBagError", "MissingTopicError", "EmptyBagError", "TopicTypeError",
           "UnsupportedEncodingError", "ImageSizeMismatchError", "MissingCameraInfoError",
           "MalformedMessageError"]


class BagError(UserError, ValueError):
    """A bag, or a message in it or on a topic, cannot be used as stereo input; the message says why."""


class UnreadableBagError(BagError):
    """The path is not a readable rosbag2 (missing, not a bag, truncated or corrupt)."""


class MissingTopicError(BagError):
    """A required topic is not in the bag; the message lists the topics the bag has."""


class EmptyBagError(BagError):
    """The bag (or the topics in use) holds no messages."""


class TopicTypeError(BagError):
    """A topic exists but carries a different message type than expected."""


class UnsupportedEncodingError(BagError):
    """An image encoding other than mono8, mono16, rgb8, bgr8."""


class ImageSizeMismatchError(BagError):
    """Left and right images (or image and camera info) differ in size."""


class MissingCameraInfoError(BagError):
    """No CameraInfo for the images (topic absent, or no message before the bag ends)."""


class MalformedMessageError(BagError):
    """A message contradicts itself (image data shorter than step * height, bad matrices)."""

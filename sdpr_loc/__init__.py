"""sdpr_loc: learned stereo localization with certifiably optimal, differentiable pose estimation.

The library below ``sdpr_loc.nodes`` never imports rclpy, so it is usable and testable without ROS.
"""

__version__ = "0.1.0"

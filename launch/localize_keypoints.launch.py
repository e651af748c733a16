"""ros2 launch sdpr_loc localize_keypoints.launch.py [map:=teach.npz] [frontend:=network]

The keypoint pipeline (ORB by default): keypoint_node -> PointCloud2 -> registration_node. Thin on
purpose: the nodes and parameters come from ``sdpr_loc.nodes.bringup`` (``sdpr-loc launch keypoints``).
"""
from sdpr_loc.nodes import bringup


def generate_launch_description():
    return bringup.launch_description("keypoints")

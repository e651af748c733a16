"""ros2 launch sdpr_loc localize.launch.py [map:=teach.npz] [mode:=teach save_map:=m.npz] [use_gpu:=false]

The learned, certified localizer (localization_node: network + dense matching + certified
registration in one process).

Thin on purpose: the nodes, their executables and parameters come from
``sdpr_loc.nodes.bringup`` (the same table ``sdpr-loc launch localize`` runs without ROS launch).
"""
from sdpr_loc.nodes import bringup


def generate_launch_description():
    return bringup.launch_description("localize")

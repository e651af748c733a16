"""ros2 launch sdpr_loc localize.launch.py [map:=teach.npz] [params_file:=f.yaml] [use_gpu:=false]

Thin on purpose: the nodes, their executables and parameters come from
``sdpr_loc.nodes.bringup`` (the same table ``sdpr-loc launch localize`` runs without ROS launch).
"""
from sdpr_loc.nodes import bringup


def generate_launch_description():
    return bringup.launch_description("localize")

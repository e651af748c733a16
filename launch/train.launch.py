"""ros2 launch sdpr_loc train.launch.py teach:=day.mcap repeat:=night.mcap [base_model:=m.pt] [epochs:=5]

Thin on purpose: the nodes, their executables and parameters come from
``sdpr_loc.nodes.bringup`` (the same table ``sdpr-loc launch train`` runs without ROS launch).
"""
from sdpr_loc.nodes import bringup


def generate_launch_description():
    return bringup.launch_description("train")

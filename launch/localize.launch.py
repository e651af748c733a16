"""ros2 launch sdpr_loc localize.launch.py [map:=teach.npz] [params_file:=f.yaml] [use_gpu:=false]

Thin on purpose: the nodes, their executables and parameters come from
``sdpr_loc.nodes.bringup`` (the same table ``sdpr-loc launch localize`` runs without ROS launch).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sdpr_loc.nodes import bringup

LAUNCH = "localize"


def _nodes(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in bringup.arguments(LAUNCH)}
    return [Node(package=bringup.PACKAGE, executable=n.entry.executable, name=n.entry.name,
                 namespace=n.namespace or None, parameters=n.parameters(),
                 remappings=list(n.entry.remappings), output="screen", emulate_tty=True)
            for n in bringup.plan(LAUNCH, values)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in bringup.arguments(LAUNCH)] + [OpaqueFunction(function=_nodes)])

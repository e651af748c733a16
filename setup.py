"""ament_python package: works with colcon on a ROS 2 install and with pip (make setup)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sdpr_loc"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        ("share/" + PACKAGE + "/models", glob("models/*.pt") + glob("models/*.md")),
    ],
    package_data={PACKAGE: ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "threadpoolctl>=3.1",
        "torch>=2.1",
        "cvxpy>=1.4",
        "clarabel>=0.6",
        "scs>=3.2",
        "networkx>=3.0",
        "sympy>=1.12",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pyyaml>=6",
        "rosbags>=0.10",
        "rosbags-image[opencv-headless]>=0.10",
        "opencv-python-headless>=4.8",
        "scikit-image>=0.21",
        "tensorboard>=2.12",
        "setuptools",
    ],
    extras_require={
        "dev": ["pytest>=7", "cvxpylayers>=0.1.6", "diffcp>=1.0"],
    },
    zip_safe=True,
    maintainer="sdpr_loc developers",
    maintainer_email="dev@sdpr-loc.invalid",
    description="Certifiable, differentiable stereo localization for ROS 2",
    license="BSD-3-Clause",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "sdpr-loc = sdpr_loc.cli:main",
            "localization_node = sdpr_loc.nodes.localization_node:main",
            "keypoint_node = sdpr_loc.nodes.keypoint_node:main",
            "registration_node = sdpr_loc.nodes.registration_node:main",
            "trainer_node = sdpr_loc.nodes.trainer_node:main",
        ],
    },
)

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    # Each test process gets its own DDS domain so parallel runs do not hear each other.
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 100))

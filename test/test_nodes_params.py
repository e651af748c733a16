"""Node parameters: one spec per yaml default, bad values rejected with a reason, params files load."""
import pytest
import yaml

from sdpr_loc.nodes.params import SPECS, TRAIN_FILE, Spec, config_path, load_defaults


def test_every_parameter_has_one_default_and_a_description():
    for node, specs in SPECS.items():
        defaults = load_defaults(node)
        names = [s.name for s in specs]
        assert len(names) == len(set(names)), node
        assert set(names) == set(defaults), f"{node}: specs and config/localize.yaml disagree"
        for s in specs:
            assert len(s.description) > 10, s.name
            assert s.check(defaults[s.name]) == "", f"{node}.{s.name} default is illegal"
    # the trainer's hyper-parameters live in the training config, not twice
    train = load_defaults("trainer_node", config_path(TRAIN_FILE))
    assert not set(train) & {s.name for s in SPECS["trainer_node"]}


def test_spec_checks():
    s = Spec("x", "a number", range=(1, 10))
    assert s.check(5) == "" and "[1, 10]" in s.check(11) and s.check(True) != "" and s.check("3") != ""
    c = Spec("m", "a mode", choices=("a", "b"))
    assert c.check("a") == "" and "one of" in c.check("z")


def test_load_defaults_merges_wildcard_section(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"a": 1, "b": 2}},
                                 "keypoint_node": {"ros__parameters": {"b": 3}}}))
    assert load_defaults("keypoint_node", f) == {"a": 1, "b": 3}


pytest.importorskip("rclpy")


@pytest.fixture
def ros():
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


@pytest.mark.ros
@pytest.mark.parametrize("node_cls,name,value,reason", [
    ("keypoint", "frontend", "sift", "one of"),
    ("keypoint", "max_keypoints", 3, "out of range|must be"),
    ("keypoint", "sigma_px", -1.0, "out of range|must be"),
    ("registration", "mode", "slam", "one of"),
    ("registration", "min_matches", 0, "out of range|must be"),
    ("registration", "map_candidates", 0, "out of range|must be"),
])
def test_bad_values_are_rejected_at_start(ros, node_cls, name, value, reason):
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.keypoint_node import KeypointNode
    from sdpr_loc.nodes.registration_node import RegistrationNode

    cls = {"keypoint": KeypointNode, "registration": RegistrationNode}[node_cls]
    with pytest.raises(InvalidParameterValueException, match=reason):
        cls(parameter_overrides=[Parameter(name, value=value)])


@pytest.mark.ros
def test_wrong_type_and_missing_map_are_rejected(ros):
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.registration_node import RegistrationNode

    with pytest.raises(InvalidParameterTypeException):
        RegistrationNode(parameter_overrides=[Parameter("min_inliers", value="ten")])
    # a missing map fails configure (lifecycle): the node stays alive, unconfigured, and says why
    from rclpy.lifecycle import TransitionCallbackReturn

    for params, reason in (([Parameter("mode", value="map")], "map_path"),
                           ([Parameter("mode", value="map"), Parameter("map_path", value="/nonexistent/map.npz")],
                            "does not exist")):
        node = RegistrationNode(parameter_overrides=[*params, Parameter("autostart", value=False)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.lifecycle_state == "unconfigured" and reason in node.config_error
            level, message, _ = node.summary()
            assert level == 2 and reason in message
        finally:
            node.close()
            node.destroy_node()


@pytest.mark.ros
def test_runtime_changes_are_validated(ros):
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.registration_node import RegistrationNode

    node = RegistrationNode()
    try:
        r = node.set_parameters([Parameter("min_inliers", value=50)])[0]   # checked before configure too
        assert not r.successful and "min_inliers" in r.reason
        node.trigger_configure()
        ok = node.set_parameters([Parameter("min_inliers", value=11),
                                  Parameter("publish_uncertified", value=True)])
        assert all(r.successful for r in ok)
        assert node.tracker.config.min_inliers == 11 and node.publish_uncertified
        r = node.set_parameters([Parameter("min_inliers", value=50)])[0]   # more than min_matches (20)
        assert not r.successful and "min_inliers" in r.reason
        assert node.tracker.config.min_inliers == 11
        r = node.set_parameters([Parameter("mode", value="map")])[0]       # read-only: shapes the node
        assert not r.successful
        r = node.set_parameters([Parameter("keyframe_angle", value=400.0)])[0]
        assert not r.successful
    finally:
        node.close()
        node.destroy_node()


@pytest.mark.ros
def test_params_file_and_cli_overrides_load(tmp_path):
    import rclpy

    from sdpr_loc.nodes.keypoint_node import KeypointNode

    f = tmp_path / "robot.yaml"
    f.write_text(yaml.safe_dump({"keypoint_node": {"ros__parameters": {"max_keypoints": 300, "sigma_px": 0.8}}}))
    rclpy.init(args=["x", "--ros-args", "--params-file", str(f), "-p", "publish_debug_image:=true"])
    try:
        node = KeypointNode()
        assert node.get_parameter("max_keypoints").value == 300
        assert node.get_parameter("sigma_px").value == 0.8
        assert node.get_parameter("publish_debug_image").value is True
        assert node.get_parameter("frontend").value == load_defaults("keypoint_node")["frontend"]
        desc = node.describe_parameter("max_keypoints")
        assert desc.description and desc.integer_range[0].from_value == 16 and desc.read_only
        node.close()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_torch_threads_limits_torch_and_numpy_blas():
    """A node's ``torch_threads`` bounds numpy's BLAS too: with its default threads it took the
    core of the node's other stage."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from sdpr_loc.nodes.runtime import cpu_threads

    before = torch.get_num_threads()
    with threadpool_limits():                 # restores numpy's BLAS threads on exit
        try:
            cpu_threads(1)
            assert torch.get_num_threads() == 1
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(i["num_threads"] == 1 for i in blas), blas
        finally:
            torch.set_num_threads(before)

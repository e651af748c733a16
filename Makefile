# One command each: `make demo` runs the main job, `make test` runs the tests; both from nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ROS_WHEELS := 'ros-rclpy[fastrtps]' ros-sensor-msgs ros-geometry-msgs ros-stereo-msgs \
	ros-nav-msgs ros-std-msgs ros-std-srvs ros-diagnostic-msgs ros-visualization-msgs
STAMP := $(VENV)/.setup-done
export AMENT_PREFIX_PATH := $(abspath $(VENV)):$(AMENT_PREFIX_PATH)

.PHONY: setup test demo bench model clean

setup: $(STAMP)

$(STAMP): setup.py package.xml Makefile
	@test -x $(PY) || python3 -m venv $(if $(ROS_DISTRO),--system-site-packages,) $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	@if [ -n "$$ROS_DISTRO" ] && $(PY) -c "import rclpy" 2>/dev/null; then \
		echo "using the sourced ROS 2 $$ROS_DISTRO for rclpy"; \
	else $(PIP) install -q $(ROS_WHEELS); fi
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q test

demo: setup
	$(VENV)/bin/sdpr-loc demo

model: setup
	PATH=$(abspath $(VENV))/bin:$$PATH bash models/recipe.sh runs/model

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info

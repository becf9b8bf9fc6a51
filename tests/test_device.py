"""Device selection: CPU always works; CUDA says clearly what is missing where it cannot run."""
import os
import subprocess
import sys

import numpy as np
import pytest

import kgraph
from kgraph.runtime import session


def test_cpu_device_trains_and_is_the_default():
    assert kgraph.config.set_device("cpu") == "cpu"
    assert session.providers() == ["CPUExecutionProvider"]


def test_cuda_request_without_cuda_names_what_is_missing():
    problem = session.cuda_problem()
    if problem is None:  # a machine with a usable GPU: the request succeeds instead
        assert kgraph.config.set_device("cuda") == "cuda"
        kgraph.config.set_device("cpu")
        return
    with pytest.raises(session.DeviceError, match="device 'cuda' is not usable: .*onnxruntime"):
        kgraph.config.set_device("cuda")
    assert session.device() == "cpu"   # a failed request changes nothing


def test_auto_tells_which_device_it_chose(capsys):
    chosen = kgraph.config.set_device("auto")
    assert chosen in ("cpu", "cuda")
    assert f"kgraph: using device {chosen}" in capsys.readouterr().err
    kgraph.config.set_device("cpu")


def test_unknown_device_and_environment_variable():
    with pytest.raises(ValueError, match="Received: device='tpu'"):
        kgraph.config.set_device("tpu")
    out = subprocess.run([sys.executable, "-c", "import kgraph; print(kgraph.config.get_device())"],
                         env={**os.environ, "KGRAPH_DEVICE": "auto"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("cpu", "cuda") and "kgraph: using device" in out.stderr


def test_threads_setting_applies_to_new_sessions():
    kgraph.config.set_num_threads(1)
    try:
        assert session.session_options().intra_op_num_threads == 1
        model = kgraph.Sequential([kgraph.Input(shape=(3,)), kgraph.layers.Dense(2)])
        assert model.predict(np.ones((2, 3), np.float32)).shape == (2, 2)
    finally:
        kgraph.config.set_num_threads(0)
    with pytest.raises(ValueError, match="non-negative"):
        kgraph.config.set_num_threads(-1)

"""The device in use is reported (logged at start; bench and run metadata use device_info)."""

import logging

import mlx.core as mx

from specdifftree.backend.mlx.device import describe, device_info, log_device


def test_device_info_names_the_device_and_mlx_version(caplog):
    info = device_info()
    assert info["device"] == ("gpu" if mx.default_device().type == mx.DeviceType.gpu else "cpu")
    assert info["backend"] in ("cpu", "metal", "cuda")
    assert info["mlx"] == mx.__version__
    with caplog.at_level(logging.INFO, logger="specdifftree.backend.mlx.device"):
        assert log_device() == info
    assert f"device: {info['device']}" in caplog.text and f"MLX {mx.__version__}" in caplog.text
    assert describe({"device": "gpu", "backend": "cuda", "name": "NVIDIA H200", "mlx": "0.32.4"}) \
        == "device: gpu (cuda, NVIDIA H200), MLX 0.32.4"

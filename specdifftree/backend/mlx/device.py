"""Which device MLX computes on: logged at start and written into each run's metadata."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def device_info() -> dict:
    """``{"device": "gpu"|"cpu", "backend": "metal"|"cuda"|"cpu", "name": ..., "mlx": version}``.

    ``device`` is MLX's default device (where the model runs); ``backend`` says which GPU
    backend this MLX build has (Apple Metal or NVIDIA CUDA), ``cpu`` when it has none; ``name``
    is the device's name as MLX reports it (``mx.device_info()``), e.g. the GPU model.
    """
    import mlx.core as mx

    dev = mx.default_device()
    kind = "gpu" if dev.type == mx.DeviceType.gpu else "cpu"
    backend = "cpu"
    try:
        if mx.metal.is_available():
            backend = "metal"
        elif hasattr(mx, "cuda") and mx.cuda.is_available():
            backend = "cuda"
    except Exception:  # noqa: BLE001 - a build without the probe has no GPU backend we can name
        pass
    name = ""
    try:
        info = mx.device_info()
        name = str(info.get("device_name") or info.get("architecture") or "")
    except Exception:  # noqa: BLE001 - older MLX: no device_info
        pass
    return {"device": kind, "backend": backend, "name": name, "mlx": mx.__version__}


def describe(info: dict | None = None) -> str:
    """One log line: ``device: gpu (cuda, NVIDIA H100 80GB HBM3), MLX 0.32.4``."""
    d = info or device_info()
    extra = ", ".join(x for x in (d["backend"] if d["backend"] != d["device"] else "", d["name"]) if x)
    return f"device: {d['device']}" + (f" ({extra})" if extra else "") + f", MLX {d['mlx']}"


def log_device() -> dict:
    """Log the device in use (``device: gpu (cuda, NVIDIA H200), MLX 0.32.4``); returns it."""
    info = device_info()
    log.info(describe(info))
    return info

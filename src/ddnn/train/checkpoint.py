"""Run directories: the whole model, one file per section, and the resolved config.

Layout of ``RUN_DIR``::

    checkpoint.pt        full state + resolved config (loadable without the command line)
    config.yaml          the resolved config, human-readable
    sections/<name>.pt   one file per section (device_0 …, local, edge_0 …, edge_exit, cloud),
                         each with the model config so it can be built and served alone
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ddnn.config import ModelConfig, RunConfig, from_dict, to_dict
from ddnn.models.ddnn import DDNN, upper_input_shape
from ddnn.models.sections import CloudSection, DeviceSection, EdgeSection, LocalAggregatorSection

FORMAT = "ddnn-run/1"
CHECKPOINT = "checkpoint.pt"


def model_version(model: nn.Module) -> int:
    """A 32-bit fingerprint of the weights, stamped on every frame so nodes reject other models."""
    crc = 0
    for name, tensor in sorted(model.state_dict().items()):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(tensor.detach().cpu().contiguous().numpy().tobytes(), crc)
    return crc & 0xFFFFFFFF


def section_modules(model: DDNN) -> dict[str, nn.Module]:
    """Every servable section by name."""
    sections: dict[str, nn.Module] = {
        f"device_{i}": model.device(i) for i in range(model.config.num_devices)
    }
    if model.local is not None:
        sections["local"] = model.local
    for e, edge in enumerate(model.edges):
        sections[f"edge_{e}"] = edge
    if model.edge_exit is not None:
        sections["edge_exit"] = model.edge_exit
    if model.cloud is not None:
        sections["cloud"] = model.cloud
    return sections


def save_run(
    run_dir: str | Path, model: DDNN, config: RunConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write the checkpoint, per-section files and ``config.yaml`` into ``run_dir``."""
    out = Path(run_dir)
    (out / "sections").mkdir(parents=True, exist_ok=True)
    version = model_version(model)
    resolved = to_dict(config)
    torch.save(
        {
            "format": FORMAT,
            "config": resolved,
            "model_version": version,
            "state_dict": model.state_dict(),
            "extra": extra or {},
        },
        out / CHECKPOINT,
    )
    for name, module in section_modules(model).items():
        torch.save(
            {
                "format": FORMAT,
                "section": name,
                "model_config": resolved["model"],
                "model_version": version,
                "state_dict": module.state_dict(),
            },
            out / "sections" / f"{name}.pt",
        )
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    return out


def _read(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(
            f"{what} {str(path)!r} not found; is this a run directory made by `ddnn train`?"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ValueError(
            f"{what} {str(path)!r} is corrupt or not a ddnn checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{what} {str(path)!r} is not a {FORMAT} checkpoint")
    return payload


def load_run(run_dir: str | Path) -> tuple[DDNN, RunConfig, dict[str, Any]]:
    """Rebuild the trained model and its config from a run directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run directory {str(path)!r} does not exist")
    payload = _read(path / CHECKPOINT, "checkpoint")
    config = from_dict(RunConfig, payload["config"])
    model = DDNN(config.model)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint in {str(path)!r} does not match its config: {exc}") from None
    model.eval()
    return model, config, payload


def run_model_version(run_dir: str | Path) -> int:
    """The model version stamped on a run's checkpoint (changes whenever the run is retrained)."""
    payload = _read(Path(run_dir) / CHECKPOINT, "checkpoint")
    return int(payload["model_version"])


def load_section(run_dir: str | Path, name: str) -> tuple[nn.Module, ModelConfig, int]:
    """Build one section alone from its file: returns (module in eval mode, model config, version)."""
    payload = _read(Path(run_dir) / "sections" / f"{name}.pt", f"section {name!r}")
    mc = from_dict(ModelConfig, payload["model_config"])
    module = build_section(mc, name)
    module.load_state_dict(payload["state_dict"])
    module.eval()
    return module, mc, int(payload["model_version"])


def build_section(mc: ModelConfig, name: str) -> nn.Module:
    """An untrained section ``name`` of the hierarchy ``mc``, without building the rest."""
    kind, _, index = name.partition("_")
    if kind == "device":
        k = int(index) if index.isdigit() else -1
        if not 0 <= k < mc.num_devices:
            raise ValueError(
                f"unknown section {name!r}; devices are device_0..device_{mc.num_devices - 1}"
            )
        return DeviceSection(mc.device_shapes[k], mc.num_classes, mc.device)
    upper_in = upper_input_shape(mc)
    if name == "local":
        return LocalAggregatorSection(mc.local_aggregation, mc.num_devices, mc.num_classes)
    if name == "edge_exit":
        return LocalAggregatorSection(mc.local_aggregation, len(mc.edge.groups), mc.num_classes)
    if kind == "edge":
        group = mc.edge.groups[int(index)]
        return EdgeSection(len(group), upper_in, mc.num_classes, mc.edge, mc.cloud.enabled)
    if kind == "cloud":
        if mc.edge.groups:
            edge = EdgeSection(len(mc.edge.groups[0]), upper_in, mc.num_classes, mc.edge, True)
            return CloudSection(
                len(mc.edge.groups), edge.feature_shape, mc.num_classes, mc.cloud, False
            )
        return CloudSection(mc.num_devices, upper_in, mc.num_classes, mc.cloud, False)
    raise ValueError(
        f"unknown section {name!r}; accepted: device_K, local, edge_K, edge_exit, cloud"
    )

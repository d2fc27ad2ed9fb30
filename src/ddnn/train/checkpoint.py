"""Run directories: the whole model, one file per section, the resolved config, a manifest.

Layout of ``RUN_DIR``::

    checkpoint.pt        full state + resolved config (loadable without the command line)
    config.yaml          the resolved config, human-readable
    sections/<name>.pt   one file per section (device_0 …, local, edge_0 …, edge_exit, cloud),
                         each with the model config so it can be built and served alone
    manifest.json        format, model version, and sha256 + size of every file above, so that a
                         damaged file or a section copied from another run is caught before serving

torch is imported inside the functions that need it: checking a run against its manifest takes
hashlib only, and a device node on the C engine must not load torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ddnn.config import ModelConfig, RunConfig, from_dict, saved_run_config, to_dict

if TYPE_CHECKING:
    from torch import nn

    from ddnn.models.ddnn import DDNN

log = logging.getLogger(__name__)

FORMAT = "ddnn-run/1"
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"


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
    """Write the checkpoint, per-section files, ``config.yaml`` and ``manifest.json`` (last)."""
    import torch

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
    written = [CHECKPOINT, CONFIG]
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
        written.append(f"sections/{name}.pt")
    (out / CONFIG).write_text(yaml.safe_dump(resolved, sort_keys=False))
    manifest = {
        "format": FORMAT,
        "model_version": version,
        "files": {name: _digest(out / name) for name in written},
    }
    if extra and "class_names" in extra:  # nodes name their answers without loading weights
        manifest["class_names"] = list(extra["class_names"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _digest(path: Path) -> dict[str, Any]:
    """sha256 and size of a file, read in 1 MiB chunks."""
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "size": size}


def _read_manifest(path: Path, where: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """(model version, {relative path: {"sha256", "size"}}) of a manifest, checked."""
    try:
        doc = json.loads(path.read_text())
        version, files = doc["model_version"], doc["files"]
        ok = doc.get("format") == FORMAT and isinstance(version, int) and isinstance(files, dict)
        ok = ok and all(
            isinstance(f, dict)
            and isinstance(f.get("sha256"), str)
            and isinstance(f.get("size"), int)
            for f in files.values()
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{where}: {MANIFEST} is damaged or not a {FORMAT} manifest; retrain or restore the run"
        )
    return version, files


def verify_run(run_dir: str | Path, required: Collection[str] | None = None) -> int:
    """Check that a run directory's files are the ones ``save_run`` wrote; returns its model version.

    ``required``: the files the caller needs (e.g. one device's section, or what a rollout
    bundle holds); they must be there, and the manifest's other files must match where present.
    ``None``: every file of the manifest must be there.

    With ``manifest.json``, every file it lists must be there with its recorded size and sha256.
    The hashes pin each section file to the one ``save_run`` stamped with the run's model version,
    so this needs hashlib only, not torch (hashing a run of a few MB takes milliseconds). A run
    from before manifests is checked by loading the checkpoint and every section and comparing
    their stamped model versions; a warning says the manifest is missing.

    Raises:
        ValueError: naming the first file that is missing, damaged or from another run.
    """
    run = Path(run_dir)
    where = f"run directory {str(run)!r}"
    path = run / MANIFEST
    if not path.is_file():
        log.warning(
            "%s has no %s (saved before manifests): checking section model versions only",
            where,
            MANIFEST,
        )
        return _verify_model_versions(run, where)
    version, files = _read_manifest(path, where)
    for name in sorted(set(required or ()) - set(files)):
        raise ValueError(f"{where}: {name} is not in the manifest")
    for name, expected in files.items():
        if required is not None and name not in required and not (run / name).exists():
            continue
        if not (run / name).is_file():
            raise ValueError(
                f"{where}: {name} is in the manifest but missing; retrain or restore it"
            )
        actual = _digest(run / name)
        if actual["size"] != expected["size"]:
            reason = f"{actual['size']} bytes where it says {expected['size']}"
        elif actual["sha256"] != expected["sha256"]:
            reason = "sha256 differs"
        else:
            continue
        raise ValueError(
            f"{where}: {name} does not match the manifest ({reason}): copied from another run or "
            "damaged; retrain or restore it"
        )
    return version


def _verify_model_versions(run: Path, where: str) -> int:
    """A run without a manifest: every section must carry the checkpoint's model version."""
    version = run_model_version(run)
    for path in sorted((run / "sections").glob("*.pt")):
        stamped = _read(path, f"section {path.stem!r}").get("model_version")
        if stamped != version:
            raise ValueError(
                f"{where}: sections/{path.name} has model version {stamped!r}, the run's is "
                f"{version}: copied from another run; retrain or restore it"
            )
    return version


def _read(path: Path, what: str) -> dict[str, Any]:
    import torch

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


def run_class_names(run_dir: str | Path, num_classes: int) -> list[str]:
    """The class names a run was trained with (``class_K`` where the run does not record them).

    Read from ``manifest.json``; runs saved before it held them are read from the checkpoint.
    """
    names = None
    try:
        names = json.loads((Path(run_dir) / MANIFEST).read_text()).get("class_names")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        pass
    if names is None:
        names = _read(Path(run_dir) / CHECKPOINT, "checkpoint").get("extra", {}).get("class_names")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [f"class_{k}" for k in range(num_classes)]


def load_run(run_dir: str | Path) -> tuple[DDNN, RunConfig, dict[str, Any]]:
    """Rebuild the trained model and its config from a run directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run directory {str(path)!r} does not exist")
    from ddnn.models.ddnn import DDNN

    if (path / MANIFEST).is_file():  # runs older than manifests are checked when served
        verify_run(path)
    payload = _read(path / CHECKPOINT, "checkpoint")
    config = saved_run_config(payload["config"])
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
    from ddnn.models.ddnn import upper_input_shape
    from ddnn.models.sections import (
        CloudSection,
        DeviceSection,
        EdgeSection,
        LocalAggregatorSection,
    )

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

"""Typed run configuration: frozen dataclasses with the paper's defaults, YAML / key=value overrides.

Unknown keys are errors that list the accepted ones; the resolved config is saved next to every run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

# The paper's threshold sweep (Table 2), and the splits thresholds may be calibrated on.
DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CALIBRATION_SPLITS = ("validation", "train")


# A section's weight precision: one bool for all its layers, or one per layer (blocks, then head).
Precision = bool | tuple[bool, ...]


def layer_flags(binary: Precision, num_layers: int) -> tuple[bool, ...]:
    """One precision flag per layer from ``binary``: one bool for all, or already one per layer.

    The length of a per-layer tuple is checked by ``ddnn.models.validate``; here it is trusted.
    """
    return (binary,) * num_layers if isinstance(binary, bool) else tuple(binary)


@dataclass(frozen=True)
class DeviceConfig:
    """End-device section: feature blocks (pool stride 2) and a class-score head.

    ``filters=()`` means raw offloading (configuration a): the device sends its input, no local exit.
    """

    filters: tuple[int, ...] = (4,)
    binary: Precision = True  # all layers, or one per feature block + the exit head
    share_weights: bool = False
    # A BatchNorm on the device's raw input (per feature / channel; 2 floats each on the device).
    normalize_input: bool = False
    # In training, a device dropped from a sample (train.device_dropout) skips it instead of
    # running on a zeroed input, so its BatchNorm statistics come from the samples where it is
    # present, as evaluation's do (ddnn.models.ddnn.DDNN._run_present_devices).
    skip_absent: bool = False

    def layer_binary(self) -> tuple[bool, ...]:
        """Precision of each layer: the feature blocks, then the exit head (none if raw)."""
        return layer_flags(self.binary, len(self.filters) + 1 if self.filters else 0)


@dataclass(frozen=True)
class EdgeConfig:
    """Edge tier: one edge per group of device indices; ``groups=()`` means no edge."""

    groups: tuple[tuple[int, ...], ...] = ()
    filters: tuple[int, ...] = (16,)
    pool_stride: int = 1
    aggregation: str = "cc"
    binary: Precision = True  # all layers, or one per feature block + the exit head

    def layer_binary(self) -> tuple[bool, ...]:
        """Precision of each layer: the feature blocks, then the exit head."""
        return layer_flags(self.binary, len(self.filters) + 1)


@dataclass(frozen=True)
class CloudConfig:
    """Cloud section: fuses what reaches it, feature blocks (pool stride 1), the final exit."""

    enabled: bool = True
    filters: tuple[int, ...] = (16, 16)
    pool_stride: int = 1
    aggregation: str = "cc"
    binary: Precision = True  # all layers, or one per feature block + the exit head

    def layer_binary(self) -> tuple[bool, ...]:
        """Precision of each layer: the feature blocks, then the exit head."""
        return layer_flags(self.binary, len(self.filters) + 1)


@dataclass(frozen=True)
class WireConfig:
    """How devices' class scores travel (``ddnn.wire``): ``float32`` (the paper's 4 B per class),
    ``float16`` (2 B) or ``int8`` (1 B: quantized log-probabilities, 1/16 nat steps). The same
    encoding is applied in-process (``model.infer``, ``ddnn evaluate``) and on the wire."""

    scores: str = "float32"


@dataclass(frozen=True)
class ModelConfig:
    """The whole hierarchy; defaults are the paper's threshold model (6 devices, ConvP(4), MP-CC)."""

    num_devices: int = 6
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 3
    # Per-device input shapes when devices differ (a camera beside an accelerometer); then inputs
    # are packed rows and ``input_shape`` is (P,), the longest flattened input. () = all equal.
    device_input_shapes: tuple[tuple[int, ...], ...] = ()
    local_aggregation: str = "mp"
    device: DeviceConfig = field(default_factory=DeviceConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    wire: WireConfig = field(default_factory=WireConfig)

    @property
    def device_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every device's own input shape."""
        return self.device_input_shapes or (self.input_shape,) * self.num_devices


@dataclass(frozen=True)
class TrainConfig:
    """Joint training (SPEC §4): Adam with the paper's defaults; batch_size 0 = full batch.

    Two measured departures from the paper's recipe (docs/configuration.md, "Why the default
    recipe departs from the paper's"): minibatches of 64 instead of the full batch, and device
    dropout for robustness to a failed device (with probability 0.3 a sample loses one device).
    """

    epochs: int = 100
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 64
    device_weight: float = 1.0
    local_weight: float = 1.0
    edge_weight: float = 1.0
    cloud_weight: float = 1.0
    device_dropout: float = 0.3
    # single: with probability device_dropout one uniformly chosen device is absent (the failure
    # the missing-device goal tests); independent: each device absent with that probability
    device_dropout_mode: str = "single"
    seed: int = 0
    threads: int = 0
    accelerator: str = "cpu"  # cpu | cuda | auto (cuda when a GPU is visible)
    precision: str = "32"  # 32 | bf16 | 16 (automatic mixed precision; 16 needs CUDA)
    save_every: int = 10  # epochs between resumable checkpoints in RUN_DIR (0: only on Ctrl-C)
    # constant: lr throughout (the paper's Adam); cosine: each epoch's lr follows half a cosine
    # from lr down towards 0 over the epochs (ddnn.train.trainer.epoch_lr)
    lr_schedule: str = "constant"


@dataclass(frozen=True)
class DataConfig:
    """Which data set and how much of it."""

    name: str = "synthetic-mvmc"
    path: str = ""
    num_train: int = 0  # 0 = the data set's own size (synthetic-mvmc: 680, Fashion-MNIST: 60 000)
    num_test: int = 0  # 0 = the data set's own size (synthetic-mvmc: 171, Fashion-MNIST: 10 000)
    seed: int = 0
    devices: tuple[int, ...] = ()  # keep only these devices / cameras (empty = all)
    test_fraction: float = 0.2  # for files without a split: seeded 80/20 (MVMC: 680/171)
    # Share of the training split held out (seeded) as a validation split for threshold
    # calibration; training never sees it. 0 = no validation split.
    validation_fraction: float = 0.0
    # false: read the npz / folder data from disk on demand (memory-mapped arrays, files read
    # lazily) instead of loading it all; batches stream through a DataLoader (docs/data.md).
    in_memory: bool = True
    workers: int = 0  # DataLoader worker processes when streaming; 0 = read in the main process


@dataclass(frozen=True)
class EvalConfig:
    """Exit thresholds used by default at evaluation: T for the local and the edge exit."""

    local_threshold: float = 0.8
    edge_threshold: float = 0.8


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # dotted keys the user set (YAML, flags, key=value), e.g. "model.num_classes": what the data
    # may fill in (classes, devices, shapes) is never silently replaced when given. Not saved.
    given: frozenset[str] = field(default=frozenset(), compare=False, metadata={"internal": True})


def is_internal(f: dataclasses.Field[Any]) -> bool:
    """Fields that are bookkeeping, not configuration (never saved, not config keys)."""
    return bool(f.metadata.get("internal"))


def leaf_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted paths of a nested dict's leaves (``{"model": {"a": 1}}`` -> ``{"model.a"}``)."""
    out = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= leaf_keys(value, f"{path}.")
        else:
            out.add(path)
    return out


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A plain (YAML/JSON-ready) dict of a config dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not is_internal(f)
            }
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(config)  # type: ignore[no-any-return]


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise a clear error."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=where)  # type: ignore[arg-type]
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"config {where}: expected {len(args)} values, got {value!r}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(annotation), where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"config {where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"config {where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"config {where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"config {where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"config {where}: expected a number, got {value!r}") from None
    if annotation is str:
        return str(value)
    return value


def _coerce_union(value: Any, arms: tuple[Any, ...], where: str) -> Any:
    """The first arm of a union (in declared order) that accepts ``value``, or a clear error."""
    if value is None and type(None) in arms:
        return None
    errors = []
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _coerce(value, arm, where)
        except ValueError as exc:
            errors.append(str(exc).removeprefix(f"config {where}: "))
    if arms == typing.get_args(Precision):
        raise ValueError(
            f"config {where}: expected true/false (every layer) or a list of true/false, one per "
            f"layer (the feature blocks, then the exit head); got {value!r}"
        )
    raise ValueError(f"config {where}: {'; or '.join(errors)}")


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from a (partial) dict; missing keys keep defaults, unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields if not is_internal(f)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise KeyError(
                f"unknown config key {where!r}; accepted under {prefix or 'the top level'}: "
                f"{', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


# What a config saved before ``train.device_dropout_mode`` existed trained with.
DROPOUT_MODE_BEFORE_MODES = "independent"


def saved_run_config(values: dict[str, Any]) -> RunConfig:
    """A run's saved config as that run trained.

    Configs saved before ``train.device_dropout_mode`` existed trained with independent dropout,
    the only kind then; read with today's default they would resume or be described as
    single-device dropout.
    """
    train = values.get("train")
    if isinstance(train, dict) and "device_dropout_mode" not in train:
        values = {**values, "train": {**train, "device_dropout_mode": DROPOUT_MODE_BEFORE_MODES}}
    return from_dict(RunConfig, values)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"model.device.filters=[4,4]"`` -> ``{"model": {"device": {"filters": [4, 4]}}}``.

    The value is parsed as YAML, so numbers, booleans and lists work.
    """
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not of the form key=value (e.g. train.epochs=20)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice (``yaml.safe_load`` would keep the last silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r}", problem_mark=again)
        self.key, self.first_line, self.line = key, first.line + 1, again.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises ``DuplicateKeyError`` on a mapping key given twice."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if first is not key_node.start_mark:
            raise DuplicateKeyError(key, first, key_node.start_mark)
    data: dict[Any, Any] = {}
    yield data  # the same two steps as SafeLoader, so anchors to this mapping still work
    data.update(loader.construct_mapping(node))


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,  # type: ignore[arg-type]
)


def parse_yaml(text: str, what: str) -> Any:
    """YAML ``text`` -> Python values; bad YAML is a one-line ``ValueError`` naming ``what``.

    A key given twice in a mapping is an error too, where ``yaml.safe_load`` keeps the last.
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        raise ValueError(
            f"{what}: key {exc.key!r} is given twice (lines {exc.first_line} and {exc.line}); "
            "give each key once"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ValueError(f"{what} is not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:  # e.g. bytes that are not text
        raise ValueError(f"{what} is not valid YAML: {' '.join(str(exc).split())}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    values = parse_yaml(p.read_text(), f"config file {str(p)!r}") or {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping at the top level")
    return values


def resolve_config(
    base: RunConfig | None = None,
    yaml_path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults ← YAML file ← ``extra`` (CLI flags) ← key=value overrides, validated."""
    values = to_dict(base or RunConfig())
    given = set(base.given) if base else set()
    if yaml_path:
        loaded = load_yaml(yaml_path)
        values = merge(values, loaded)
        given |= leaf_keys(loaded)
    if extra:
        values = merge(values, extra)
        given |= leaf_keys(extra)
    for text in overrides:
        update = parse_override(text)
        values = merge(values, update)
        given |= leaf_keys(update)
    return dataclasses.replace(from_dict(RunConfig, values), given=frozenset(given))

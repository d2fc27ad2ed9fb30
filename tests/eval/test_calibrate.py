"""Threshold calibration: the grid agrees with hand-computed cases and with staged inference,
targets pick what they promise, the frontier is a frontier, and the CLI round-trips."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddnn.cli import main
from ddnn.config import CloudConfig, DeviceConfig, ModelConfig, WireConfig
from ddnn.data.dataset import MultiDeviceDataset, pack_device_inputs
from ddnn.data.registry import load_dataset
from ddnn.eval.calibrate import (
    DEFAULT_GRID,
    ByteCosts,
    CalibrationTarget,
    calibrate,
    choose,
    drop_upper_bound,
    evaluate_grid,
    load_calibration,
    save_calibration,
)
from ddnn.models.ddnn import DDNN
from ddnn.train.checkpoint import load_run, run_model_version, save_run
from ddnn.wire import formula_bytes_per_device

TINY = ["data.num_train=120", "data.num_test=60", "data.validation_fraction=0.25"]
EDGE = "model.edge.groups=[[0,1,2],[3,4,5]]"


def _eta(p):
    """Normalized entropy in float64, written out independently of the library."""
    p = np.asarray(p, dtype=np.float64)
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def _logits(probs):
    return torch.log(torch.tensor(probs, dtype=torch.float32))


# Case A: local + cloud, 5 samples, 3 classes. Local is right on s0 and s1 only; cloud on s1..s4.
LOCAL_P = [
    [0.98, 0.01, 0.01],  # s0 η ≈ 0.10, label 0: local right
    [0.8, 0.1, 0.1],  # s1 η ≈ 0.58, label 0: local right
    [0.1, 0.7, 0.2],  # s2 η ≈ 0.73, label 2: local wrong
    [0.4, 0.35, 0.25],  # s3 η ≈ 0.98, label 1: local wrong
    [0.2, 0.5, 0.3],  # s4 η ≈ 0.94, label 0: local wrong
]
LABELS = torch.tensor([0, 0, 2, 1, 0])
CLOUD_P = [
    [0.1, 0.8, 0.1],  # s0: cloud wrong
    [0.9, 0.05, 0.05],
    [0.1, 0.1, 0.8],
    [0.1, 0.8, 0.1],
    [0.8, 0.1, 0.1],
]
# Two devices with different feature maps: 128 and 64 bytes bit-packed; 12 B of scores each.
COSTS = ByteCosts(score_bytes=12, feature_bytes=(128, 64), edge_bytes=None)


def case_a():
    logits = {"local": _logits(LOCAL_P), "cloud": _logits(CLOUD_P)}
    return evaluate_grid(logits, LABELS, COSTS)


def test_hand_built_grid_without_edge():
    etas = [_eta(p) for p in LOCAL_P]
    assert min(abs(e - t) for e in etas for t in DEFAULT_GRID) > 1e-4  # no float near-ties
    grid = case_a()
    assert grid.shape == (101, 1) and grid.edge_thresholds is None
    assert grid.last_exit_correct == 4
    # (T, local exits, correct): s0 alone exits below 0.58, s1 joins, then s2, s4, s3.
    for t, local, correct in [
        (0.0, 0, 4),
        (0.5, 1, 5),
        (0.65, 2, 5),
        (0.8, 3, 4),
        (0.95, 4, 3),
        (0.99, 5, 2),
        (1.0, 5, 2),
    ]:
        p = grid.point(round(100 * t), 0)
        assert p.local_threshold == t
        assert p.local_exit_fraction == local / 5 and p.cloud_exit_fraction == (5 - local) / 5
        assert p.overall_accuracy == correct / 5
        # SPEC §6 per device, averaged over the two devices' feature sizes.
        expected = np.mean([formula_bytes_per_device(3, local / 5, 8 * b) for b in (128, 64)])
        assert p.bytes_per_device == pytest.approx(expected)
        assert p.edge_to_cloud_bytes is None and p.edge_exit_fraction is None
    assert grid.point(0, 0).bytes_per_device == 12 + 96


def test_hand_built_targets():
    grid = case_a()
    # Cloud-only is 4/5. No drop: the most local exits keeping 4/5 is 3 (s0, s1, s2 exit).
    p = grid.point(*choose(grid, CalibrationTarget(max_accuracy_drop=0)))
    assert (p.local_exit_fraction, p.overall_accuracy) == (0.6, 0.8)
    assert _eta(LOCAL_P[2]) < p.local_threshold < _eta(LOCAL_P[4])
    assert p.local_threshold == 0.73  # the lowest T that gives this outcome
    # 20 points: 3/5 is allowed (exactly at the bound), so 4 local exits.
    p = grid.point(*choose(grid, CalibrationTarget(max_accuracy_drop=20)))
    assert (p.local_exit_fraction, p.overall_accuracy) == (0.8, 0.6)
    p = grid.point(*choose(grid, CalibrationTarget(max_accuracy_drop=100)))
    assert p.local_exit_fraction == 1.0
    # Bytes: 12 B is everything local (2/5 right); 70 B allows 3 samples up: 5/5 with 2 local.
    p = grid.point(*choose(grid, CalibrationTarget(max_bytes=12)))
    assert (p.local_exit_fraction, p.overall_accuracy, p.bytes_per_device) == (1.0, 0.4, 12.0)
    p = grid.point(*choose(grid, CalibrationTarget(max_bytes=70)))
    assert (p.local_exit_fraction, p.overall_accuracy) == (0.4, 1.0)
    assert p.bytes_per_device == pytest.approx(12 + 3 / 5 * 96)
    # 69 B allows only 2 samples up: the best is 4/5 with 3 local exits.
    p = grid.point(*choose(grid, CalibrationTarget(max_bytes=69)))
    assert (p.local_exit_fraction, p.overall_accuracy) == (0.6, 0.8)


def test_hand_built_confidence_bound():
    grid = case_a()
    # Local exits by η: s0 (local right, cloud wrong), s1 (both right), s2, s4, s3 (local wrong,
    # cloud right). Per sample d = [answer right] - [cloud right]; the bound on the samples lost is
    # -Σd + z·√n·std(d) with the sample standard deviation, over all 5 samples.
    d_by_locals = {0: [0] * 5, 1: [1, 0, 0, 0, 0], 2: [1, 0, 0, 0, 0], 3: [1, 0, -1, 0, 0]}
    d_by_locals |= {4: [1, 0, -1, 0, -1], 5: [1, 0, -1, -1, -1]}
    z = 1.5
    bound = drop_upper_bound(grid, z)
    for t, locals_ in [(0.0, 0), (0.5, 1), (0.65, 2), (0.8, 3), (0.95, 4), (1.0, 5)]:
        d = np.array(d_by_locals[locals_], dtype=float)
        expected = -d.sum() + z * math.sqrt(5) * d.std(ddof=1)
        assert bound[round(100 * t), 0] == pytest.approx(expected)
        assert grid.discordant[round(100 * t), 0] == np.abs(d).sum()
    # By hand: -1 + z·1 with s0 out (s1 adds nothing), 0 + z·√2.5 with s2 too, 1 + z·√3.5, 2 + 2z.
    assert bound[50, 0] == pytest.approx(-1 + z) and bound[65, 0] == pytest.approx(-1 + z)
    assert bound[80, 0] == pytest.approx(z * math.sqrt(2.5))
    assert bound[95, 0] == pytest.approx(1 + z * math.sqrt(3.5))
    assert bound[100, 0] == pytest.approx(2 + 2 * z) and bound[0, 0] == 0


@pytest.mark.parametrize(
    "drop, level, local_exits, correct",
    [
        (0, None, 3, 4),  # no bound: s0, s1, s2 exit, 4/5 right as cloud-only
        (0, 0.8, 2, 5),  # z = 0.84: -1 + 0.84 <= 0 with s0, s1; s2 would make it 0 + 0.84·1.58
        (0, 0.9, 0, 4),  # z = 1.28: -1 + 1.28 > 0, so only T below every local η passes
        (20, 0.8, 2, 5),  # 1 sample allowed: 0 + 0.84·1.58 = 1.33 > 1 still stops s2
        (40, 0.8, 3, 4),  # 2 samples: 1.33 passes; s4 would give 1 + 0.84·1.87 = 2.57
    ],
)
def test_confidence_level_costs_local_exits_by_hand(drop, level, local_exits, correct):
    grid = case_a()
    target = CalibrationTarget(max_accuracy_drop=drop, confidence_level=level)
    p = grid.point(*choose(grid, target))
    assert (p.local_exit_fraction, p.overall_accuracy) == (local_exits / 5, correct / 5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), with_edge=st.booleans())
def test_higher_confidence_never_gives_more_local_exits(seed, n, with_edge):
    grid = _random_grid(seed, n, with_edge)
    for drop in (0, 2, 10):
        plain = CalibrationTarget(max_accuracy_drop=drop)
        local = [grid.point(*choose(grid, plain)).local_exit_fraction]
        for level in (0.5, 0.7, 0.9, 0.99):
            target = CalibrationTarget(max_accuracy_drop=drop, confidence_level=level)
            i, j = choose(grid, target)
            local.append(grid.point(i, j).local_exit_fraction)
            assert drop_upper_bound(grid, target.z)[i, j] <= drop / 100 * n + 1e-9
        assert local[0] == local[1]  # 50 %: z = 0, the plain target
        assert local == sorted(local, reverse=True)


def test_unreachable_target_names_the_best_achievable():
    logits = {"local": _logits(LOCAL_P), "cloud": _logits(CLOUD_P)}
    grid = evaluate_grid(logits, LABELS, COSTS, grid=(0.95, 1.0))
    with pytest.raises(ValueError, match=r"best achievable is 60\.0% \(20\.0 points below\)"):
        choose(grid, CalibrationTarget(max_accuracy_drop=10))
    grid = evaluate_grid(logits, LABELS, COSTS, grid=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"fewest achievable is 88\.8 bytes"):
        choose(grid, CalibrationTarget(max_bytes=50))


# Case B: local + edge + cloud, 4 samples.
B_LOCAL = [[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.4, 0.35, 0.25], [0.2, 0.5, 0.3]]
B_EDGE = [[0.1, 0.8, 0.1], [0.05, 0.9, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]]
B_CLOUD = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]]
B_LABELS = torch.tensor([0, 1, 1, 2])
B_COSTS = ByteCosts(score_bytes=12, feature_bytes=(32, 32, 32), edge_bytes=100)


def test_hand_built_grid_with_edge_matches_a_brute_force_loop():
    logits = {"local": _logits(B_LOCAL), "edge": _logits(B_EDGE), "cloud": _logits(B_CLOUD)}
    grid = evaluate_grid(logits, B_LABELS, B_COSTS)
    assert grid.shape == (101, 101)
    eta = {k: [_eta(p) for p in v] for k, v in (("l", B_LOCAL), ("e", B_EDGE))}
    assert min(abs(e - t) for v in eta.values() for e in v for t in DEFAULT_GRID) > 1e-4
    right = {
        "l": [int(np.argmax(p) == y) for p, y in zip(B_LOCAL, B_LABELS.tolist(), strict=True)],
        "e": [int(np.argmax(p) == y) for p, y in zip(B_EDGE, B_LABELS.tolist(), strict=True)],
        "c": [int(np.argmax(p) == y) for p, y in zip(B_CLOUD, B_LABELS.tolist(), strict=True)],
    }
    for i, tl in enumerate(DEFAULT_GRID):
        for j, te in enumerate(DEFAULT_GRID):
            where = [
                "l" if tl == 1 or eta["l"][n] < tl else "e" if te == 1 or eta["e"][n] < te else "c"
                for n in range(4)
            ]
            p = grid.point(i, j)
            assert p.thresholds == {"local": tl, "edge": te}
            assert p.overall_accuracy == sum(right[w][n] for n, w in enumerate(where)) / 4
            assert p.local_exit_fraction == where.count("l") / 4
            assert p.edge_exit_fraction == where.count("e") / 4
            assert p.cloud_exit_fraction == where.count("c") / 4
            up = 4 - where.count("l")
            assert p.bytes_per_device == pytest.approx(12 + up / 4 * 32)
            assert p.edge_to_cloud_bytes == where.count("c") * 100 / 4
            differ = sum(right[w][n] != right["c"][n] for n, w in enumerate(where))
            assert grid.discordant[i, j] == differ
    # At T = 0.5 / 0.5: s0 exits locally (η 0.10), s1 at the edge (η 0.36), s2 and s3 go on
    # (local η 0.98 / 0.94, edge η 0.98 / 0.58).
    p = grid.point(50, 50)
    assert (p.local_exit_fraction, p.edge_exit_fraction, p.cloud_exit_fraction) == (
        0.25,
        0.25,
        0.5,
    )


def _random_grid(seed, n, with_edge):
    g = torch.Generator().manual_seed(seed)
    names = ["local", "edge", "cloud"] if with_edge else ["local", "cloud"]
    logits = {k: 3 * torch.randn(n, 3, generator=g) for k in names}
    labels = torch.randint(0, 3, (n,), generator=g)
    costs = ByteCosts(12, (128, 64, 32), 50 if with_edge else None)
    return evaluate_grid(logits, labels, costs, DEFAULT_GRID[:: 5 if with_edge else 1])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), with_edge=st.booleans())
def test_frontier_is_a_pareto_frontier(seed, n, with_edge):
    grid = _random_grid(seed, n, with_edge)
    front = grid.frontier()
    pts = np.array([(grid.device_bytes[i, j], grid.correct[i, j]) for i, j in front])
    assert (np.diff(pts[:, 0]) > 0).all() and (np.diff(pts[:, 1]) > 0).all()  # no one dominates
    every = np.stack([grid.device_bytes.ravel(), grid.correct.ravel()], axis=1)
    covered = (pts[None, :, 0] <= every[:, None, 0]) & (pts[None, :, 1] >= every[:, None, 1])
    assert covered.any(axis=1).all()  # every grid point is dominated by or equals a frontier point


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), with_edge=st.booleans())
def test_targets_are_monotone(seed, n, with_edge):
    grid = _random_grid(seed, n, with_edge)
    cloud_only = grid.last_exit_correct / n
    local = []
    for drop in (0, 0.5, 1, 2, 5, 10, 25, 50, 100):
        p = grid.point(*choose(grid, CalibrationTarget(max_accuracy_drop=drop)))
        assert p.overall_accuracy >= cloud_only - drop / 100 - 1e-12
        local.append(p.local_exit_fraction)
    assert local == sorted(local)  # a larger drop never gives fewer local exits
    acc = []
    for budget in (12, 20, 40, 60, 80, 100, 120):
        p = grid.point(*choose(grid, CalibrationTarget(max_bytes=budget)))
        assert p.bytes_per_device <= budget
        acc.append(p.overall_accuracy)
    assert acc == sorted(acc)  # a bigger budget never gives lower accuracy


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one calibration target"),
        ({"max_accuracy_drop": 1, "max_bytes": 40}, "exactly one calibration target"),
        ({"max_accuracy_drop": -0.5}, "max_accuracy_drop must be a number of accuracy points >= 0"),
        ({"max_accuracy_drop": math.nan}, "got nan"),
        ({"max_bytes": math.nan}, "max_bytes must be a number of bytes >= 0"),
        ({"max_bytes": 40, "confidence_level": 0.9}, "give it with an accuracy-drop target"),
        ({"max_accuracy_drop": 1, "confidence_level": 1.0}, r"in \[0.5, 1\) \(e.g. 0.95\)"),
        ({"max_accuracy_drop": 1, "confidence_level": 0.2}, "got 0.2"),
        ({"max_accuracy_drop": 1, "confidence_level": math.nan}, "got nan"),
    ],
)
def test_invalid_targets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationTarget(**kwargs)


def test_byte_budget_below_the_score_vector():
    with pytest.raises(ValueError, match="below the minimum of 12 bytes"):
        CalibrationTarget(max_bytes=11.5).check_budget(3)
    CalibrationTarget(max_bytes=12).check_budget(3)


def _random_data(config, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(n, *s, generator=g) for s in config.device_shapes]
    x, shapes = pack_device_inputs(inputs)
    labels = torch.randint(0, config.num_classes, (n,), generator=g)
    view = labels[:, None].repeat(1, config.num_devices)
    names = tuple(str(c) for c in range(config.num_classes))
    return MultiDeviceDataset(x, view, labels, names, "random", device_shapes=shapes)


def test_raw_devices_have_nothing_to_calibrate():
    config = ModelConfig(num_devices=2, input_shape=(3, 8, 8), device=DeviceConfig(filters=()))
    with pytest.raises(ValueError, match="no local exit"):
        calibrate(DDNN(config), _random_data(config), CalibrationTarget(max_accuracy_drop=1))


def test_budget_checked_against_the_models_classes():
    config = ModelConfig(num_devices=2, input_shape=(3, 8, 8), num_classes=4)
    with pytest.raises(ValueError, match="minimum of 16 bytes"):
        calibrate(DDNN(config), _random_data(config), CalibrationTarget(max_bytes=15))


def _staged(model, data, thresholds):
    """What ``model.infer`` does at ``thresholds``, counted here from its raw outputs."""
    r = model.infer(data.x, thresholds)
    n = len(data)
    frac = {name: int((r.exit_index == k).sum()) / n for k, name in enumerate(r.exit_names)}
    acc = int((r.predictions == data.labels).sum()) / n
    return acc, frac, r.bytes.per_device(), r.bytes.edge_to_cloud_per_sample()


def _check_grid_against_infer(model, data, calibration, extra_pairs):
    grid = calibration.grid
    pairs = {(p.local_threshold, p.edge_threshold) for p in calibration.frontier}
    pairs |= set(extra_pairs)
    edges = grid.edge_thresholds
    for tl, te in sorted(pairs, key=str):
        i = int(np.flatnonzero(grid.local_thresholds == tl)[0])
        j = 0 if edges is None else int(np.flatnonzero(edges == te)[0])
        p = grid.point(i, j)
        acc, frac, dev_bytes, edge_bytes = _staged(model, data, p.thresholds)
        assert p.overall_accuracy == acc
        assert p.local_exit_fraction == frac["local"]
        assert p.edge_exit_fraction == frac.get("edge")
        assert p.cloud_exit_fraction == frac.get("cloud")
        assert p.bytes_per_device == dev_bytes  # exactly: same bytes as the codec measures
        if p.edge_to_cloud_bytes is not None:
            assert p.edge_to_cloud_bytes == edge_bytes
    return len(pairs)


PACKED = ModelConfig(
    num_devices=3,
    input_shape=(3 * 8 * 8,),
    device_input_shapes=((3, 8, 8), (2, 12), (5,)),
    num_classes=4,
    cloud=CloudConfig(filters=(6,)),
)


def test_packed_devices_grid_matches_staged_inference():
    config = PACKED
    torch.manual_seed(0)
    model = DDNN(config)
    data = _random_data(config, n=40)
    # ConvP(4) features: 64, 24 and 4 bits -> 8, 3 and 1 bytes on the wire.
    assert ByteCosts.of_model(model) == ByteCosts(16, (8, 3, 1), None)
    cal = calibrate(model, data, CalibrationTarget(max_bytes=18))
    assert cal.matches_grid and cal.metrics.bytes_per_device <= 18
    checked = _check_grid_against_infer(
        model, data, cal, [(t, None) for t in (0.0, 0.3, 0.6, 0.9, 1.0)]
    )
    assert checked >= 5
    locals_ = {p.local_exit_fraction for p in cal.grid.rows()}
    assert len(locals_) > 3  # the case is not degenerate


@pytest.mark.parametrize(("encoding", "score_bytes"), [("float16", 8), ("int8", 4)])
def test_byte_costs_and_grid_follow_the_score_encoding(encoding, score_bytes):
    """ByteCosts come from ddnn.wire (4 classes: 8 B float16, 4 B int8), and the grid, computed
    on the deployed path, still agrees exactly with staged inference."""
    config = replace(PACKED, wire=WireConfig(scores=encoding))
    torch.manual_seed(0)
    model = DDNN(config)
    data = _random_data(config, n=40)
    assert ByteCosts.of_model(model) == ByteCosts(score_bytes, (8, 3, 1), None)
    with pytest.raises(ValueError, match=f"minimum of {score_bytes} bytes.*{encoding}"):
        calibrate(model, data, CalibrationTarget(max_bytes=score_bytes - 0.5))
    cal = calibrate(model, data, CalibrationTarget(max_bytes=score_bytes + 6))
    assert cal.matches_grid and cal.metrics.bytes_per_device <= score_bytes + 6
    _check_grid_against_infer(model, data, cal, [(t, None) for t in (0.0, 0.3, 0.6, 0.9, 1.0)])
    # The grid's local exit is the deployed one: it fuses the scores the wire delivers.
    assert not torch.equal(model.wire_forward(data.x).local_logits, model(data.x).local_logits)


# -- trained runs through the command line ---------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for name, extra in (("plain", []), ("edge", [EDGE])):
        run = tmp_path_factory.mktemp(name)
        argv = ["train", "--out", str(run), "--epochs", "2", *TINY, "model.cloud.filters=[4]"]
        assert main([*argv, *extra]) == 0
        out[name] = run
    return out


@pytest.mark.parametrize("name", ["plain", "edge"])
def test_grid_matches_staged_inference_on_a_trained_run(runs, name):
    model, config, payload = load_run(runs[name])
    data = load_dataset(config.data).validation
    assert data is not None and len(data) == 30
    for target in (
        CalibrationTarget(max_accuracy_drop=0),
        CalibrationTarget(max_accuracy_drop=5),
        CalibrationTarget(max_bytes=40),
    ):
        cal = calibrate(model, data, target)
        assert cal.matches_grid, (cal.metrics, cal.measured)
        assert cal.model_version == payload["model_version"]
        chosen = (cal.metrics.bytes_per_device, cal.metrics.overall_accuracy)
        assert chosen in {(p.bytes_per_device, p.overall_accuracy) for p in cal.frontier}
    assert cal.grid.shape == ((101, 101) if name == "edge" else (101, 1))
    edge_ts = (0.0, 0.9, 1.0) if name == "edge" else (None,)
    extra = [(tl, te) for tl in (0.0, 0.8, 0.95, 1.0) for te in edge_ts]
    _check_grid_against_infer(model, data, cal, extra)
    # T = 0 everywhere sends every sample to the cloud: the cloud-only accuracy.
    assert cal.grid.point(0, 0).overall_accuracy == cal.cloud_only_accuracy


def test_cli_calibrate_and_evaluate_round_trip(runs, capsys):
    run = runs["plain"]
    assert main(["calibrate", str(run), "--max-drop", "1"]) == 0
    out = capsys.readouterr().out
    assert "thresholds: local T =" in out and "overall acc %" in out and "calibration.json" in out
    cal = load_calibration(run)
    assert cal.split == "validation" and cal.num_samples == 30
    assert cal.model_version == run_model_version(run)
    assert cal.target == CalibrationTarget(max_accuracy_drop=1)

    assert main(["calibrate", str(run), "--max-bytes", "40", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["target"] == {"max_accuracy_drop": None, "max_bytes": 40.0, "confidence_level": None}
    assert doc["measured"]["bytes_per_device"] <= 40
    assert json.loads((run / "calibration.json").read_text()) == doc

    assert main(["evaluate", str(run), "--calibrated", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["rows"]
    assert row["threshold"] == doc["calibration"]["thresholds"]["local"]
    assert main(["evaluate", str(run), "--calibrated"]) == 0
    assert "calibrated thresholds (local T =" in capsys.readouterr().out


def test_cli_confidence_level_round_trip(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    assert main(["calibrate", str(run), "--max-drop", "1"]) == 0
    plain = load_calibration(run)
    capsys.readouterr()
    argv = ["calibrate", str(run), "--max-drop", "1", "--confidence-level", "0.95"]
    assert main(argv) == 0
    assert "with 95% confidence on new data" in capsys.readouterr().out
    cal = load_calibration(run)
    assert cal.target == CalibrationTarget(max_accuracy_drop=1, confidence_level=0.95)
    assert cal.metrics.local_exit_fraction <= plain.metrics.local_exit_fraction
    drop = 100 * (cal.cloud_only_accuracy - cal.metrics.overall_accuracy)
    assert drop <= 1 + 1e-9  # the bound is stricter than the plain drop


def test_cli_round_trip_with_an_edge(runs, capsys):
    run = runs["edge"]
    assert main(["calibrate", str(run), "--max-bytes", "60", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["thresholds"]) == {"local", "edge"}
    assert doc["metrics"] == doc["measured"] and doc["measured"]["bytes_per_device"] <= 60
    assert main(["evaluate", str(run), "--calibrated", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert (row["threshold"], row["edge_threshold"]) == (
        doc["thresholds"]["local"],
        doc["thresholds"]["edge"],
    )
    assert main(["calibrate", str(run), "--max-drop", "0", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "edge T =" in out and "training data" in out
    assert load_calibration(run).split == "train"


def test_stale_calibration_is_rejected(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    model, config, _ = load_run(run)
    data = load_dataset(config.data).validation
    save_calibration(run, calibrate(model, data, CalibrationTarget(max_accuracy_drop=2)))
    assert load_calibration(run).thresholds  # fresh: fine
    with torch.no_grad():
        next(model.parameters()).neg_()  # "retrain": other weights, another model version
    save_run(run, model, config)
    with pytest.raises(ValueError, match="stale.*retrained"):
        load_calibration(run)
    assert main(["evaluate", str(run), "--calibrated"]) == 2
    assert "stale" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "{bare}", "--calibrated"], "no calibration in"),
        (["evaluate", "{bare}", "--calibrated", "--thresholds", "0.5"], "drop --thresholds"),
        (["calibrate", "{noval}", "--max-drop", "1"], "data.validation_fraction=0.2"),
        (["calibrate", "{noval}", "--max-drop", "1"], "--split train"),
        (["calibrate", "{bare}", "--max-drop", "-1"], "accuracy points >= 0"),
        (["calibrate", "{bare}", "--max-bytes", "8"], "minimum of 12 bytes"),
        (["calibrate", "{bare}", "--max-bytes", "8", "--max-drop", "1"], "not allowed with"),
        (["calibrate", "{bare}"], "one of the arguments --max-drop --max-bytes is required"),
        (["calibrate", "{bare}", "--max-drop", "1", "--split", "test"], "invalid choice"),
        (
            ["calibrate", "{bare}", "--max-bytes", "40", "--confidence-level", "0.9"],
            "(max_accuracy_drop, --max-drop), not a byte budget",
        ),
        (["calibrate", "{bare}", "--max-drop", "1", "--confidence-level", "95"], "[0.5, 1)"),
        (["calibrate", "{tmp}/none", "--max-drop", "1"], "does not exist"),
    ],
)
def test_cli_errors_exit_2(argv, message, runs, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(runs["plain"], bare)
    (bare / "calibration.json").unlink(missing_ok=True)
    noval = tmp_path / "noval"
    model, config, _ = load_run(runs["plain"])
    save_run(noval, model, replace(config, data=replace(config.data, validation_fraction=0.0)))
    subs = {"{bare}": str(bare), "{noval}": str(noval), "{tmp}": str(tmp_path)}
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("ddnn: error:")
    assert message in err and "Traceback" not in err

"""QoS 1 against QoS 0 at full load: the paper's model, C devices, the runtime_speed setup.

QoS 0 drops the PUBACK of every data message (one packet fewer per publish and per delivery);
on loopback with TCP nothing is lost in practice, and the devices' resend of undecided windows
and the aggregator's failure reports still hold if something is. Alternates the two settings.

Run: python benchmarks/runtime_qos.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from runtime_speed import deploy, train_paper_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddnn-qos-") as tmp:
        run = train_paper_model(Path(tmp), 6000, 60)
        for _ in range(args.repeats):
            for qos in (1, 0):
                options = {"deadline": 1.0, "thresholds": "0.8", "engine": "c", "qos": qos}
                doc = deploy(run, options, None)
                ratio = doc["wire_bytes_per_device"] / doc["bytes_per_device"]
                print(
                    f"qos {qos}: {doc['throughput_samples_per_s']:.0f} samples/s, answered "
                    f"{doc['answered']}/{doc['samples']}, degraded {doc['degraded_answers']}, "
                    f"CPU {doc['cpu_ms_per_device_sample']:.3f} ms per device-sample, wire "
                    f"{doc['wire_bytes_per_device']:.1f} B ({ratio:.2f}x payload), broker "
                    f"{doc['broker_cpu_percent']:.0f}%, busiest {doc['busiest']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

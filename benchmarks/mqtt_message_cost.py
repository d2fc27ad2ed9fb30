"""CPU that one received MQTT message costs a Python node, as the runtime receives them.

A sender process publishes small QoS 1 messages (40 B, like a one-sample score frame) at a
steady rate, the six devices' rate at 100 samples/s; the receiver answers every sixth with a
QoS 1 publish of its own (like an aggregator's answer). The receiver's CPU (user + system, every
thread) divided by the messages it received is the cost per message. Two receivers alternate:

* ``thread``: paho's network thread hands each message to the main thread through a queue, as
  ``ddnn.runtime.node.Inbox`` does (``connect_client`` starts that thread);
* ``main``: the main thread runs paho's loop itself and handles messages in the callback.

Each run is a new MQTT session (``connect_client`` keeps sessions across reconnects, so a reused
client id would first receive the previous run's messages in one fast burst), and it unsubscribes
before it leaves, so no message waits for it in the broker.

Run: python benchmarks/mqtt_message_cost.py [--messages N] [--rate R] [--repeats K]
"""

from __future__ import annotations

import argparse
import queue
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.runtime.broker import LocalBroker  # noqa: E402
from ddnn.runtime.mqtt import connect_client, parse_broker_url  # noqa: E402

RESULTS = Path(__file__).parent / "results_mqtt_message_cost.txt"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def send(url: str, messages: int, rate: float) -> None:
    client = connect_client("sender", parse_broker_url(url), lambda _m: None, [])
    t0 = time.monotonic()
    for i in range(messages):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        client.publish("t/scores", b"x" * 40, qos=1)
    time.sleep(1.0)


def receive(mode: str, url: str, messages: int, rate: float) -> float:
    """Microseconds of this process's CPU per message received (the first message excluded)."""
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    arrived = [0]

    def on_message(msg: object) -> None:
        if mode == "thread":
            inbox.put(msg)
        else:
            arrived[0] += 1

    client_id = f"receiver-{mode}-{uuid.uuid4().hex[:8]}"  # a fresh session: no backlog
    client = connect_client(client_id, parse_broker_url(url), on_message, [("t/#", 1)])
    if mode == "main":
        client.loop_stop()  # this thread runs the loop from here on
    sender = subprocess.Popen(
        [sys.executable, __file__, "--send", url, "--messages", str(messages), "--rate", str(rate)]
    )
    got, start, cpu0 = 0, 0, 0.0
    deadline = time.monotonic() + messages / rate + 30.0
    try:
        while got < messages and time.monotonic() < deadline:
            if mode == "thread":
                try:
                    inbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                new = 1
            else:
                client.loop(0.05)
                new = arrived[0] - got
            for _ in range(new):
                got += 1
                if got == 1:
                    start, cpu0 = got, cpu_seconds()
                if got % 6 == 0:
                    client.publish("r/answers", b"y" * 30, qos=1)
        used = cpu_seconds() - cpu0
    finally:
        sender.wait(timeout=60)
        client.unsubscribe("t/#")
        if mode == "main":
            client.loop(0.5)  # send the UNSUBSCRIBE
        else:
            client.loop_stop()
        client.disconnect()
    if got < messages:
        raise RuntimeError(f"{mode}: received {got} of {messages} messages")
    return 1e6 * used / (got - start)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--rate", type=float, default=600.0, help="messages per second")
    p.add_argument("--repeats", type=int, default=5, help="pairs of runs")
    p.add_argument("--send", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.send:
        send(args.send, args.messages, args.rate)
        return
    lines = [
        f"machine: {machine()}",
        f"command: python benchmarks/mqtt_message_cost.py{' '.join([''] + sys.argv[1:])}",
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"{args.messages} QoS 1 messages of 40 B at {args.rate:g}/s through a local mosquitto; "
        "the receiver publishes a QoS 1 reply to every sixth",
        "| receiver | CPU us per received message |",
        "|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results: dict[str, list[float]] = {"thread": [], "main": []}
    with LocalBroker() as broker:
        for _ in range(args.repeats):
            for mode in results:
                cost = receive(mode, broker.url, args.messages, args.rate)
                results[mode].append(cost)
                line = f"| {mode} | {cost:.0f} |"
                print(line, flush=True)
                lines.append(line)
    for mode, costs in results.items():
        costs.sort()
        lines.append(f"- {mode}: median {costs[len(costs) // 2]:.0f} us per message")
    print("\n".join(lines[-2:]))
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()

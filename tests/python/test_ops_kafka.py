"""ops/kafka's broker thread pools (num.network.threads, num.io.threads).

- The running broker (the one `ops/test` started) has pools sized to this
  machine's cores: half the cores for the network (1..3), the cores for the
  request handlers (1..8), not Kafka's own 3 and 8.
- A bad MAILFLEET_KAFKA_IO_THREADS / _NETWORK_THREADS stops `start` before
  any broker is launched, with an error naming the bad value.
"""

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("MAILFLEET_RUN_DIR") or ROOT / "run")


def properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_running_broker_has_pools_sized_to_the_cores():
    config = RUN_DIR / "kafka" / "server.properties"
    assert config.exists(), f"{config}: no broker config; is the broker up (ops/kafka start)?"
    props = properties(config)
    cores = os.cpu_count()
    assert props.get("num.network.threads") == str(min(3, max(1, cores // 2))), props
    assert props.get("num.io.threads") == str(min(8, cores)), props


@pytest.mark.parametrize(
    "var,value",
    [("MAILFLEET_KAFKA_IO_THREADS", "eight"), ("MAILFLEET_KAFKA_NETWORK_THREADS", "0")],
)
def test_a_bad_pool_size_stops_start_naming_it(tmp_path, var, value):
    env = dict(
        os.environ,
        MAILFLEET_RUN_DIR=str(tmp_path),
        MAILFLEET_KAFKA_PORT=str(free_port()),
        MAILFLEET_KAFKA_CONTROLLER_PORT=str(free_port()),
        **{var: value},
    )
    kafka = ROOT / "ops" / "kafka"
    try:
        done = subprocess.run([kafka, "start"], env=env, capture_output=True, text=True, timeout=300)
    finally:
        # A broker that started after all must not outlive the test.
        if (tmp_path / "kafka" / "kafka.pid").exists():
            subprocess.run([kafka, "stop"], env=env, capture_output=True, timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    assert f"{var}='{value}'" in done.stderr, done.stderr
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    assert not (tmp_path / "kafka" / "server.properties").exists()

"""Cross-language contract test: fastavro decodes what the Rust encoder
writes, using nothing but the .avsc files under schemas/.

The samples come from `schemas/examples/encode_samples.rs`
(MAILFLEET_SAMPLES_BIN points at the built example; otherwise cargo runs it).
"""

import glob
import io
import json
import os
import struct
import subprocess

import fastavro
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# CRC-64-AVRO, as in the Avro specification's reference implementation.
EMPTY = 0xC15D213AA4D7A795
TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
    TABLE.append(fp)


def rabin(data: bytes) -> bytes:
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return struct.pack("<Q", fp)


def load_registry():
    """fingerprint -> (path, parsed schema) for every .avsc file."""
    registry = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "schemas", "**", "*.avsc"), recursive=True)):
        with open(path) as f:
            raw = json.load(f)
        parsed = fastavro.parse_schema(raw, _write_hint=False, _force=True)
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
        registry[rabin(canonical.encode())] = (path, parsed, raw)
    return registry


def samples():
    exe = os.environ.get("MAILFLEET_SAMPLES_BIN")
    cmd = [exe] if exe else ["cargo", "run", "-q", "-p", "mailfleet-events", "--example", "encode_samples"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def decode(registry, data: bytes):
    assert data[:2] == b"\xc3\x01", "single-object marker"
    fingerprint, body = data[2:10], data[10:]
    assert fingerprint in registry, f"unknown fingerprint {fingerprint.hex()}"
    path, schema, raw = registry[fingerprint]
    buf = io.BytesIO(body)
    value = fastavro.schemaless_reader(buf, schema, None)
    assert buf.read() == b"", "no bytes left over"
    return raw, value


def normalise(value):
    """JSON from serde writes bytes as lists of ints; fastavro gives bytes."""
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if hasattr(value, "timestamp"):  # timestamp-millis arrives as datetime
        return round(value.timestamp() * 1000)
    return value


SAMPLES = samples()
REGISTRY = load_registry()


def test_every_schema_file_has_a_distinct_fingerprint():
    files = glob.glob(os.path.join(ROOT, "schemas", "**", "*.avsc"), recursive=True)
    assert len(REGISTRY) == len(files)


def test_fingerprint_matches_fastavro_own_crc64():
    for fingerprint, (_, _, raw) in REGISTRY.items():
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
        theirs = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        assert theirs in (fingerprint.hex(), fingerprint[::-1].hex())


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_fastavro_decodes_rust_bytes(sample):
    raw, value = decode(REGISTRY, bytes.fromhex(sample["hex"]))
    assert f'{raw["namespace"]}.{raw["name"]}' == sample["name"]
    assert normalise(value) == sample["value"]


def test_every_event_type_has_a_sample():
    names = {f'{raw["namespace"]}.{raw["name"]}' for (_, _, raw) in REGISTRY.values()}
    assert names == {s["name"] for s in SAMPLES}

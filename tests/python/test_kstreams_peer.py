"""The Kafka Streams peer of `bench kstreams` (benches/kstreams) reads the
repository's own .avsc files from its jar. Every schema its `Events` class
loads must exist under schemas/ and be bundled by the pom. Session 18 moved
the peer to DeliveryAttempted v2 while the pom still bundled v1, and the
peer failed at start ("... is not in the jar"). No test builds the jar, so
this checks the two files against each other.
"""

import os
import re
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(ROOT, "benches", "kstreams")
EVENTS = os.path.join(PEER, "src", "main", "java", "mailfleet", "kstreams", "Events.java")
POM = os.path.join(PEER, "pom.xml")
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def loaded_schemas(java_source: str) -> set[str]:
    """The paths passed to `load("...")`, relative to schemas/."""
    return set(re.findall(r'\bload\(\s*"([^"]+\.avsc)"\s*\)', java_source))


def bundled_schemas(pom_text: str) -> set[str]:
    """The includes of the pom's resource whose directory is schemas/."""
    root = ET.fromstring(pom_text)
    out = set()
    for res in root.iterfind(".//m:build/m:resources/m:resource", NS):
        directory = res.findtext("m:directory", default="", namespaces=NS)
        if directory.rstrip("/").endswith("/schemas"):
            out |= {i.text.strip() for i in res.iterfind("m:includes/m:include", NS)}
    return out


def test_the_parsers_find_what_they_look_for():
    java = 'static final Schema A = load("greylist/X.v2.avsc");\nload("clock/T.v1.avsc")'
    assert loaded_schemas(java) == {"greylist/X.v2.avsc", "clock/T.v1.avsc"}
    pom = """<project xmlns="http://maven.apache.org/POM/4.0.0"><build><resources>
      <resource><directory>src/main/resources</directory></resource>
      <resource><directory>${project.basedir}/../../schemas</directory><includes>
        <include>greylist/X.v1.avsc</include></includes></resource>
    </resources></build></project>"""
    assert bundled_schemas(pom) == {"greylist/X.v1.avsc"}
    # The mismatch this file exists for is seen as one.
    assert loaded_schemas(java) - bundled_schemas(pom) == {
        "greylist/X.v2.avsc",
        "clock/T.v1.avsc",
    }


def test_every_schema_the_peer_loads_exists_and_is_bundled():
    with open(EVENTS, encoding="utf-8") as f:
        loaded = loaded_schemas(f.read())
    with open(POM, encoding="utf-8") as f:
        bundled = bundled_schemas(f.read())
    assert loaded, f"no load(\"...avsc\") found in {EVENTS}"
    missing_files = sorted(p for p in loaded if not os.path.isfile(os.path.join(ROOT, "schemas", p)))
    assert not missing_files, f"{EVENTS} loads schemas that are not under schemas/: {missing_files}"
    not_bundled = sorted(loaded - bundled)
    assert not not_bundled, f"{POM} does not bundle {not_bundled}, which {EVENTS} loads"

"""What an operator installs on each host (docs/deployment.md): the systemd
units of ops/systemd and the Debian package ops/deb builds.

- Every unit passes `systemd-analyze verify` with no line naming it, and a
  planted typo or a missing binary is caught by the same check.
- Every unit runs the real binary with the packaged config as the mailfleet
  user, restarts on failure, stops within a TimeoutStopSec that covers the
  binary's own timeouts, carries the hardening, and `systemd-analyze security
  --offline` rates it 2.0 or better.
- Every long-running subcommand (`Command::is_service` in
  app/mailfleet/src/main.rs) has a unit and every unit runs one; every
  consumer of pipelines/topology.toml but the counter example has an
  instance file; no two units or instances share a metrics port.
- The .deb, built from the debug binary, installs with `dpkg -i` on this
  machine; reinstall, remove and purge do what they promise, and a purge
  keeps mail it finds.

Needs root, dpkg and systemd-analyze: without them the tests fail, never
skip. They refuse (fail) rather than touch a machine where the package, the
mailfleet user or its folders already exist, and they purge what they
installed even when a check fails.
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "ops" / "systemd"
INSTANCES = UNITS / "instances"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache/mailfleet/target")
BINARY = TARGET_DIR / "debug" / "mailfleet"
CONFIG = "/etc/mailfleet/mailfleet.toml"
EXEC_PREFIX = f"/usr/bin/mailfleet --config {CONFIG} "
# Instances checked as the template's examples: one consumer, one group.
EXAMPLE_INSTANCES = ["greylist", "mail"]
PACKAGE_DIRS = ["/var/lib/mailfleet", "/etc/mailfleet", "/usr/share/mailfleet", "/usr/share/doc/mailfleet"]
HARDENING = {
    "User": "mailfleet",
    "Group": "mailfleet",
    "StateDirectory": "mailfleet",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "LimitNOFILE": "65536",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "2",
}


def run(cmd, **kw):
    kw.setdefault("timeout", 600)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def need_tools(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: these tests need dpkg and systemd (systemd-analyze)", pytrace=False)


def unit_files():
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".target"))


def parse_unit(text):
    """{section: {key: [values]}}; repeated keys keep every value."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path):
    return parse_unit(path.read_text())["Service"]


def parse_env(path):
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def seconds(span):
    m = re.fullmatch(r"(\d+)(s|min)?", span)
    assert m, f"TimeoutStopSec={span}: not a span this test reads"
    return int(m[1]) * (60 if m[2] == "min" else 1)


def service_commands():
    """The subcommands `Command::is_service` names, in kebab case."""
    main = (ROOT / "app" / "mailfleet" / "src" / "main.rs").read_text()
    body = re.search(r"fn is_service\(&self\) -> bool \{(.*?)\n    \}", main, re.S)
    assert body, "Command::is_service not found in app/mailfleet/src/main.rs"
    names = re.findall(r"Command::(\w+)", body[1])
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", n).lower() for n in names}


def consumers():
    topology = tomllib.loads((ROOT / "pipelines" / "topology.toml").read_text())
    return set(topology["consumers"]) - {"counter"}


def example_config():
    return tomllib.loads((ROOT / "ops" / "mailfleet.toml").read_text())


def instance_paths(unit_dir):
    """What to verify in unit_dir: each unit, the template as its examples."""
    paths = []
    for p in unit_files():
        if p.name == "mailfleet@.service":
            paths += [unit_dir / f"mailfleet@{i}.service" for i in EXAMPLE_INSTANCES]
        else:
            paths.append(unit_dir / p.name)
    return paths


def verify(paths, cwd=None):
    """(exit code, the lines of `systemd-analyze verify` that name mailfleet)."""
    r = run(["systemd-analyze", "verify", *paths], cwd=cwd, timeout=120)
    return r.returncode, [l for l in (r.stdout + r.stderr).splitlines() if "mailfleet" in l]


def copy_units(dest, binary):
    """The units in dest with ExecStart pointing at binary (verify needs it to exist)."""
    for p in unit_files():
        (dest / p.name).write_text(p.read_text().replace("/usr/bin/mailfleet ", f"{binary} "))


@pytest.fixture(scope="module")
def binary():
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"no debug binary at {BINARY}: build it (cargo build --workspace --all-targets)", pytrace=False)
    return BINARY


# --- the units ----------------------------------------------------------------


def test_every_unit_verifies_clean_and_a_planted_typo_does_not(tmp_path, binary):
    need_tools("systemd-analyze")
    good = tmp_path / "good"
    good.mkdir()
    copy_units(good, binary)
    rc, lines = verify(instance_paths(good))
    assert rc == 0 and not lines, f"systemd-analyze verify (exit {rc}):\n" + "\n".join(lines)

    bad = tmp_path / "bad"
    bad.mkdir()
    copy_units(bad, binary)
    lmtp = bad / "mailfleet-lmtp.service"
    lmtp.write_text(lmtp.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    _, lines = verify([lmtp])
    assert any("mailfleet-lmtp.service" in l and "NoNewPrivilege" in l for l in lines), lines
    copy_units(bad, bad / "no-such-mailfleet")
    rc, lines = verify([bad / "mailfleet-policy.service"])
    assert rc != 0 and any("no-such-mailfleet" in l for l in lines), (rc, lines)


def test_every_unit_runs_the_binary_hardened_and_stops_in_time():
    cfg = example_config()
    # The longest the binary itself may take to stop, per unit (the unit
    # files' comments say why): TimeoutStopSec must cover it.
    close_s = cfg["runtime"]["close_timeout_ms"] / 1000
    needs = {
        "mailfleet@.service": close_s + 30,
        "mailfleet-lmtp.service": max(cfg["lmtp"]["ack_timeout_ms"] / 1000, cfg["lmtp"]["drain_timeout_s"]),
        "mailfleet-policy.service": cfg["policy"]["drain_timeout_s"],
        "mailfleet-api.service": cfg["api"]["ack_timeout_ms"] / 1000,
        "mailfleet-scheduler.service": close_s,
        "mailfleet-submission.service": max(
            cfg["consumers"]["scanner"]["clamd"]["scan_timeout_ms"] / 1000,
            cfg["submission"]["drain_timeout_s"],
        ),
    }
    problems = []
    for path in unit_files():
        if path.suffix == ".target":
            continue
        sections = parse_unit(path.read_text())
        svc = sections["Service"]
        for key, want in HARDENING.items():
            if svc.get(key) != [want]:
                problems.append(f"{path.name}: {key}={svc.get(key)}, want {want!r}")
        (exec_start,) = svc["ExecStart"]
        if not exec_start.startswith(EXEC_PREFIX):
            problems.append(f"{path.name}: ExecStart={exec_start} does not start with {EXEC_PREFIX!r}")
        stop = seconds(svc["TimeoutStopSec"][0])
        if stop <= needs.get(path.name, 0):
            problems.append(f"{path.name}: TimeoutStopSec={stop}s, the binary may take {needs[path.name]}s")
        if sections["Unit"].get("PartOf") != ["mailfleet.target"]:
            problems.append(f"{path.name}: not PartOf=mailfleet.target")
        if sections["Install"].get("WantedBy") != ["mailfleet.target"]:
            problems.append(f"{path.name}: not WantedBy=mailfleet.target")
    assert not problems, "\n".join(problems)


def test_security_review_rates_every_unit_ok(tmp_path, binary):
    need_tools("systemd-analyze")
    copy_units(tmp_path, binary)
    for path in instance_paths(tmp_path):
        if path.suffix == ".target":
            continue
        r = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", path])
        level = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
        assert r.returncode == 0 and level, f"{path.name}:\n{r.stdout[-2000:]}{r.stderr}"
        assert float(level[1]) <= 2.0, f"{path.name}: exposure {level[1]}"


def test_every_service_command_has_a_unit_and_every_unit_runs_one():
    commands = service_commands()
    assert {"run", "policy", "lmtp", "api", "scheduler", "postfix-map"} <= commands, commands
    ran = {}
    for path in unit_files():
        if path.suffix == ".service":
            (exec_start,) = service(path)["ExecStart"]
            ran[path.name] = exec_start.removeprefix(EXEC_PREFIX).split()[0]
    assert ran.pop("mailfleet@.service") == "run"
    for name, command in ran.items():
        assert name == f"mailfleet-{command}.service", f"{name} runs `mailfleet {command}`"
    assert set(ran.values()) | {"run"} == commands, f"units {sorted(ran.values())}, services {sorted(commands)}"


def test_instances_name_known_consumers_and_every_process_has_its_own_metrics_port():
    known = consumers()
    files = {p.stem: parse_env(p) for p in INSTANCES.glob("*.env")}
    assert known <= set(files), f"consumers without an instance file: {sorted(known - set(files))}"
    ports = {}
    for name, env in files.items():
        words = env["MAILFLEET_CONSUMERS"].split()
        assert words == ["--all"] or set(words) <= known, f"{name}.env: {words}"
        if name in known:
            assert words == [name], f"{name}.env runs {words}"
        ports.setdefault(env["MAILFLEET_METRICS__LISTEN"], []).append(f"instances/{name}.env")
    for path in unit_files():
        if path.suffix == ".service" and path.name != "mailfleet@.service":
            for value in service(path).get("Environment", []):
                key, _, listen = value.partition("=")
                if key == "MAILFLEET_METRICS__LISTEN":
                    ports.setdefault(listen, []).append(path.name)
    shared = {p: who for p, who in ports.items() if len(who) > 1}
    assert not shared, f"metrics ports shared: {shared}"
    assert all(p.startswith("127.0.0.1:") for p in ports), sorted(ports)
    assert len(ports) == len(files) + len(unit_files()) - 2  # the template and the target have none


# --- the package --------------------------------------------------------------


def package_status():
    """dpkg's status of the package; "not-installed" also once purged."""
    r = run(["dpkg-query", "-W", "-f=${Status}", "mailfleet"])
    status = r.stdout.strip()
    return status if r.returncode == 0 and not status.endswith("not-installed") else "not-installed"


def exists_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def exists_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def refuse_if_in_use():
    if os.geteuid() != 0:
        pytest.fail("needs root: the package is installed with dpkg -i", pytrace=False)
    need_tools("dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "runuser")
    status = package_status()
    if status != "not-installed":
        pytest.fail(f"mailfleet is on this machine ({status}): not replacing it; purge it first", pytrace=False)
    taken = [p for p in PACKAGE_DIRS if os.path.exists(p)]
    taken += [f"user {n}" for n in ["mailfleet"] if exists_user(n)]
    taken += [f"group {n}" for n in ["mailfleet"] if exists_group(n)]
    if taken:
        pytest.fail(f"already on this machine: {', '.join(taken)}; the purge would remove them", pytrace=False)


def dpkg(*args):
    r = run(["dpkg", *args])
    assert r.returncode == 0, f"dpkg {' '.join(args)} exit {r.returncode}:\n{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def clean_up():
    """Purge, forced if need be, then what a failed purge left (none of it was there before)."""
    if package_status() != "not-installed":
        if run(["dpkg", "--purge", "mailfleet"]).returncode != 0:
            run(["dpkg", "--purge", "--force-all", "mailfleet"])
    for path in PACKAGE_DIRS:
        shutil.rmtree(path, ignore_errors=True)
    if exists_user("mailfleet"):
        run(["userdel", "mailfleet"])
    if exists_group("mailfleet"):
        run(["groupdel", "mailfleet"])


@pytest.fixture(scope="module")
def deb(tmp_path_factory, binary):
    refuse_if_in_use()
    out = tmp_path_factory.mktemp("deb")
    r = run(["nice", "-n", "19", ROOT / "ops" / "deb", "--binary", binary, "--out", out, "--compress", "gzip"])
    assert r.returncode == 0, f"ops/deb exit {r.returncode}:\n{r.stdout}{r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


def mode_owner(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


def as_mailfleet(*cmd, env=None):
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}
    return subprocess.run(["runuser", "-u", "mailfleet", "--", *cmd], capture_output=True, text=True,
                          env=clean, cwd="/", stdin=subprocess.DEVNULL, timeout=60)


def check_installed(version):
    assert package_status() == "install ok installed"
    said = run(["/usr/bin/mailfleet", "--version"]).stdout.strip()
    assert said == f"mailfleet {version}", said
    user = pwd.getpwnam("mailfleet")
    assert user.pw_uid < 1000 and user.pw_dir == "/var/lib/mailfleet", user
    assert user.pw_shell.endswith("nologin"), user.pw_shell
    assert grp.getgrgid(user.pw_gid).gr_name == "mailfleet"
    for path in unit_files():
        assert Path("/lib/systemd/system", path.name).read_text() == path.read_text(), path.name
    for path in INSTANCES.glob("*.env"):
        assert Path("/etc/mailfleet/instances", path.name).read_text() == path.read_text(), path.name
    schemas = {p.relative_to(ROOT / "schemas") for p in (ROOT / "schemas").rglob("*.avsc")}
    shipped = {p.relative_to("/usr/share/mailfleet/schemas") for p in Path("/usr/share/mailfleet/schemas").rglob("*.avsc")}
    assert shipped == schemas and schemas, sorted(map(str, shipped ^ schemas))
    assert Path("/usr/share/mailfleet/topology.toml").read_text() == (ROOT / "pipelines/topology.toml").read_text()
    for doc in ["docs/deployment.md", "README.md", "copyright"]:
        assert Path("/usr/share/doc/mailfleet", doc).is_file(), doc
    for snippet in ["/usr/lib/sysusers.d/mailfleet.conf", "/usr/lib/tmpfiles.d/mailfleet.conf"]:
        assert Path(snippet).is_file(), snippet
    want = {"/var/lib/mailfleet": (0o755, "mailfleet", "mailfleet"),
            "/var/lib/mailfleet/state": (0o750, "mailfleet", "mailfleet"),
            "/var/lib/mailfleet/blobs": (0o750, "mailfleet", "mailfleet"),
            "/var/lib/mailfleet/mail": (0o750, "mailfleet", "mailfleet"),
            "/var/lib/mailfleet/quarantine": (0o700, "mailfleet", "mailfleet"),
            "/etc/mailfleet/secrets": (0o750, "root", "mailfleet"),
            "/etc/mailfleet/tls": (0o750, "root", "mailfleet")}
    for path, (mode, owner, group) in want.items():
        assert mode_owner(path) == (mode, owner, group), (path, oct(mode_owner(path)[0]), mode_owner(path)[1:])


def check_conffiles_and_config():
    listed = run(["dpkg-query", "-W", "-f=${Conffiles}", "mailfleet"]).stdout.split()
    conffiles = {w for w in listed if w.startswith("/")}
    etc = {str(p) for p in Path("/etc/mailfleet").rglob("*") if p.is_file()}
    assert conffiles == etc and CONFIG in conffiles, (sorted(conffiles), sorted(etc))
    text = Path(CONFIG).read_text()
    assert not re.search(r'"(run|ops|pipelines)/', text), "a repository path in the packaged config"
    checked = as_mailfleet("/usr/bin/mailfleet", "--config", CONFIG, "config", "check")
    assert checked.returncode == 0 and "ok" in checked.stdout, f"{checked.stdout}{checked.stderr}"
    broken = as_mailfleet("/usr/bin/mailfleet", "--config", CONFIG, "config", "check",
                          env={"MAILFLEET_RUNTIME__BATCH_MAX_EVENTS": "0"})
    assert broken.returncode == 2 and "batch_max_events" in broken.stderr, f"{broken.returncode}: {broken.stderr}"
    for folder in ["/var/lib/mailfleet/state", "/var/lib/mailfleet/blobs", "/var/lib/mailfleet/mail"]:
        assert as_mailfleet("test", "-w", folder).returncode == 0, f"mailfleet cannot write {folder}"
    assert as_mailfleet("test", "-w", "/etc/mailfleet/secrets").returncode != 0


def check_installed_units_verify():
    names = [p.name for p in instance_paths(Path("/lib/systemd/system"))]
    rc, lines = verify(names, cwd="/")
    assert rc == 0 and not lines, f"systemd-analyze verify of the installed units (exit {rc}):\n" + "\n".join(lines)


def check_purged(keep=()):
    assert package_status() == "not-installed"
    assert not Path("/usr/bin/mailfleet").exists()
    assert not list(Path("/lib/systemd/system").glob("mailfleet*"))
    left = [p for p in PACKAGE_DIRS if os.path.exists(p) and not any(k.startswith(p) for k in keep)]
    assert not left, f"left after the purge: {left}"


def test_the_deb_installs_reinstalls_removes_and_purges(deb):
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    try:
        out = dpkg("-i", deb)
        assert "warning" not in out.lower(), out
        check_installed(version)
        check_conffiles_and_config()
        check_installed_units_verify()
        uid = pwd.getpwnam("mailfleet").pw_uid

        # Reinstall: an edited conffile stays, the user keeps its id.
        with open(CONFIG, "a") as f:
            f.write("# edited by test_deploy\n")
        dpkg("-i", deb)
        assert Path(CONFIG).read_text().endswith("# edited by test_deploy\n")
        assert pwd.getpwnam("mailfleet").pw_uid == uid

        # Remove: the program goes, config, user and data stay.
        dpkg("--remove", "mailfleet")
        assert package_status() == "deinstall ok config-files"
        assert not Path("/usr/bin/mailfleet").exists()
        assert Path(CONFIG).read_text().endswith("# edited by test_deploy\n")
        assert exists_user("mailfleet") and Path("/var/lib/mailfleet/state").is_dir()

        # Purge with mail in the mail root: the mail and its owner stay.
        mailbox = Path("/var/lib/mailfleet/mail/example.test/bob/Maildir/new")
        mailbox.mkdir(parents=True)
        (mailbox / "1.M1P1.test").write_text("Subject: kept\n\nby the purge\n")
        Path("/var/lib/mailfleet/state/greylist").mkdir()
        out = dpkg("--purge", "mailfleet")
        assert "kept /var/lib/mailfleet/mail" in out, out
        assert (mailbox / "1.M1P1.test").is_file()
        assert not Path("/var/lib/mailfleet/state").exists() and not Path("/etc/mailfleet").exists()
        assert exists_user("mailfleet")
        check_purged(keep=["/var/lib/mailfleet/mail"])

        # Install again over the kept user, then purge with nothing kept.
        shutil.rmtree("/var/lib/mailfleet/mail/example.test")
        dpkg("-i", deb)
        assert pwd.getpwnam("mailfleet").pw_uid == uid
        out = dpkg("--purge", "mailfleet")
        assert "kept" not in out, out
        check_purged()
        assert not exists_user("mailfleet") and not exists_group("mailfleet")
    finally:
        clean_up()

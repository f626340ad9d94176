"""Smoke test of the private Dovecot (ops/dovecot): it serves Maildir files
written the way mailfleet's storage writer writes them, plain and compressed,
and accepts mail over LMTP.

Needs a running `ops/dovecot start` (fails, does not skip, without it) and root
(to chown the Maildir tree to vmail). Each test uses its own random domain and a
password generated at run time; only its hash is written, and all is removed after.
"""

import gzip
import imaplib
import os
import pwd
import secrets
import shutil
import smtplib
import socket
import struct
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_DIR = os.path.abspath(os.environ.get("MAILFLEET_RUN_DIR") or os.path.join(ROOT, "run"))
DDIR = os.path.join(RUN_DIR, "dovecot")
HOST = "127.0.0.1"
IMAP_PORT = int(os.environ.get("MAILFLEET_DOVECOT_IMAP_PORT", "1143"))
LMTP_PORT = int(os.environ.get("MAILFLEET_DOVECOT_LMTP_PORT", "2425"))


@pytest.fixture(scope="module")
def mail_root():
    status = subprocess.run(
        [os.path.join(ROOT, "ops", "dovecot"), "status"], capture_output=True, text=True
    )
    if status.returncode != 0:
        pytest.fail(
            "Dovecot is not running: `ops/dovecot status` said "
            f"{(status.stdout + status.stderr).strip()!r}. Start it with `ops/dovecot start`.",
            pytrace=False,
        )
    with open(os.path.join(DDIR, "mail_root")) as f:
        return f.read().strip()


class Mailbox:
    def __init__(self, mail_root):
        self.domain = f"smoke-{secrets.token_hex(6)}.test"
        self.user = "alice"
        self.address = f"{self.user}@{self.domain}"
        self.password = secrets.token_urlsafe(18)
        self.domain_dir = os.path.join(mail_root, self.domain)
        self.maildir = os.path.join(self.domain_dir, self.user, "Maildir")
        vmail = pwd.getpwnam("vmail")
        self.uid, self.gid = vmail.pw_uid, vmail.pw_gid
        self.seq = 0

    def create(self):
        # The password goes to doveadm on stdin (twice, as it asks), not in argv.
        hashed = subprocess.run(
            ["doveadm", "pw", "-s", "SHA512-CRYPT"],
            input=f"{self.password}\n{self.password}\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert hashed.startswith("{SHA512-CRYPT}$6$"), hashed
        subprocess.run([os.path.join(ROOT, "ops", "dovecot"), "adduser", self.address, hashed], check=True)
        for folder in ("", ".Spam", ".Trash"):
            for sub in ("cur", "new", "tmp"):
                self._mkdirs(os.path.join(self.maildir, folder, sub))

    def _mkdirs(self, path):
        # Every directory from the domain down belongs to vmail (Dovecot renames
        # new/ -> cur/ and writes its index files there).
        parts = os.path.relpath(path, os.path.dirname(self.domain_dir)).split(os.sep)
        d = os.path.dirname(self.domain_dir)
        for part in parts:
            d = os.path.join(d, part)
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
                os.chown(d, self.uid, self.gid)

    def deliver(self, message: bytes, stored: bytes = None, folder: str = "") -> str:
        """Write a message file as mailfleet's writer does: tmp/ then rename to new/.
        `stored` is what goes on disk (e.g. compressed); S= and W= describe `message`."""
        self.seq += 1
        now = time.time()
        vsize = len(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        name = (
            f"{int(now)}.M{int(now * 1e6) % 1000000:x}P{os.getpid()}Q{self.seq}."
            f"{socket.gethostname()},S={len(message)},W={vsize}"
        )
        box = os.path.join(self.maildir, folder)
        tmp = os.path.join(box, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(message if stored is None else stored)
        os.chown(tmp, self.uid, self.gid)
        os.chmod(tmp, 0o600)
        os.rename(tmp, os.path.join(box, "new", name))
        return name

    def imap(self):
        conn = imaplib.IMAP4(HOST, IMAP_PORT)
        conn.login(self.address, self.password)
        return conn

    def remove(self):
        shutil.rmtree(self.domain_dir, ignore_errors=True)
        for f in (self.domain, f".{self.domain}.lock"):
            try:
                os.remove(os.path.join(DDIR, "passwd", f))
            except FileNotFoundError:
                pass


@pytest.fixture
def mailbox(mail_root):
    box = Mailbox(mail_root)
    box.create()
    yield box
    box.remove()


def message(subject: str, lines: int = 50) -> bytes:
    body = b"".join(b"line %d of %s, with some repeated text text text\r\n" % (i, subject.encode()) for i in range(lines))
    return b"From: sender@example.net\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\n%s" % (subject.encode(), body)


def fetch_all(conn, folder="INBOX"):
    typ, data = conn.select(folder, readonly=True)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return {}
    typ, data = conn.fetch("1:*", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[])")
    assert typ == "OK", data
    parts = [d for d in data if isinstance(d, tuple)]
    out = {}
    for hdr, body in zip(parts[0::2], parts[1::2]):
        subject = hdr[1].decode().split(":", 1)[1].strip()
        out[subject] = body[1]
    return out


def zstd_compress(data: bytes) -> bytes:
    """zstd frame: with the zstd CLI if present, else a valid frame of raw blocks."""
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout
    frame = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", len(data))  # single segment, 8-byte size
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        frame += struct.pack("<I", last | (0 << 1) | (len(chunk) << 3))[:3] + chunk
    return frame


def test_plain_message_is_served_byte_identical(mailbox):
    msg = message("plain")
    mailbox.deliver(msg)
    conn = mailbox.imap()
    try:
        assert fetch_all(conn) == {"plain": msg}
    finally:
        conn.logout()


def test_compressed_messages_are_served_decompressed(mailbox):
    gz, zst = message("gzip", 300), message("zstd", 300)
    gz_stored, zst_stored = gzip.compress(gz), zstd_compress(zst)
    assert zst_stored[:4] == b"\x28\xb5\x2f\xfd" and len(gz_stored) < len(gz)
    mailbox.deliver(gz, stored=gz_stored)
    mailbox.deliver(zst, stored=zst_stored)
    conn = mailbox.imap()
    try:
        assert fetch_all(conn) == {"gzip": gz, "zstd": zst}
    finally:
        conn.logout()


def test_spam_folder_is_listed_and_served(mailbox):
    msg = message("spam")
    mailbox.deliver(msg, folder=".Spam")
    conn = mailbox.imap()
    try:
        typ, listing = conn.list()
        assert typ == "OK"
        names = {line.decode().rsplit(" ", 1)[1]: line.decode() for line in listing}
        assert "Spam" in names and "\\Junk" in names["Spam"], listing
        assert "Trash" in names and "INBOX" in names, listing
        assert fetch_all(conn, "Spam") == {"spam": msg}
        assert fetch_all(conn, "INBOX") == {}
    finally:
        conn.logout()


def test_lmtp_delivery_reaches_imap(mailbox):
    msg = message("via lmtp", 5)
    with smtplib.LMTP(HOST, LMTP_PORT) as lmtp:
        refused = lmtp.sendmail("sender@example.net", [mailbox.address], msg)
        assert refused == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            lmtp.sendmail("sender@example.net", [f"nobody@{mailbox.domain}"], msg)
    conn = mailbox.imap()
    try:
        got = fetch_all(conn)
        # Dovecot prepends Return-Path, Delivered-To and Received.
        assert got["via lmtp"].endswith(msg)
        assert f"Delivered-To: {mailbox.address}".encode() in got["via lmtp"]
    finally:
        conn.logout()

#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/
(files named seed-*), from realistic traffic: Postfix policy requests,
LMTP sessions as Postfix sends them, mails with exe/zip/rar attachments
and encoded names, and one Avro single-object record per schema version
under schemas/ (written by fastavro from the .avsc files alone).

Run it once before a first `cargo fuzz run`, then `cargo fuzz cmin`
(README.md). The two leading bytes of the policy and LMTP inputs pick a
read-buffer size and limits (see fuzz/src/checks/mod.rs).
"""

import base64
import glob
import io
import json
import os
import struct
import zipfile

import fastavro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, "seed-" + name), "wb") as f:
        f.write(data)


# --- policy_request ---------------------------------------------------------

POLICY_RCPT = """request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
helo_name=mail-wm1-f41.google.com
queue_id=
sender=prvs=0123abcd=alice@example.net
recipient=bob@example.org
recipient_count=0
client_address=209.85.128.41
client_name=mail-wm1-f41.google.com
reverse_client_name=mail-wm1-f41.google.com
instance=2b3c.6717e1a0.4f0a1.0
sasl_method=
sasl_username=
sasl_sender=
size=12345
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=TLSv1.3
encryption_cipher=TLS_AES_256_GCM_SHA384
encryption_keysize=256
etrn_domain=
stress=
client_port=51234
policy_context=
server_address=192.0.2.25
server_port=25
compatibility_level=3.6
mail_version=3.7.11

"""


def policy_seeds():
    ipv6 = POLICY_RCPT.replace("209.85.128.41", "2001:db8::1").replace("client_name=mail-wm1-f41.google.com", "client_name=unknown")
    data_state = "request=smtpd_access_policy\nprotocol_state=DATA\nprotocol_name=ESMTP\nsender=\nrecipient=\nsize=0\n\n"
    tls = POLICY_RCPT.replace("ccert_subject=", "ccert_subject=CN=mx.example.net,O=Example").replace(
        "ccert_fingerprint=", "ccert_fingerprint=C2:9D:F4:87:71:73:73:D9:18:E7:C2:F3:C1:DA:6E:04")
    write("policy_request", "rcpt", b"\x00\x00" + POLICY_RCPT.encode())
    write("policy_request", "connection", b"\x03\x00" + (POLICY_RCPT + ipv6 + data_state).encode())
    write("policy_request", "crlf", b"\x06\x00" + tls.replace("\n", "\r\n").encode())
    write("policy_request", "small-limits", b"\x01\x01" + (data_state + "a=b\n=c\nbroken line\n\n").encode())
    write("policy_request", "utf8", b"\x02\x00" + "sender=jörg@exämple.de\nrecipient=b@x\n\n".encode())


# --- lmtp_session -----------------------------------------------------------

BODY = (
    "Return-Path: <alice@example.net>\r\n"
    "From: Alice <alice@example.net>\r\nTo: bob@example.org\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <1@example.net>\r\n"
    "Date: Fri, 28 Nov 2025 14:00:00 +0000\r\n\r\n"
    "Hello.\r\n..a stuffed dot line\r\n.\rnot an end\r\nbare\nlf\n.\n\r\n"
)


def lmtp_seeds():
    postfix = (
        "LHLO mx1.example.org\r\n"
        "MAIL FROM:<alice@example.net> SIZE=420 BODY=8BITMIME\r\n"
        "RCPT TO:<bob@example.org>\r\nRCPT TO:<Carol@Example.org>\r\nRCPT TO:<nobody@example.org>\r\n"
        "DATA\r\n" + BODY + ".\r\n"
        "MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n.\r\n"
        "RSET\r\nNOOP\r\nVRFY bob\r\nQUIT\r\n"
    )
    odd = (
        "EHLO x\r\nlhlo client\r\nmail from: <\"a>b\"@example.net>\r\n"
        "rcpt to:<@relay.example:bob@example.org>\r\nRCPT TO:<x@y> NOTIFY=NEVER\r\n"
        "MAIL FROM:<a@b> SIZE=lots\r\nDATA extra\r\nSTARTTLS\r\n\xff\xfe\r\n"
        "MAIL FROM:<a@b\r\nDATA\r\n" + "x" * 5000 + "\r\nQUIT\r\n"
    )
    big = "LHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n" + "0123456789\r\n" * 10 + ".\r\nQUIT\r\n"
    cut = "LHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhalf"
    write("lmtp_session", "postfix", b"\x00\x31" + postfix.encode("utf-8"))
    write("lmtp_session", "odd", b"\x05\x7f" + odd.encode("latin-1"))
    write("lmtp_session", "too-big", b"\x02\x00" + big.encode())
    write("lmtp_session", "cut", b"\x0f\x01" + cut.encode())
    # STARTTLS (the limits byte's top bits: 0x40 offered, 0x80 required),
    # with commands pipelined behind it that the server must drop.
    starttls = (
        "LHLO mx1.example.org\r\nXFORWARD ADDR=192.0.2.1\r\nMAIL FROM:<a@example.net>\r\n"
        "RSET\r\nSTARTTLS\r\nLHLO injected\r\nMAIL FROM:<injected@example.net>\r\n"
    )
    write("lmtp_session", "starttls-required", b"\x00\xb1" + starttls.encode())
    write("lmtp_session", "starttls-offered", b"\x03\x71" + ("STARTTLS\r\n" + starttls).encode())


# --- mime_policy ------------------------------------------------------------

def b64(data):
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def mail(parts, boundary="=_b1"):
    out = (
        "From: a@example.net\r\nTo: b@example.org\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attachment.\r\n"
    )
    for p in parts:
        out += f"--{boundary}\r\n{p}\r\n"
    return (out + f"--{boundary}--\r\n").encode()


def attach(headers, data):
    return f"{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64(data)}"


MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 48
RAR = b"Rar!\x1a\x07\x01\x00" + b"\x00" * 24


def mime_seeds():
    octet = "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="
    write("mime_policy", "exe", mail([attach(octet + '"setup.exe"', MZ)]))
    write("mime_policy", "double", mail([attach(octet + '"invoice.pdf.exe"', MZ)]))
    inner = zip_bytes([("docs/readme.txt", b"hello\n"), ("invoice.pdf.scr", MZ)])
    write("mime_policy", "zip", mail([attach('Content-Type: application/zip; name="scan.zip"\r\nContent-Disposition: attachment; filename="scan.zip"', inner)]))
    nested = zip_bytes([("inner.zip", zip_bytes([("run.bat", b"@echo off\r\n")]))])
    write("mime_policy", "nested-zip", mail([attach(octet + '"archive.zip"', nested)]))
    clean = zip_bytes([("a.txt", b"text"), ("b.csv", b"1,2\n")])
    write("mime_policy", "clean", mail([attach(octet + '"report.pdf"', b"%PDF-1.4\n%%EOF\n"), attach(octet + '"data.zip"', clean)]))
    write("mime_policy", "rar", mail([attach('Content-Type: application/x-rar-compressed\r\nContent-Disposition: attachment; filename="photos.rar"', RAR)]))
    rfc2231 = ("Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
               " filename*0*=utf-8''Rechnung%20M%C3%A4rz;\r\n filename*1*=.pdf%2E;\r\n filename*2=exe")
    write("mime_policy", "rfc2231", mail([attach(rfc2231, MZ)]))
    rfc2047 = 'Content-Type: application/octet-stream; name="=?utf-8?B?aW52b2ljZS5wZGYuZXhl?="'
    write("mime_policy", "rfc2047", mail([attach(rfc2047, MZ)]))
    write("mime_policy", "mime-type", mail([attach('Content-Type: application/x-msdownload; name="update.dat"', MZ)]))
    attached = mail([attach(octet + '"a.vbs"', b"MsgBox 1")], boundary="=_inner").decode()
    write("mime_policy", "rfc822", mail(["Content-Type: message/rfc822\r\n\r\n" + attached]))
    qp_zip = zip_bytes([("x.js", b"alert(1)")])
    qp = "".join(f"={b:02X}" for b in qp_zip)
    qp = "=\r\n".join(qp[i:i + 72] for i in range(0, len(qp), 72))
    write("mime_policy", "qp-zip", mail([f"Content-Type: application/zip\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{qp}"]))
    write("mime_policy", "plain", b"From: a@b\r\nSubject: hi\r\n\r\nJust text.\r\n")


# --- avro_decode ------------------------------------------------------------

EMPTY = 0xC15D213AA4D7A795
TABLE = []
for i in range(256):
    fp = i
    for _ in range(8):
        fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
    TABLE.append(fp)


def rabin(data):
    fp = EMPTY
    for b in data:
        fp = (fp >> 8) ^ TABLE[(fp ^ b) & 0xFF]
    return struct.pack("<Q", fp)


def value(schema, name="", named=None):
    """A plausible value for an Avro schema (JSON form)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return value(named[schema], name, named)
        return {
            "null": None, "boolean": True, "int": 42, "long": 1_764_340_000_123,
            "float": 1.5, "double": 2.5, "bytes": b"\x00\x01\xfe\xff",
            "string": "bob@example.org" if any(k in name for k in ("account", "recipient", "sender")) else f"{name or 'x'}-1",
        }[schema]
    if isinstance(schema, list):
        non_null = [s for s in schema if s != "null"]
        return value(non_null[0], name, named) if non_null else None
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[schema["namespace"] + "." + schema["name"]] = schema
        return {f["name"]: value(f["type"], f["name"], named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][-1]
    if kind == "array":
        return [value(schema["items"], name, named)] * 2
    if kind == "map":
        return {"k": value(schema["values"], name, named)}
    if kind == "fixed":
        return b"\x00" * schema["size"]
    return value(kind, name, named)


def avro_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "schemas", "**", "*.avsc"), recursive=True)):
        with open(path) as f:
            raw = json.load(f)
        parsed = fastavro.parse_schema(raw, _write_hint=False, _force=True)
        canonical = fastavro.schema.to_parsing_canonical_form(raw)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, value(raw))
        name = os.path.basename(path)[: -len(".avsc")]
        write("avro_decode", name, b"\xc3\x01" + rabin(canonical.encode()) + body.getvalue())
    write("avro_decode", "short", b"\xc3\x01\x00")
    write("avro_decode", "marker", b"\x00\x01" + b"\x00" * 8)


if __name__ == "__main__":
    policy_seeds()
    lmtp_seeds()
    mime_seeds()
    avro_seeds()

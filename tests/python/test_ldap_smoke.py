"""Smoke test of the private slapd (ops/ldap): mailfleet's account layout, the
service DN's rights, the password schemes users can bind with, and how slapd
answers malformed DNs.

Needs a running `ops/ldap start` (fails, does not skip, without it) and read
access to $RUN_DIR/ldap/secrets/mailfleet.password (root). Uses the ldap-utils
CLIs only. Each test works on accounts of its own random domain, deleted after;
user passwords are generated at run time and go to the tools on stdin
(`-y /dev/stdin`, `slappasswd -T /dev/stdin`): only hashes reach slapd's data.
"""

import base64
import hashlib
import os
import secrets
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_DIR = os.path.abspath(os.environ.get("MAILFLEET_RUN_DIR") or os.path.join(ROOT, "run"))
SERVICE_PASSWORD_FILE = os.path.join(RUN_DIR, "ldap", "secrets", "mailfleet.password")
URL = f"ldap://127.0.0.1:{int(os.environ.get('MAILFLEET_LDAP_PORT', '3389'))}"
SUFFIX = "dc=mailfleet,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
SERVICES = f"ou=services,{SUFFIX}"
SERVICE_DN = f"cn=mailfleet,{SERVICES}"
# The tools must not pick up /etc/ldap/ldap.conf or ~/.ldaprc.
ENV = dict(os.environ, LDAPNOINIT="1")

# LDAP result codes (RFC 4511).
SUCCESS = 0
NO_SUCH_OBJECT = 32
INVALID_DN_SYNTAX = 34
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS = 50
CONSTRAINT_VIOLATION = 19
INVALID_ATTRIBUTE_SYNTAX = 21


@pytest.fixture(scope="module", autouse=True)
def slapd():
    status = subprocess.run([os.path.join(ROOT, "ops", "ldap"), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        pytest.fail(
            "slapd is not running: `ops/ldap status` said "
            f"{(status.stdout + status.stderr).strip()!r}. Start it with `ops/ldap start`.",
            pytrace=False,
        )
    if not os.access(SERVICE_PASSWORD_FILE, os.R_OK):
        pytest.fail(f"cannot read the service DN's password {SERVICE_PASSWORD_FILE} (run as root)", pytrace=False)


def ldap(tool, *args, input=None, bind="service", password=None):
    """Run an ldap-utils tool. bind: "service" (the service DN), None (anonymous),
    or a DN whose `password` is passed on stdin."""
    cmd = [tool, "-x", "-H", URL, "-o", "nettimeout=5"]
    if bind == "service":
        cmd += ["-D", SERVICE_DN, "-y", SERVICE_PASSWORD_FILE]
    elif bind is not None:
        assert input is None, "stdin carries the password"
        cmd += ["-D", bind, "-y", "/dev/stdin"]
        input = password
    return subprocess.run(
        cmd + list(args), input=input, capture_output=True, text=True, env=ENV, timeout=30
    )


def ok(res):
    assert res.returncode == SUCCESS, f"{res.args[0]} exit {res.returncode}: {res.stderr.strip()}"
    return res.stdout


def dn_escape(value):
    """RFC 4514 escaping of an attribute value in a DN."""
    out = []
    for i, ch in enumerate(value):
        if ch in '\\,+"<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def ssha512(password):
    """{SSHA512} as slapd's pw-sha2 module and Dovecot read it: base64(sha512(pw + salt) + salt)."""
    salt = os.urandom(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def ssha(password):
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def slappasswd(password, *args):
    return subprocess.run(
        ["slappasswd", "-T", "/dev/stdin", *args], input=password, capture_output=True, text=True, check=True
    ).stdout.strip()


def dovecot_argon2id(password):
    if not shutil.which("doveadm"):
        pytest.skip("doveadm (Dovecot) is not installed")
    out = subprocess.run(
        ["doveadm", "pw", "-s", "ARGON2ID"], input=f"{password}\n{password}\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.startswith("{ARGON2ID}$argon2id$"), out
    # Same PHC string; slapd's argon2 module names the scheme {ARGON2}.
    return "{ARGON2}" + out[len("{ARGON2ID}") :]


class Account:
    def __init__(self, local="alice"):
        self.domain = f"smoke-{secrets.token_hex(6)}.test"
        self.address = f"{local}@{self.domain}"
        self.dn = f"uid={dn_escape(self.address)},{PEOPLE}"
        self.password = secrets.token_urlsafe(18)

    def ldif(self, password_hash, status="active"):
        return (
            f"dn: {self.dn}\n"
            "objectClass: inetOrgPerson\n"
            "objectClass: mailfleetAccount\n"
            f"uid: {self.address}\n"
            f"mail: {self.address}\n"
            f"cn: {self.address}\n"
            f"sn: {self.address.split('@')[0]}\n"
            f"mailfleetStatus: {status}\n"
            "mailfleetQuota: 1073741824\n"
            "mailfleetPlan: smoke\n"
            f"userPassword: {password_hash}\n"
        )

    def add(self, password_hash=None):
        ok(ldap("ldapadd", input=self.ldif(password_hash or ssha512(self.password))))

    def bind(self, password=None):
        return ldap("ldapwhoami", bind=self.dn, password=self.password if password is None else password)

    def modify(self, attr, value, dn=None):
        return ldap(
            "ldapmodify",
            input=f"dn: {dn or self.dn}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n",
        )

    def exists(self):
        res = ldap("ldapsearch", "-LLL", "-b", self.dn, "-s", "base", "1.1")
        assert res.returncode in (SUCCESS, NO_SUCH_OBJECT), res.stderr
        return res.returncode == SUCCESS

    def remove(self):
        ldap("ldapdelete", "-r", self.dn)


@pytest.fixture
def accounts():
    made = []

    def make(local="alice"):
        made.append(Account(local))
        return made[-1]

    yield make
    for account in made:
        account.remove()


def dns(ldif_text):
    """The DNs in ldapsearch -LLL output (unfolded)."""
    return [line[4:] for line in ldif_text.replace("\n ", "").splitlines() if line.startswith("dn: ")]


def test_root_dse_answers_anonymously():
    out = ok(ldap("ldapsearch", "-LLL", "-b", "", "-s", "base", "namingContexts", bind=None))
    assert f"namingContexts: {SUFFIX}" in out


def test_account_with_contacts_and_calendar(accounts):
    account = accounts()
    contacts = f"ou=contacts,{account.dn}"
    calendar = f"ou=calendar,{account.dn}"
    contact = f"cn=bob,{contacts}"
    ok(
        ldap(
            "ldapadd",
            input=account.ldif(ssha512(account.password))
            + f"\ndn: {contacts}\nobjectClass: organizationalUnit\nou: contacts\n"
            + f"\ndn: {contact}\nobjectClass: inetOrgPerson\ncn: bob\nsn: Builder\nmail: bob@example.test\n"
            + f"\ndn: {calendar}\nobjectClass: organizationalUnit\nou: calendar\n",
        )
    )
    out = ok(ldap("ldapsearch", "-LLL", "-b", account.dn, "-s", "sub", "(objectClass=*)", "1.1"))
    assert sorted(dns(out)) == sorted([account.dn, contacts, contact, calendar])

    ok(account.modify("mailfleetStatus", "inactive"))
    out = ok(
        ldap("ldapsearch", "-LLL", "-b", PEOPLE, f"(&(uid={account.address})(mailfleetStatus=inactive))", "mailfleetStatus")
    )
    assert dns(out) == [account.dn]
    assert "mailfleetStatus: inactive" in out

    # The user binds with the password whose {SSHA512} hash is stored.
    whoami = ok(account.bind())
    assert whoami.strip().lower() == f"dn:{account.dn}".lower()
    assert account.bind(account.password + "x").returncode == INVALID_CREDENTIALS

    ok(ldap("ldapdelete", "-r", account.dn))
    assert not account.exists()
    res = ldap("ldapsearch", "-LLL", "-b", contacts, "-s", "base", "1.1")
    assert res.returncode == NO_SUCH_OBJECT, res.stderr


@pytest.mark.parametrize(
    "scheme",
    ["SSHA512", "SSHA", "CRYPT-SHA512", "ARGON2I", "ARGON2ID-from-dovecot"],
)
def test_user_binds_with_hash_scheme(accounts, scheme):
    account = accounts()
    hashed = {
        "SSHA512": lambda: ssha512(account.password),
        "SSHA": lambda: ssha(account.password),
        # {CRYPT} is crypt(3): $6$ is what Dovecot calls SHA512-CRYPT.
        "CRYPT-SHA512": lambda: slappasswd(account.password, "-h", "{CRYPT}", "-c", "$6$%.16s"),
        "ARGON2I": lambda: slappasswd(account.password, "-o", "module-load=argon2", "-h", "{ARGON2}"),
        "ARGON2ID-from-dovecot": lambda: dovecot_argon2id(account.password),
    }[scheme]()
    account.add(hashed)
    ok(account.bind())
    assert account.bind("wrong-" + account.password).returncode == INVALID_CREDENTIALS


def test_service_sets_but_cannot_read_passwords(accounts):
    account = accounts()
    account.add()
    new_password = secrets.token_urlsafe(18)
    ok(account.modify("userPassword", ssha512(new_password)))
    assert account.bind().returncode == INVALID_CREDENTIALS
    account.password = new_password
    ok(account.bind())

    # Nobody reads a hash: not the service, not the user itself.
    out = ok(ldap("ldapsearch", "-LLL", "-b", account.dn, "-s", "base", "*"))
    assert "mailfleetStatus: active" in out and "userPassword" not in out
    out = ok(ldap("ldapsearch", "-LLL", "-b", account.dn, "-s", "base", "*", bind=account.dn, password=account.password))
    assert f"uid: {account.address}" in out and "userPassword" not in out
    # Anonymous sees nothing under ou=people.
    res = ldap("ldapsearch", "-LLL", "-b", PEOPLE, "(objectClass=*)", "1.1", bind=None)
    assert res.returncode == NO_SUCH_OBJECT and res.stdout.strip() == "", res


def test_status_and_quota_are_constrained(accounts):
    account = accounts()
    account.add()
    for status in ("pending", "active", "inactive", "deleting", "deleted", "blocked"):
        ok(account.modify("mailfleetStatus", status))
    for bad in ("bogus", "Active", "active "):
        res = account.modify("mailfleetStatus", bad)
        assert res.returncode == CONSTRAINT_VIOLATION, (bad, res.stderr)
    assert account.modify("mailfleetQuota", "-1").returncode == CONSTRAINT_VIOLATION
    assert account.modify("mailfleetQuota", "lots").returncode == INVALID_ATTRIBUTE_SYNTAX
    ok(account.modify("mailfleetQuota", "0"))


def test_service_cannot_write_outside_people():
    def expect_50(res):
        assert res.returncode == INSUFFICIENT_ACCESS, f"{res.args}: exit {res.returncode}: {res.stderr.strip()}"

    expect_50(ldap("ldapadd", input=f"dn: ou=evil,{SUFFIX}\nobjectClass: organizationalUnit\nou: evil\n"))
    expect_50(ldap("ldapadd", input=f"dn: cn=evil,{SERVICES}\nobjectClass: organizationalRole\ncn: evil\n"))
    modify = "dn: {}\nchangetype: modify\nreplace: description\ndescription: changed\n"
    expect_50(ldap("ldapmodify", input=modify.format(SERVICES)))
    expect_50(ldap("ldapmodify", input=modify.format(SUFFIX)))
    # ou=people itself: readable, not writable nor deletable.
    ok(ldap("ldapsearch", "-LLL", "-b", PEOPLE, "-s", "base", "1.1"))
    expect_50(ldap("ldapmodify", input=modify.format(PEOPLE)))
    expect_50(ldap("ldapdelete", PEOPLE))
    # Its own entry, password included.
    expect_50(ldap("ldapmodify", input=f"dn: {SERVICE_DN}\nchangetype: modify\nreplace: userPassword\nuserPassword: x\n"))
    expect_50(ldap("ldapdelete", SERVICE_DN))


def test_malformed_dns_are_rejected():
    def add(dn):
        return ldap("ldapadd", input=f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: x\ncn: x\nsn: x\n")

    # '.' for ',': still a valid DN, of an entry "uid=x.ou=people" directly under
    # the suffix, where the service DN may not add anything.
    res = add(f"uid=x.ou=people,{SUFFIX}")
    assert res.returncode == INSUFFICIENT_ACCESS, res.stderr
    assert "no write access to parent" in res.stderr
    res = ldap("ldapsearch", "-LLL", "-b", f"uid=x.ou=people,{SUFFIX}", "-s", "base", "1.1")
    assert res.returncode == NO_SUCH_OBJECT, res.stderr
    # Not valid DN syntax: an unescaped ',' in the address, an empty RDN, an RDN without '='.
    for dn in (f"uid=a,b@x.test,{PEOPLE}", f"uid=x,ou=people,,{SUFFIX}", f"uidx,{PEOPLE}"):
        res = add(dn)
        assert res.returncode == INVALID_DN_SYNTAX, (dn, res.stderr)
    # A parent that does not exist.
    res = add(f"uid=x,ou=nope,{PEOPLE}")
    assert res.returncode == NO_SUCH_OBJECT, res.stderr


def test_address_needing_dn_escapes(accounts):
    account = accounts("a+b=c")
    assert account.dn.startswith("uid=a\\+b\\=c@")
    account.add()
    out = ok(ldap("ldapsearch", "-LLL", "-b", PEOPLE, f"(uid={account.address})", "uid"))
    # slapd returns DNs with hex escapes (a\2Bb\3Dc@...): compare DNs by meaning, not as strings.
    assert dns(out) == [account.dn.replace("\\+", "\\2B").replace("\\=", "\\3D")]
    assert f"uid: {account.address}" in out
    ok(account.bind())

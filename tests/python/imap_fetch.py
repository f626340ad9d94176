"""Fetch every message of one IMAP folder from the private Dovecot and print
each one's raw bytes as a hex line, in UID order. Used by the Rust
end-to-end tests; the password comes from IMAP_PASSWORD, never argv.

    IMAP_PASSWORD=... python3 tests/python/imap_fetch.py user@domain INBOX
"""

import imaplib
import os
import sys


def main():
    address, folder = sys.argv[1], sys.argv[2]
    port = int(os.environ.get("MAILFLEET_DOVECOT_IMAP_PORT", "1143"))
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(address, os.environ["IMAP_PASSWORD"])
    status, _ = imap.select(folder, readonly=True)
    if status != "OK":
        sys.exit(f"cannot select {folder}")
    _, data = imap.uid("SEARCH", None, "ALL")
    for uid in data[0].split():
        _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        print(parts[0][1].hex())
    imap.logout()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The current TOTP code of an otpauth:// URI (or a base32 secret), for trying the console
without an authenticator app: `python scripts/totp_code.py 'otpauth://totp/...'`."""

from __future__ import annotations

import binascii
import sys
import time
import urllib.parse

from vault.console import totp


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: totp_code.py OTPAUTH_URI|BASE32_SECRET", file=sys.stderr)
        return 2
    secret = argv[0]
    if secret.startswith("otpauth://"):
        found = urllib.parse.parse_qs(urllib.parse.urlsplit(secret).query).get("secret")
        if not found:
            print("totp_code.py: the URI has no secret", file=sys.stderr)
            return 2
        secret = found[0]
    try:
        print(totp.code_at(secret, time.time()))
    except (ValueError, binascii.Error):
        print("totp_code.py: not a base32 secret", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

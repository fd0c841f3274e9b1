"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA1, 6 digits, 30 s),
the second factor authenticator apps speak. A code is accepted in its own step or one step
either side (clock drift), and never twice: the last step used is remembered per user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import urllib.parse

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20  # RFC 4226's recommended 160 bits


def new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def _key(secret: str) -> bytes:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return base64.b32decode(padded)


def hotp(secret: str, counter: int) -> str:
    digest = hmac.new(_key(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def step_of(unix_time: float) -> int:
    return int(unix_time // STEP_SECONDS)


def code_at(secret: str, unix_time: float) -> str:
    return hotp(secret, step_of(unix_time))


def matching_step(secret: str, code: str, unix_time: float, last_used: int) -> int | None:
    """The step `code` belongs to (now, or one step either side), when later than `last_used`
    (a code is good once); None otherwise."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    now = step_of(unix_time)
    for step in (now, now - 1, now + 1):
        if step > last_used and hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def enrolment_uri(secret: str, account: str, issuer: str = "vault") -> str:
    """The otpauth:// URI an authenticator app reads (as text or as a QR code)."""
    label = urllib.parse.quote(f"{issuer}:{account}")
    query = urllib.parse.urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"

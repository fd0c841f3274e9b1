"""pacs.toml: the PACS and viewers vault speaks DICOM to, and how (AE titles, host, port, TLS).

Each `[[endpoint]]` names one peer. Wherever a command takes an endpoint NAME it also takes one
written out as `AET@HOST:PORT` (DCMTK's tools take the called AE title, host and port the same
way), for a quick test or a script; a written-out endpoint speaks plain DICOM, so it is refused
off loopback unless the caller allows plain DICOM, as plain http is refused for S3.

Plain DICOM carries patient data in the clear. An endpoint off loopback must either use TLS
(`[endpoint.tls]`, certificate verification on by default) or say `allow_plain = true` — for a
PACS on the same switch that cannot do TLS, a choice made once, in a file an auditor can read.
Pure: parsing and validation only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault.errors import UsageError
from vault.storage.s3_settings import is_loopback  # the one test of "this machine"
from vault.units import whole_number

PACS_FILE = "pacs.toml"
DEFAULT_CALLING_AE = "VAULT"
DEFAULT_TIMEOUT_SECONDS = 30.0
# Associations a restore opens at once: a PACS stores instances of several in parallel.
DEFAULT_ASSOCIATIONS = 2
MAX_ASSOCIATIONS = 8
_TOP_KEYS = ("calling_ae_title", "endpoint")
_ENDPOINT_KEYS = ("name", "ae_title", "host", "port", "calling_ae_title", "allow_plain", "tls",
                  "timeout_seconds", "associations", "retrieve", "move_port")  # fmt: skip
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "verify", "server_name")


@dataclass(frozen=True)
class PacsTls:
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # vault's client certificate, when the PACS asks for one
    key_file: str | None = None
    verify: bool = True  # the PACS's certificate chain and host name
    server_name: str | None = None  # the name its certificate carries, when not `host`


@dataclass(frozen=True)
class PacsEndpoint:
    name: str
    ae_title: str  # the PACS's (called) AE title
    host: str
    port: int
    calling_ae_title: str = DEFAULT_CALLING_AE  # vault's own
    tls: PacsTls | None = None
    allow_plain: bool = False
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    associations: int = DEFAULT_ASSOCIATIONS
    # How a backup fetches studies: "get" (C-GET, on vault's own connection) or "move"
    # (C-MOVE: the PACS connects back to vault's storage SCP on move_port).
    retrieve: str = "get"
    move_port: int | None = None

    def describe(self) -> str:
        """How reports name it: never a credential (it has none), always where it is."""
        scheme = "DICOM TLS" if self.tls else "DICOM"
        written = f"{self.ae_title}@{self.host}:{self.port}"
        return (
            f"{written} ({scheme})"
            if self.name == written
            else f"{self.name} ({written}, {scheme})"
        )


def ae_title_problem(value: object) -> str | None:
    """Why `value` is not a valid AE title (PS3.5 AE: 1-16 characters of the default
    repertoire, no backslash or control character, not only spaces), or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    if len(value) > 16:
        return f"has {len(value)} characters, the most an AE title has is 16"
    if any(not (0x20 <= ord(c) < 0x7F) or c == "\\" for c in value):
        return "may hold only printable ASCII characters and no backslash"
    return None


def parse_written_endpoint(
    text: str, *, calling_ae_title: str = DEFAULT_CALLING_AE, allow_plain: bool = False
) -> PacsEndpoint:
    """An endpoint written out as AET@HOST:PORT (plain DICOM)."""
    aet, at, rest = text.rpartition("@")
    host, colon, port_text = rest.rpartition(":")
    if not at or not colon or not host:
        raise UsageError(
            f"{text!r} is not an endpoint: write AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242"
        )
    problem = ae_title_problem(aet)
    if problem:
        raise UsageError(f"{text!r}: the AE title {problem}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    endpoint = PacsEndpoint(
        name=text,
        ae_title=aet.strip(),
        host=host,
        port=_port(port_text, lambda why: UsageError(f"{text!r}: the port {why}")),
        calling_ae_title=calling_ae_title,
        allow_plain=allow_plain,
    )
    if not allow_plain and not is_loopback(host):
        raise UsageError(
            f"{text!r} would send patient data as plain DICOM to {host}, off this machine: "
            "name an endpoint of pacs.toml with [endpoint.tls], or allow plain DICOM for it "
            "(allow_plain = true in pacs.toml, or --allow-plain-dicom)"
        )
    return endpoint


@dataclass(frozen=True)
class PacsFile:
    calling_ae_title: str
    endpoints: dict[str, PacsEndpoint]


def load_pacs_file(path: Path) -> PacsFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read PACS file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"PACS file {path} is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"PACS file {path} is not valid TOML: {exc}") from None
    for key in doc:
        if key not in _TOP_KEYS:
            raise UsageError(f"{path}: unknown key {key!r} (known: calling_ae_title, [[endpoint]])")
    calling = doc.get("calling_ae_title", DEFAULT_CALLING_AE)
    problem = ae_title_problem(calling)
    if problem:
        raise UsageError(f"{path}: calling_ae_title {problem}")
    raw = doc.get("endpoint", [])
    if not isinstance(raw, list):
        raise UsageError(f"{path}: endpoint must be [[endpoint]] tables")
    endpoints: dict[str, PacsEndpoint] = {}
    for number, table in enumerate(raw, start=1):
        endpoint = _endpoint(path, text, number, table, calling.strip())
        if endpoint.name in endpoints:
            raise UsageError(f"{path}: endpoint name {endpoint.name!r} is used twice")
        endpoints[endpoint.name] = endpoint
    return PacsFile(calling.strip(), endpoints)


def resolve_endpoint(
    given: str, pacs_file: Path | None, *, allow_plain: bool = False
) -> PacsEndpoint:
    """The endpoint a command names: one of pacs.toml by name, or one written out."""
    known = load_pacs_file(pacs_file) if pacs_file and pacs_file.exists() else None
    if known and given in known.endpoints:
        return known.endpoints[given]
    if "@" in given:
        calling = known.calling_ae_title if known else DEFAULT_CALLING_AE
        return parse_written_endpoint(given, calling_ae_title=calling, allow_plain=allow_plain)
    if pacs_file is None:
        where = "no pacs.toml was given (--policy-dir DIR or $VAULT_POLICY_DIR)"
    elif not pacs_file.exists():
        where = f"{pacs_file} does not exist"
    else:
        names = ", ".join(sorted(known.endpoints)) if known and known.endpoints else "none"
        where = f"{pacs_file} names {names}"
    raise UsageError(
        f"no PACS endpoint named {given!r}: {where}; or write one out as AET@HOST:PORT"
    )


def _endpoint(path: Path, text: str, number: int, table: Any, calling: str) -> PacsEndpoint:
    def fail(key: str, complaint: str) -> UsageError:
        line = _line_in_endpoint(text, number, key)
        where = f"{path}, line {line}" if line else str(path)
        return UsageError(f"{where}: endpoint {number}: {key} {complaint}")

    if not isinstance(table, dict):
        raise UsageError(f"{path}: endpoint {number} must be an [[endpoint]] table")
    for key in table:
        if key not in _ENDPOINT_KEYS:
            raise fail(key, f"is not an endpoint key (known: {', '.join(_ENDPOINT_KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip() or "@" in name:
        raise fail("name", "must be a non-empty string without '@'")
    for key in ("ae_title", "calling_ae_title"):
        if key in table or key == "ae_title":
            problem = ae_title_problem(table.get(key))
            if problem:
                raise fail(key, problem)
    host = table.get("host")
    if not isinstance(host, str) or not host.strip():
        raise fail("host", "must be a host name or address")
    port = _port(table.get("port"), lambda why: fail("port", why))
    allow_plain = table.get("allow_plain", False)
    if not isinstance(allow_plain, bool):
        raise fail("allow_plain", "must be true or false")
    timeout = table.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 1 <= timeout <= 3600
    ):
        raise fail("timeout_seconds", "must be a number of seconds from 1 to 3600")
    associations = table.get("associations", DEFAULT_ASSOCIATIONS)
    if (
        isinstance(associations, bool)
        or not isinstance(associations, int)
        or not 1 <= associations <= MAX_ASSOCIATIONS
    ):
        raise fail("associations", f"must be a whole number from 1 to {MAX_ASSOCIATIONS}")
    tls = _tls(table["tls"], lambda key, why: fail(f"tls.{key}", why)) if "tls" in table else None
    retrieve = table.get("retrieve", "get")
    if retrieve not in ("get", "move"):
        raise fail("retrieve", 'must be "get" (C-GET) or "move" (C-MOVE)')
    move_port = None
    if retrieve == "move":
        if "move_port" not in table:
            raise fail(
                "retrieve", '"move" needs move_port = PORT (where vault listens for the PACS)'
            )
        move_port = _port(table.get("move_port"), lambda why: fail("move_port", why))
        if not allow_plain and not is_loopback(host):
            raise fail(
                "retrieve",
                '"move" brings the images back over plain DICOM (vault\'s storage SCP does not '
                'do TLS): use retrieve = "get", or allow_plain = true',
            )
    elif "move_port" in table:
        raise fail("move_port", 'goes with retrieve = "move"')
    if tls is None and not allow_plain and not is_loopback(host):
        raise fail(
            "host",
            "is off this machine and the endpoint has no [endpoint.tls]: patient data would "
            "cross the network as plain DICOM. Configure TLS, or set allow_plain = true for a "
            "PACS that cannot do it",
        )
    return PacsEndpoint(
        name=name.strip(),
        ae_title=table["ae_title"].strip(),
        host=host.strip(),
        port=port,
        calling_ae_title=str(table.get("calling_ae_title", calling)).strip(),
        tls=tls,
        allow_plain=allow_plain,
        timeout_seconds=float(timeout),
        associations=associations,
        retrieve=retrieve,
        move_port=move_port,
    )


def _tls(table: Any, fail: Any) -> PacsTls:
    if not isinstance(table, dict):
        raise fail("", "must be a table ([endpoint.tls])")
    for key in table:
        if key not in _TLS_KEYS:
            raise fail(key, f"is not a TLS key (known: {', '.join(_TLS_KEYS)})")
    files: dict[str, str | None] = {}
    for key in ("ca_file", "cert_file", "key_file", "server_name"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail(key, "must be a non-empty string")
        files[key] = value
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise fail("cert_file", "and key_file go together (vault's client certificate and key)")
    verify = table.get("verify", True)
    if not isinstance(verify, bool):
        raise fail("verify", "must be true or false")
    return PacsTls(files["ca_file"], files["cert_file"], files["key_file"], verify,
                   files["server_name"])  # fmt: skip


def _port(value: Any, fail: Any) -> int:
    if isinstance(value, str):
        value = whole_number(value, 5)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise fail("must be a whole number from 1 to 65535")
    return value


def _line_in_endpoint(text: str, number: int, key: str) -> int:
    """The line of `key` inside the number-th [[endpoint]] table (0 when not found)."""
    seen = 0
    short = key.split(".")[-1]
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[endpoint]]"):
            seen += 1
        elif seen == number and short and stripped.startswith(short) and "=" in stripped:
            return line_number
    return 0

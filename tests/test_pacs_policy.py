"""pacs.toml and endpoints written out as AET@HOST:PORT: what is accepted, and the one-line
error (file, line, key) for what is not. Plain DICOM off loopback is refused unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.errors import UsageError
from vault.policy.pacs import (
    ae_title_problem,
    load_pacs_file,
    parse_written_endpoint,
    resolve_endpoint,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_file_parses_and_names_no_endpoint() -> None:
    shipped = load_pacs_file(ROOT / "policies" / "pacs.toml")
    assert shipped.calling_ae_title == "VAULT" and shipped.endpoints == {}


def test_endpoints_by_name_with_tls_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pacs.toml"
    path.write_text(
        'calling_ae_title = "PRAXIS"\n'
        '[[endpoint]]\nname = "main"\nae_title = "ORTHANC"\nhost = "pacs.lan"\nport = 4242\n'
        '[endpoint.tls]\nca_file = "/etc/ca.pem"\n'
        '[[endpoint]]\nname = "viewer"\nae_title = "VIEW"\nhost = "127.0.0.1"\nport = 11112\n'
        'calling_ae_title = "VAULT2"\n'
    )
    endpoints = load_pacs_file(path).endpoints
    main = endpoints["main"]
    assert (main.ae_title, main.host, main.port, main.calling_ae_title) == (
        "ORTHANC", "pacs.lan", 4242, "PRAXIS")  # fmt: skip
    assert main.tls is not None and main.tls.verify and main.tls.ca_file == "/etc/ca.pem"
    assert endpoints["viewer"].tls is None and endpoints["viewer"].calling_ae_title == "VAULT2"
    assert resolve_endpoint("main", path) == main
    written = resolve_endpoint("X@127.0.0.1:104", path)
    assert written.calling_ae_title == "PRAXIS" and written.port == 104


@pytest.mark.parametrize(
    "body, complaint",
    [
        ('host = "pacs.lan"\nport = 104\nname = "a"\nae_title = "A"\n', "plain DICOM"),
        ('name = "a"\nae_title = "WAY_TOO_LONG_AE_TITLE"\nhost = "127.0.0.1"\nport = 104\n',
         "16"),
        ('name = "a"\nae_title = "BACK\\\\SLASH"\nhost = "127.0.0.1"\nport = 104\n',
         "backslash"),
        ('name = "a"\nae_title = "   "\nhost = "127.0.0.1"\nport = 104\n', "empty"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 70000\n', "65535"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = true\n', "65535"),
        ('name = "a@b"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\n', "'@'"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\ncolour = 1\n',
         "not an endpoint key"),
        ('name = "a"\nae_title = "A"\nhost = "pacs.lan"\nport = 1\n[endpoint.tls]\n'
         'cert_file = "c.pem"\n', "go together"),
        ('name = "a"\nae_title = "A"\nhost = "pacs.lan"\nport = 1\n[endpoint.tls]\n'
         'verify = "yes"\n', "true or false"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\ntimeout_seconds = 0\n',
         "1 to 3600"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\nassociations = 0\n',
         "1 to 8"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\nretrieve = "fetch"\n',
         '"get"'),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\nretrieve = "move"\n',
         "needs move_port"),
        ('name = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\nmove_port = 5\n',
         'goes with retrieve = "move"'),
        ('name = "a"\nae_title = "A"\nhost = "pacs.lan"\nport = 1\nretrieve = "move"\n'
         'move_port = 5\n[endpoint.tls]\nca_file = "ca.pem"\n', "plain DICOM"),
    ],
)  # fmt: skip
def test_a_bad_endpoint_is_one_line_naming_file_line_and_key(
    tmp_path: Path, body: str, complaint: str
) -> None:
    path = tmp_path / "pacs.toml"
    path.write_text("# comment\n[[endpoint]]\n" + body)
    with pytest.raises(UsageError) as raised:
        load_pacs_file(path)
    message = str(raised.value)
    assert complaint in message and str(path) in message and "\n" not in message
    assert "endpoint 1" in message and ", line " in message


def test_two_endpoints_of_one_name_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pacs.toml"
    one = '[[endpoint]]\nname = "a"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\n'
    path.write_text(one + one)
    with pytest.raises(UsageError, match="used twice"):
        load_pacs_file(path)
    path.write_text('calling_aet = "X"\n')
    with pytest.raises(UsageError, match="unknown key 'calling_aet'"):
        load_pacs_file(path)
    path.write_text("[[endpoint\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_pacs_file(path)


def test_written_out_endpoints() -> None:
    e = parse_written_endpoint("ORTHANC@127.0.0.1:4242")
    assert (e.ae_title, e.host, e.port, e.tls) == ("ORTHANC", "127.0.0.1", 4242, None)
    assert parse_written_endpoint("A@[::1]:104").host == "::1"
    assert parse_written_endpoint("A@localhost:104").host == "localhost"
    for bad, complaint in [("ORTHANC", "AET@HOST:PORT"), ("@127.0.0.1:4", "empty"),
                           ("A@127.0.0.1:x", "port"), ("A@127.0.0.1", "AET@HOST:PORT"),
                           ("A@pacs.lan:104", "plain DICOM")]:  # fmt: skip
        with pytest.raises(UsageError, match=complaint):
            parse_written_endpoint(bad)
    assert parse_written_endpoint("A@pacs.lan:104", allow_plain=True).host == "pacs.lan"


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "pacs.toml"
    path.write_text('[[endpoint]]\nname = "main"\nae_title = "A"\nhost = "127.0.0.1"\nport = 1\n')
    with pytest.raises(UsageError, match=r"pacs\.toml names main;"):
        resolve_endpoint("mian", path)
    with pytest.raises(UsageError, match=r"no pacs\.toml was given"):
        resolve_endpoint("main", None)
    with pytest.raises(UsageError, match=r"does not exist"):
        resolve_endpoint("main", tmp_path / "elsewhere" / "pacs.toml")


@pytest.mark.parametrize("title, ok", [("A", True), ("ORTHANC-1 X", True), ("x" * 16, True),
                                       ("x" * 17, False), ("", False), ("é", False),
                                       ("TAB\t", False)])  # fmt: skip
def test_ae_titles(title: str, ok: bool) -> None:
    assert (ae_title_problem(title) is None) is ok

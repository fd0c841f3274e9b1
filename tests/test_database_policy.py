"""Database sources as written by a user: URLs on the command line, [[database]] tables in
backup.toml, drill.toml's [database]. Every mistake is one line naming what is wrong; a
password in a URL is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.errors import UsageError
from vault.policy.databases import load_database_drill_policy, load_database_sources, parse_url


def test_a_mariadb_url_names_the_server_user_databases_and_password_file() -> None:
    source = parse_url("mariadb://od_user@10.0.0.5:3307/opendental,od_audit?password_file=/etc/p")
    assert (source.kind, source.host, source.port, source.user) == (
        "mariadb",
        "10.0.0.5",
        3307,
        "od_user",
    )
    assert source.databases == ("opendental", "od_audit")
    assert source.password_file == "/etc/p"
    assert source.name == "mariadb"  # two databases: the source is named by its kind
    assert source.dump_paths() == [
        ("opendental", "/databases/mariadb/opendental.sql"),
        ("od_audit", "/databases/mariadb/od_audit.sql"),
    ]


def test_socket_option_file_default_port_and_path() -> None:
    source = parse_url("mysql://backup@/pms?socket=/run/mysqld/mysqld.sock&path=/exports/db")
    assert (source.socket, source.host, source.effective_port) == (
        "/run/mysqld/mysqld.sock",
        "",
        3306,
    )
    assert source.dump_paths() == [("pms", "/exports/db/pms.sql")]
    pg = parse_url("postgresql://u@db.example/imaging?password_file=/p&name=index")
    assert (pg.effective_port, pg.name) == (5432, "index")
    assert pg.dump_paths() == [("imaging", "/databases/index/imaging.pgdump")]
    optfile = parse_url("mariadb:///pms?option_file=/etc/mysql/debian.cnf")
    assert (optfile.host, optfile.option_file) == ("", "/etc/mysql/debian.cnf")
    assert parse_url("mariadb://u@/pms").host == "127.0.0.1"
    unix = parse_url("mariadb://backup@unix(/run/mysqld/mysqld.sock)/pms?password_file=/p")
    assert (unix.socket, unix.host, unix.user, unix.databases) == (
        "/run/mysqld/mysqld.sock",
        "",
        "backup",
        ("pms",),
    )
    pg_unix = parse_url("postgresql://u@unix(/var/run/postgresql/.s.PGSQL.5433)/imaging")
    assert pg_unix.socket == "/var/run/postgresql/.s.PGSQL.5433"
    with pytest.raises(UsageError, match="give the socket once"):
        parse_url("mariadb://u@unix(/s.sock)/pms?socket=/t.sock")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mariadb://u:secret@host/db", "a password in a URL"),
        ("mysql://u:@host/db", "a password in a URL"),
        ("oracle://u@host/db", "must start with mariadb://"),
        ("host/db", "must start with mariadb://"),
        ("mariadb://u@host/db?passwd=/p", "unknown setting 'passwd'"),
        ("mariadb://u@host/", "name the database(s) to dump"),
        ("mariadb://u@host/db;drop", "is not one vault can name a dump by"),
        ("mariadb://u@host/db?socket=/s", "a host or a socket, not both"),
        ("postgresql://u@host/db?option_file=/o", "option_file is for MariaDB"),
        ("mariadb://u@host/db?option_file=/o&password_file=/p", "not both"),
        ("mariadb://u@host/db?path=relative", "must be an absolute path"),
        ("mariadb://u@host/db?path=/a/../b", "must be an absolute path"),
        ("mariadb://u@host:99999/db", "not a database URL"),
        # Passwords holding URL delimiters: refused before parsing, never quoted.
        ("mariadb://u:secret/x@host/db", "a password in a URL"),
        ("mariadb://u:sec@ret@host/db", "a password in a URL"),
        ("mariadb://u:secret#x@host/db", "not a database URL"),
        ("mariadb://u:secret?x@host/db", "not a database URL"),
        ("mariadb://u@host/db?name=a/b", "name must be"),
    ],
)
def test_a_bad_url_is_one_clear_line(url: str, complaint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_url(url)
    message = str(caught.value)
    assert complaint in message
    assert "\n" not in message
    assert "secret" not in message


def _policy(tmp_path: Path, text: str, name: str = "backup.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_backup_toml_database_tables(tmp_path: Path) -> None:
    sources = load_database_sources(
        _policy(
            tmp_path,
            '[backup]\nsources = ["/srv"]\n\n'
            '[[database]]\nkind = "mariadb"\nname = "opendental"\nhost = "127.0.0.1"\n'
            'user = "backup"\npassword_file = "/etc/vault/od-password"\n'
            'databases = ["opendental"]\n\n'
            '[[database]]\nkind = "command"\nname = "dentrix"\n'
            'command = ["/usr/local/bin/export-dentrix"]\n'
            'path = "/databases/dentrix.bak"\ntimeout_seconds = 600\n',
        )
    )
    assert [s.name for s in sources] == ["opendental", "dentrix"]
    assert sources[0].dump_paths() == [("opendental", "/databases/opendental/opendental.sql")]
    assert sources[1].command == ("/usr/local/bin/export-dentrix",)
    assert sources[1].dump_paths() == [("dentrix", "/databases/dentrix.bak")]
    assert load_database_sources(_policy(tmp_path, "[backup]\n")) == []
    assert load_database_sources(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('kind = "oracle"\ndatabases = ["x"]', "kind must be one of"),
        ('kind = "mariadb"\ndatabases = ["x"]\npasword_file = "/p"', "unknown key 'pasword_file'"),
        ('kind = "mariadb"\ndatabases = "x"', "databases must be a list of strings"),
        ('kind = "mariadb"\ndatabases = ["x"]\nport = "3306"', "port must be int"),
        ('kind = "command"\nname = "x"', 'needs command = ["program"'),
        ('kind = "command"\nname = "x"\ncommand = ["c"]\nhost = "h"', "host does not go with"),
        ('kind = "mariadb"\ndatabases = ["x"]\ncommand = ["c"]', "command goes with kind"),
        ('kind = "mariadb"\ndatabases = ["x"]\nenv = ["MYSQL_PWD"]', "env goes with kind"),
        ('kind = "mariadb"\ndatabases = ["x"]\ntimeout_seconds = -1', "must be 0 (no limit)"),
    ],
)
def test_a_bad_database_table_names_file_table_and_key(
    tmp_path: Path, table: str, complaint: str
) -> None:
    _policy(tmp_path, "[[database]]\n" + table + "\n")
    with pytest.raises(UsageError) as caught:
        load_database_sources(tmp_path)
    assert complaint in str(caught.value)
    assert "backup.toml, [[database]] number 1" in str(caught.value)


def test_two_database_tables_with_one_name_are_refused(tmp_path: Path) -> None:
    _policy(tmp_path, '[[database]]\nkind = "mariadb"\ndatabases = ["a"]\nname = "x"\n' * 2)
    with pytest.raises(UsageError, match="two \\[\\[database\\]\\] tables are named 'x'"):
        load_database_sources(tmp_path)


def test_drill_toml_database_table(tmp_path: Path) -> None:
    _policy(
        tmp_path,
        "[drill]\nsample_studies = 2\n\n[database]\ncheck = true\n"
        'queries = ["SELECT 1 FROM patient LIMIT 1"]\nmin_rows = { patient = 10 }\n'
        'server = "mariadb://drill@127.0.0.1:3307/?password_file=/etc/vault/drill-db"\n',
        "drill.toml",
    )
    policy = load_database_drill_policy(tmp_path)
    assert policy.check and policy.check_tables
    assert policy.min_rows == (("patient", 10),)
    server = policy.server_source()
    assert server is not None and (server.port, server.databases) == (3307, ())
    for text, complaint in [
        ("[database]\ncheck = 1\n", "check has the wrong type"),
        ("[database]\nqueris = []\n", "unknown key 'queris'"),
        ('[database]\nmin_rows = { "a b" = 1 }\n', "not a table name"),
        ('[database]\nserver = "mariadb://u:pw@h/"\n', "a password in a URL"),
    ]:
        _policy(tmp_path, text, "drill.toml")
        with pytest.raises(UsageError, match=complaint):
            load_database_drill_policy(tmp_path)


def test_the_shipped_examples_in_backup_toml_are_valid(tmp_path: Path) -> None:
    """The commented [[database]] examples in policies/backup.toml, uncommented, load."""
    import re

    shipped = (Path(__file__).parent.parent / "policies" / "backup.toml").read_text()
    assert load_database_sources(Path(__file__).parent.parent / "policies") == []
    lines = [
        m.group(1)
        for line in shipped.splitlines()
        if (m := re.match(r"^# (\[\[database\]\]|[a-z_]+ = .*)$", line))
    ]
    (tmp_path / "backup.toml").write_text("\n".join(lines) + "\n")
    sources = load_database_sources(tmp_path)
    assert [(s.kind, s.name) for s in sources] == [
        ("mariadb", "opendental"),
        ("postgresql", "imaging-index"),
        ("command", "dentrix"),
    ]
    assert sources[0].dump_paths() == [("opendental", "/databases/opendental/opendental.sql")]

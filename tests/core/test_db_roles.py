"""`manage.py db_roles`: the application's database role may read and append to the audit trail
and nothing more, whatever it tries over a connection of its own.

Roles belong to the whole PostgreSQL cluster, which the test processes share: each test makes
a role of its own name and drops it afterwards. The suite's own role is a superuser and owns
the tables, as the role that runs `migrate` does in production."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import psycopg
import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from psycopg import errors, sql

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD_ENV = "TEST_APP_DB_PASSWORD"
TAMPERING = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")


@dataclass(frozen=True)
class AppRole:
    name: str
    password: str


def trail_tables() -> list[str]:
    return sorted({model._meta.db_table for model in apps.get_app_config("audit").get_models()})


def execute(statement: sql.Composable | str, params: list[Any] | None = None) -> list[Any]:
    """Run one statement as the suite's role (a superuser, the tables' owner)."""
    text = statement if isinstance(statement, str) else statement.as_string(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        return list(cursor.fetchall()) if cursor.description else []


@contextmanager
def connected_as(role: AppRole) -> Iterator[psycopg.Connection[Any]]:
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, dbname=db["NAME"], user=role.name,
        password=role.password, autocommit=True, connect_timeout=5,
    ) as conn:  # fmt: skip
        yield conn


def grant(role: str, *extra: str) -> str:
    out = StringIO()
    call_command("db_roles", "grant", "--app-role", role, *extra, stdout=out)
    return out.getvalue()


def manage_as(role: AppRole, *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` in a process of its own, connected to the test database as `role`."""
    db = connection.settings_dict
    url = (
        f"postgres://{role.name}:{quote(role.password, safe='')}"
        f"@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "text"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def rights_snapshot(role: str) -> list[Any]:
    """Every right in the schema, the database and the role's attributes, as PostgreSQL keeps
    them."""
    return [
        execute(
            "SELECT c.relname, c.relacl::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() ORDER BY c.relname"
        ),
        execute(
            "SELECT p.oid::regprocedure::text, p.proacl::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() ORDER BY 1"
        ),
        execute("SELECT nspacl::text FROM pg_namespace WHERE nspname = current_schema()"),
        execute("SELECT datacl::text FROM pg_database WHERE datname = current_database()"),
        execute("SELECT * FROM pg_roles WHERE rolname = %s", [role]),
    ]


@pytest.fixture
def role_name(transactional_db: None) -> Iterator[str]:
    """A fresh role name; the role, if made, is dropped with every right it was given."""
    name = f"app_{uuid4().hex[:12]}"
    try:
        yield name
    finally:
        if execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]):
            role = sql.Identifier(name)
            execute(sql.SQL("DROP OWNED BY {}").format(role))
            execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def app_role(role_name: str, monkeypatch: pytest.MonkeyPatch) -> AppRole:
    password = secrets.token_urlsafe(18)
    monkeypatch.setenv(PASSWORD_ENV, password)
    grant(role_name, "--password-env", PASSWORD_ENV)
    return AppRole(name=role_name, password=password)


def test_grant__new_role__created_without_powers_and_reported(
    role_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a password in the environment
    password = secrets.token_urlsafe(18)
    monkeypatch.setenv(PASSWORD_ENV, password)

    # When the owner grants to a role that does not exist yet
    out = grant(role_name, "--password-env", PASSWORD_ENV)

    # Then the role is made with no power over the cluster, and each group of tables is reported
    [(login, superuser, createdb, createrole, replication, bypassrls)] = execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = %s",
        [role_name],
    )
    assert login
    assert (superuser, createdb, createrole, replication, bypassrls) == (False,) * 5
    lines = out.splitlines()
    assert lines[0] == (
        f"role {role_name}: created (LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        "NOBYPASSRLS); password set"
    )
    trail = trail_tables()
    assert lines[2] == (
        f"trail, {len(trail)} tables ({', '.join(trail)}): SELECT, INSERT; "
        "all else revoked, also from PUBLIC"
    )
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"database {connection.settings_dict['NAME']}",
        "trail",
        "other tables",
        "sequences",
        "functions",
    ]
    assert password not in out


def test_grant__app_role__reads_and_appends_to_every_trail_table(app_role: AppRole) -> None:
    # Given the application's role, on a connection of its own
    with connected_as(app_role) as conn:
        for table in trail_tables():
            name = sql.Identifier(table)
            # When it reads a trail table, and appends to it (nothing, by the WHERE false)
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            conn.execute(sql.SQL("INSERT INTO {0} SELECT * FROM {0} WHERE false").format(name))
            # Then both are allowed
            assert conn.execute("SELECT current_user").fetchone() == (app_role.name,)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM audit_auditevent",
        "UPDATE audit_auditevent SET verb = 'x'",
        "TRUNCATE audit_auditevent",
        "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
        "DROP TABLE audit_auditevent",
        # Setting the trail's numbering back would jam it; a function made in the schema
        # could change what the trail's checks compute.
        "SELECT setval('audit_event_sequence', 1)",
        "CREATE FUNCTION convert_to(character varying, name) RETURNS bytea"
        " LANGUAGE sql AS $$ SELECT '\\x00'::bytea $$",
    ],
)
def test_grant__app_role_tampers_with_the_trail__refused(app_role: AppRole, statement: str) -> None:
    # Given the application's role, on a connection of its own
    # When it tries to change or remove the trail, Then PostgreSQL refuses (42501)
    with connected_as(app_role) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_grant__every_trail_table__refuses_what_would_change_it(app_role: AppRole) -> None:
    # Given every table of the audit app, those added later included
    refused = []
    with connected_as(app_role) as conn:
        for table in trail_tables():
            name = sql.Identifier(table)
            for statement in (
                sql.SQL("DELETE FROM {} WHERE false"),
                sql.SQL("TRUNCATE {}"),
                sql.SQL("ALTER TABLE {} DISABLE TRIGGER ALL"),
                sql.SQL("DROP TABLE {}"),
            ):
                # When the application's role tries each way of changing it
                try:
                    conn.execute(statement.format(name))
                except errors.InsufficientPrivilege:
                    refused.append(table)
    # Then each one is refused, even when no row would be touched
    assert refused == [table for table in trail_tables() for _ in range(4)]


def test_grant__app_role_on_another_table__updates_and_deletes(app_role: AppRole) -> None:
    # Given a table outside the trail
    agent = apps.get_model("registry", "Agent")
    column = agent._meta.pk.column
    assert column is not None
    table, key = sql.Identifier(agent._meta.db_table), sql.Identifier(column)
    with connected_as(app_role) as conn:
        # When the application's role updates and deletes there (nothing, by the WHERE false)
        updated = conn.execute(sql.SQL("UPDATE {} SET {} = {} WHERE false").format(table, key, key))
        deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE false").format(table))
    # Then both are allowed
    assert (updated.rowcount, deleted.rowcount) == (0, 0)


def test_grant__app_role__cannot_become_an_owner(app_role: AppRole) -> None:
    # Given the application's role, on a connection of its own
    # When it tries to make a table of its own in the schema, Then it is refused
    with connected_as(app_role) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(f"CREATE TABLE {app_role.name}_own (id int)")


def test_grant__run_twice__changes_nothing(app_role: AppRole) -> None:
    # Given a role granted once
    before = rights_snapshot(app_role.name)

    # When the owner grants again, without a password this time
    out = grant(app_role.name)

    # Then every right is as it was, and it says so
    assert rights_snapshot(app_role.name) == before
    assert out.splitlines()[0] == (
        f"role {app_role.name}: exists, attributes already right; password unchanged"
    )
    with connected_as(app_role) as conn:
        assert conn.execute("SELECT count(*) FROM audit_auditevent").fetchone() is not None


def test_grant__existing_role_with_more_rights__they_are_taken_away(role_name: str) -> None:
    # Given a role made by hand, with powers and rights over the trail, some also given to all
    role = sql.Identifier(role_name)
    execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE BYPASSRLS").format(role))
    execute(sql.SQL("GRANT ALL ON audit_auditevent TO {}").format(role))
    execute(
        sql.SQL("GRANT UPDATE (verb), REFERENCES (verb) ON audit_auditevent TO {}").format(role)
    )
    execute("GRANT UPDATE, TRIGGER ON audit_auditevent TO PUBLIC")
    try:
        # When the owner grants to it
        out = grant(role_name)
        # Then the powers and every tampering right are gone, its own and PUBLIC's
        held = execute(
            "SELECT rolcreatedb, rolcreaterole, rolbypassrls, "
            "has_table_privilege(rolname, 'audit_auditevent', %s), "
            # UPDATE and REFERENCES may also be held on single columns.
            "has_any_column_privilege(rolname, 'audit_auditevent', 'UPDATE, REFERENCES') "
            "FROM pg_roles WHERE rolname = %s",
            [", ".join(TAMPERING), role_name],
        )
        assert held == [(False,) * 5]
        assert out.splitlines()[0] == (
            f"role {role_name}: exists, set NOCREATEDB NOCREATEROLE NOBYPASSRLS; password unchanged"
        )
    finally:
        execute("REVOKE UPDATE, TRIGGER ON audit_auditevent FROM PUBLIC")


def test_check__as_app_role__least_privilege_holds(app_role: AppRole) -> None:
    # Given the application running as its own role
    # When it checks its rights at start-up
    result = manage_as(app_role, "db_roles", "check")

    # Then they hold
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == (
        f"database role {app_role.name}: least privilege holds "
        f"({len(trail_tables())} trail tables append-only)"
    )


def test_grant__as_app_role__refused_as_not_the_owner(app_role: AppRole) -> None:
    # Given the application's role, which owns no table
    # When it tries to grant itself, or another role, the rights
    result = manage_as(app_role, "db_roles", "grant", "--app-role", f"{app_role.name}_x")

    # Then it is told to run it as the owner, and no role is made
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"CommandError: grant: run it as the role that ran migrate; {app_role.name} does not own "
    )
    assert not execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [f"{app_role.name}_x"])


def test_check__as_superuser_owner__exits_1_naming_each_problem() -> None:
    # Given the suite's own role: a superuser that owns every table
    out, err = StringIO(), StringIO()

    # When it checks its rights
    with pytest.raises(SystemExit) as exited:
        call_command("db_roles", "check", stdout=out, stderr=err)

    # Then it fails, one line per problem
    user = connection.settings_dict["USER"]
    assert exited.value.code == 1
    assert out.getvalue().strip() == f"database role {user}: least privilege does not hold"
    problems = err.getvalue().splitlines()
    assert problems[0] == f"{user} is a superuser"
    assert any(problem.startswith(f"{user} owns ") for problem in problems)
    assert f"{user} may {', '.join(TAMPERING)} on trail table audit_auditevent" in problems


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grant"], r"^--app-role: give the name of the application's role$"),
        (["grant", "--app-role", "a b"], r"^--app-role: 'a b' is not a valid role name;"),
        (["grant", "--app-role", 'x"; drop'], r"""^--app-role: 'x"; drop' is not a valid role"""),
        (["grant", "--app-role", "App"], r"^--app-role: 'App' is not a valid role name;"),
        (["grant", "--app-role", "a" * 64], r"^--app-role: 'a{64}' is not a valid role name;"),
        (["grant", "--app-role", "pg_app"], r"^--app-role: 'pg_app' is reserved by PostgreSQL$"),
        (["grant", "--app-role", "public"], r"^--app-role: 'public' is reserved by PostgreSQL$"),
        ([], r"^give a verb: grant or check$"),
    ],
)
def test_grant__bad_role__command_error_naming_the_option(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("db_roles", *args)


def test_grant__password_env_unset_or_empty__refused_and_no_role_made(
    role_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(
        CommandError, match=rf"^--password-env: the environment variable {PASSWORD_ENV} is unset"
    ):
        grant(role_name, "--password-env", PASSWORD_ENV)
    monkeypatch.setenv(PASSWORD_ENV, "")
    with pytest.raises(CommandError, match=r"^--password-env: .* is unset or empty$"):
        grant(role_name, "--password-env", PASSWORD_ENV)
    with pytest.raises(CommandError, match=r"^--password-env: 'A B' is not an environment"):
        grant(role_name, "--password-env", "A B")
    assert not execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role_name])


def test_grant__to_the_owner_itself__refused() -> None:
    user = connection.settings_dict["USER"]
    with pytest.raises(CommandError, match=rf"^--app-role: '{user}' is the role running this"):
        grant(user)

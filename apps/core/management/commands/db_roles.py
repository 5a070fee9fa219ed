"""manage.py db_roles grant --app-role NAME [--password-env VAR]
manage.py db_roles check

The audit trail holds against the application only if the application's own database role
cannot change it. The owner of a table may disable its triggers, truncate it or drop it, so the
role that runs `migrate` (the owner) is not the role the application runs as:

- `grant`, run as the owner after every `migrate` (it is idempotent, and new tables need their
  grants), creates or corrects the application's role: it owns nothing, may only read and append
  to the trail's tables (every table of the `audit` app), and may read and write the others.
- `check`, run as the application's role (at start-up), exits 1 naming every right too many.

The trail's tables come from the app registry by label, not by import: core imports no app.
"""

from __future__ import annotations

import os
import re
import sys
from argparse import ArgumentParser
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction
from psycopg import sql

TRAIL_APP = "audit"
# What the application's role must never hold on a trail table: each lets it change or remove
# rows the trail has recorded (REFERENCES, by a foreign key that cascades or blocks).
TAMPERING = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")
# Set on every run; only those that differ are altered, since PostgreSQL refuses a non-superuser
# owner even a no-op change of SUPERUSER, CREATEDB, REPLICATION or BYPASSRLS.
ATTRIBUTES = {
    "rolcanlogin": ("LOGIN", True),
    "rolsuper": ("NOSUPERUSER", False),
    "rolcreatedb": ("NOCREATEDB", False),
    "rolcreaterole": ("NOCREATEROLE", False),
    "rolreplication": ("NOREPLICATION", False),
    "rolbypassrls": ("NOBYPASSRLS", False),
}
# An unquoted PostgreSQL identifier, at most NAMEDATALEN - 1 bytes: the name then reads the same
# in a connection URL, in psql and in pg_hba.conf.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
RESERVED_ROLES = {"public", "none", "current_role", "current_user", "session_user"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Schema:
    database: str
    name: str
    user: str
    tables: list[str]
    trail: list[str]


class Command(BaseCommand):
    help = "Give the application's database role least privilege (grant), or verify it (check)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        verbs = parser.add_subparsers(dest="verb", metavar="{grant,check}")
        grant = verbs.add_parser(
            "grant", help="as the owner, after migrate: create or correct the application's role"
        )
        # Checked here, not by argparse, so that a mistake reads as one line.
        grant.add_argument(
            "--app-role",
            dest="app_role",
            default="",
            metavar="NAME",
            help="the role the application runs as; created if missing",
        )
        grant.add_argument(
            "--password-env",
            dest="password_env",
            default=None,
            metavar="VAR",
            help="the environment variable holding the role's password (never a command-line "
            "argument, which the process list shows)",
        )
        verbs.add_parser("check", help="as the application's role: exit 1 if it may do too much")

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options.get("verb")
        if verb == "grant":
            self._grant(options["app_role"], options["password_env"])
        elif verb == "check":
            self._check()
        else:
            raise CommandError("give a verb: grant or check")

    def _grant(self, app_role: str, password_env: str | None) -> None:
        role = _role_name(app_role)
        password = _password(password_env)
        with transaction.atomic():
            schema = _schema()
            if role == schema.user:
                raise CommandError(
                    f"--app-role: {role!r} is the role running this command (the owner); the "
                    "application needs a role of its own"
                )
            _require_ownership(schema)
            try:
                said = _ensure_role(role, password)
            except DatabaseError as exc:
                reason = " ".join(str(exc).split())
                raise CommandError(
                    f"--app-role: PostgreSQL refused to set up {role!r}: {reason}"
                ) from None
            said += "\n" + _grant_all(role, schema)
        # Said once committed: nothing of it holds if a later step failed.
        self.stdout.write(said)

    def _check(self) -> None:
        schema = _schema()
        problems = _problems(schema)
        if problems:
            self.stdout.write(f"database role {schema.user}: least privilege does not hold")
            for problem in problems:
                self.stderr.write(problem)
            sys.exit(1)
        self.stdout.write(
            f"database role {schema.user}: least privilege holds "
            f"({len(schema.trail)} trail tables append-only)"
        )


def _role_name(name: str) -> str:
    if not name:
        raise CommandError("--app-role: give the name of the application's role")
    if not ROLE_NAME.fullmatch(name):
        raise CommandError(
            f"--app-role: {name!r} is not a valid role name; use lower-case letters, digits and "
            "underscores, starting with a letter or underscore, at most 63 characters"
        )
    if name.startswith("pg_") or name in RESERVED_ROLES:
        raise CommandError(f"--app-role: {name!r} is reserved by PostgreSQL")
    return name


def _password(variable: str | None) -> str | None:
    if variable is None:
        return None
    if not ENV_NAME.fullmatch(variable):
        raise CommandError(f"--password-env: {variable!r} is not an environment variable name")
    password = os.environ.get(variable, "")
    if not password:
        raise CommandError(f"--password-env: the environment variable {variable} is unset or empty")
    return password


def _trail_tables() -> list[str]:
    # Every concrete table of the app, many-to-many link tables included (a proxy shares its
    # concrete model's table).
    models = apps.get_app_config(TRAIL_APP).get_models(include_auto_created=True)
    return sorted({model._meta.db_table for model in models if not model._meta.proxy})


def _schema() -> Schema:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_database(), current_schema(), current_user, "
            "coalesce(array_agg(tablename::text ORDER BY tablename), '{}') "
            "FROM pg_tables WHERE schemaname = current_schema()"
        )
        database, name, user, tables = cursor.fetchone()
    return Schema(database=database, name=name, user=user, tables=tables, trail=_trail_tables())


def _require_ownership(schema: Schema) -> None:
    missing = [table for table in schema.trail if table not in schema.tables]
    if missing:
        raise CommandError(
            f"grant: the trail's tables {', '.join(missing)} are missing from schema "
            f"{schema.name}: run migrate first"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND NOT pg_has_role(current_user, tableowner, 'MEMBER') ORDER BY tablename"
        )
        foreign = [row[0] for row in cursor.fetchall()]
    if foreign:
        raise CommandError(
            f"grant: run it as the role that ran migrate; {schema.user} does not own "
            f"{len(foreign)} tables of schema {schema.name} ({_sample(foreign)})"
        )


def _ensure_role(role: str, password: str | None) -> str:
    name = sql.Identifier(role)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(ATTRIBUTES)} FROM pg_roles WHERE rolname = %s",  # noqa: S608
            [role],
        )
        row = cursor.fetchone()
        secret: sql.Composable = sql.SQL("")
        if password is not None:
            # Sent already hashed (as psql's \password does), so that the password itself
            # never reaches the server's statement log.
            verifier = connection.connection.pgconn.encrypt_password(
                password.encode(), role.encode(), None
            )
            secret = sql.SQL(" PASSWORD {}").format(sql.Literal(verifier.decode()))
        if row is None:
            attributes = " ".join(keyword for keyword, _ in ATTRIBUTES.values())
            cursor.execute(
                _text(sql.SQL("CREATE ROLE {} {}{}").format(name, sql.SQL(attributes), secret))
            )
            said = "password set" if password is not None else "no password set"
            return f"role {role}: created ({attributes}); {said}"
        changed = [
            keyword
            for (keyword, value), held in zip(ATTRIBUTES.values(), row, strict=True)
            if held != value
        ]
        if changed or password is not None:
            cursor.execute(
                _text(
                    sql.SQL("ALTER ROLE {} {}{}").format(
                        name, sql.SQL(" ".join(changed) or "WITH"), secret
                    )
                )
            )
    attributes = f"set {' '.join(changed)}" if changed else "attributes already right"
    said = "password set" if password is not None else "password unchanged"
    return f"role {role}: exists, {attributes}; {said}"


def _grant_all(role: str, schema: Schema) -> str:
    grantee = sql.Identifier(role)
    others = [table for table in schema.tables if table not in schema.trail]
    with connection.cursor() as cursor:
        for statement in (
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(schema.database), grantee
            ),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema.name), grantee),
            # Everything first taken away, then granted again, in one transaction: a right
            # granted by hand since the last run does not survive this one.
            sql.SQL("REVOKE ALL ON TABLE {} FROM {}, PUBLIC").format(
                _tables(schema.name, schema.trail), grantee
            ),
            sql.SQL("GRANT SELECT, INSERT ON TABLE {} TO {}").format(
                _tables(schema.name, schema.trail), grantee
            ),
            # Numbers drawn (nextval), never set (setval would jam the trail's numbering).
            sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(
                sql.Identifier(schema.name), grantee
            ),
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema.name), grantee
            ),
            # No one but the owner creates in the schema: a function or operator made there
            # could change what the trail's checks compute.
            sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {}").format(
                sql.Identifier(schema.name), grantee
            ),
            # The application calls PL/pgSQL functions that the migrations create.
            sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(
                sql.Identifier(schema.name), grantee
            ),
        ):
            cursor.execute(_text(statement))
        if others:
            cursor.execute(
                _text(
                    sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
                        _tables(schema.name, others), grantee
                    )
                )
            )
            cursor.execute(
                _text(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {}").format(
                        _tables(schema.name, others), grantee
                    )
                )
            )
        cursor.execute(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'S'),"
            " (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = current_schema() AND p.prokind = 'f')"
        )
        sequences, functions = cursor.fetchone()
    return "\n".join(
        [
            f"database {schema.database}, schema {schema.name}: CONNECT, USAGE",
            f"trail, {len(schema.trail)} tables ({', '.join(schema.trail)}): SELECT, INSERT; "
            "all else revoked, also from PUBLIC",
            f"other tables, {len(others)}: SELECT, INSERT, UPDATE, DELETE",
            f"sequences, {sequences}: USAGE, SELECT",
            f"functions, {functions}: EXECUTE",
        ]
    )


def _problems(schema: Schema) -> list[str]:
    problems: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication "
            "FROM pg_roles WHERE rolname = current_user"
        )
        superuser, createrole, createdb, bypassrls, replication = cursor.fetchone()
        for held, problem in (
            (superuser, "is a superuser"),
            (createrole, "may create roles (CREATEROLE)"),
            (createdb, "may create databases (CREATEDB)"),
            (bypassrls, "bypasses row-level security (BYPASSRLS)"),
            (replication, "may start replication (REPLICATION)"),
        ):
            if held:
                problems.append(f"{schema.user} {problem}")
        # A member of the owning role may act as the owner (SET ROLE) even without inheriting.
        cursor.execute(
            "SELECT tableowner, array_agg(tablename::text ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = current_schema() AND pg_has_role(current_user, tableowner, "
            "'MEMBER') GROUP BY tableowner ORDER BY tableowner"
        )
        for owner, tables in cursor.fetchall():
            whose = "owns" if owner == schema.user else f"is a member of {owner}, which owns"
            problems.append(
                f"{schema.user} {whose} {len(tables)} tables of schema {schema.name} "
                f"({_sample(tables)})"
            )
        cursor.execute(
            "SELECT has_schema_privilege(current_schema(), 'CREATE'), "
            "(SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema()"
            " AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE') END)"
        )
        create, settable = cursor.fetchone()
        if create:
            problems.append(f"{schema.user} may create in schema {schema.name} (CREATE)")
        if settable:
            problems.append(
                f"{schema.user} may set {len(settable)} sequences (UPDATE: {_sample(settable)})"
            )
        cursor.execute(
            "SELECT c.relname::text, "
            # UPDATE and REFERENCES may also be granted on single columns.
            "has_any_column_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE'), "
            "has_table_privilege(c.oid, 'TRUNCATE'), has_table_privilege(c.oid, 'TRIGGER'), "
            "has_any_column_privilege(c.oid, 'REFERENCES') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
            [schema.trail],
        )
        held_by_table = {row[0]: row[1:] for row in cursor.fetchall()}
    for table in schema.trail:
        if table not in held_by_table:
            problems.append(f"trail table {table} is missing from schema {schema.name}")
            continue
        rights = [
            right for right, held in zip(TAMPERING, held_by_table[table], strict=True) if held
        ]
        if rights:
            problems.append(f"{schema.user} may {', '.join(rights)} on trail table {table}")
    return problems


def _tables(schema: str, tables: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(schema, table) for table in tables)


def _text(statement: sql.Composable) -> str:
    # Rendered here, with the connection's own quoting: Django's cursor takes a string.
    return statement.as_string(connection.connection)


def _sample(names: Sequence[str], shown: int = 3) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more

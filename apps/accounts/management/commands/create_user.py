"""manage.py create_user USERNAME --role ROLE [--role ROLE] [--email E] [--password P]

The password may also come from the ESCAPEMENT_PASSWORD environment variable (so it does not
appear in the process list); without either, a random one is generated and printed once.
"""

from __future__ import annotations

import os
import secrets
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.roles import Role, parse_role
from apps.accounts.services import UserInputError, user_create


class Command(BaseCommand):
    help = "Create a user holding the given roles (supervisor, risk, finance, oncall, admin)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            dest="roles",
            action="append",
            default=[],
            help="a role to grant; repeat for several (comma-separated also works)",
        )
        parser.add_argument("--email", default="")
        parser.add_argument("--password", default=None)
        parser.add_argument(
            "--no-password-check",
            action="store_true",
            help="accept a password the validators would refuse (demo users only)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        roles: list[Role] = []
        for chunk in options["roles"]:
            for name in chunk.split(","):
                if not name.strip():
                    continue
                try:
                    roles.append(parse_role(name))
                except ValueError as exc:
                    raise CommandError(f"--role: {exc}") from None
        if not roles:
            raise CommandError("--role: give at least one role")
        password = options["password"] or os.environ.get("ESCAPEMENT_PASSWORD")
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(12)
        try:
            user = user_create(
                username=options["username"],
                password=password,
                roles=roles,
                email=options["email"],
                check_password=not options["no_password_check"],
                actor="system:create_user",
                via="command",
            )
        except UserInputError as exc:
            raise CommandError(str(exc)) from None
        role_names = ", ".join(sorted(role.value for role in roles))
        self.stdout.write(f"created {user.username} ({role_names})")
        if generated:
            self.stdout.write(f"password: {password}")

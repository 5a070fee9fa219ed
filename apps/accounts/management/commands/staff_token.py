"""manage.py staff_token create USERNAME [--label TEXT] [--expires-in DAYS]
manage.py staff_token revoke PREFIX
manage.py staff_token list [USERNAME]

`create` prints the token once: only its digest is stored. The token acts as its user, with
that user's roles, on the staff API (`Authorization: Bearer est_...`)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import StaffToken
from apps.accounts.roles import user_roles
from apps.accounts.staff_tokens import TokenInvalid, staff_token_create, staff_token_revoke

CLI_ACTOR = "system:cli"
OPTION_NAMES = {
    "username": "USERNAME",
    "label": "--label",
    "expires_in": "--expires-in",
    "prefix": "PREFIX",
}


class Command(BaseCommand):
    help = "Make, revoke or list the staff API tokens of users."

    def add_arguments(self, parser: ArgumentParser) -> None:
        verbs = parser.add_subparsers(dest="verb", metavar="{create,revoke,list}")
        create = verbs.add_parser("create", help="make a token for a user and print it once")
        create.add_argument("username", metavar="USERNAME")
        create.add_argument("--label", default="", help="what the token is for, e.g. 'pager'")
        create.add_argument(
            "--expires-in", dest="expires_in", metavar="DAYS", default=None, help="default: never"
        )
        revoke = verbs.add_parser("revoke", help="revoke a token by its prefix")
        revoke.add_argument("prefix", metavar="PREFIX")
        listing = verbs.add_parser("list", help="list tokens (never the secrets)")
        listing.add_argument("username", metavar="USERNAME", nargs="?", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        verb = options.get("verb")
        if verb is None:
            raise CommandError("give a verb: create, revoke or list")
        try:
            if verb == "create":
                self._create(options)
            elif verb == "revoke":
                record = staff_token_revoke(prefix=options["prefix"], actor=CLI_ACTOR)
                self.stdout.write(f"revoked {record.prefix} of {record.user.username}")
            else:
                self._list(options["username"])
        except TokenInvalid as exc:
            raise CommandError(f"{OPTION_NAMES.get(exc.field, exc.field)}: {exc.message}") from None

    def _create(self, options: dict[str, Any]) -> None:
        days: int | None = None
        if options["expires_in"] is not None:
            try:
                days = int(options["expires_in"])
            except ValueError:
                raise CommandError(
                    f"--expires-in: {options['expires_in']!r} is not a whole number of days"
                ) from None
        issued = staff_token_create(
            username=options["username"],
            actor=CLI_ACTOR,
            label=options["label"],
            expires_in_days=days,
        )
        record = issued.record
        roles = ", ".join(sorted(role.value for role in user_roles(record.user))) or "no role"
        expires = f"{record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "never"
        self.stdout.write(f"created a staff token for {record.user.username} ({roles})")
        self.stdout.write(f"token: {issued.token}")
        self.stdout.write(f"prefix: {record.prefix}")
        self.stdout.write(f"expires: {expires}")
        self.stdout.write("This token is shown once: store it now. Only its digest is kept.")

    def _list(self, username: str | None) -> None:
        records = StaffToken.objects.select_related("user").order_by("user__username", "-pk")
        if username is not None:
            records = records.filter(user__username=username)
        for record in records:
            state = "revoked" if record.revoked_at else "active"
            used = f"{record.last_used_at:%Y-%m-%d %H:%M}" if record.last_used_at else "never"
            self.stdout.write(
                f"{record.prefix}  {record.user.username:<20} {state:<8} used {used:<16} "
                f"{record.label}"
            )

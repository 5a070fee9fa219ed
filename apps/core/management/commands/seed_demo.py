"""manage.py seed_demo: the living demo of `make run`. Safe to run again: it repairs and tops
up what is there instead of duplicating it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.accounts.demo import demo_users_ensure


class Command(BaseCommand):
    help = "Create the demo world (one user per role) and print the logins."

    def handle(self, *args: Any, **options: Any) -> None:
        logins = demo_users_ensure()
        self.stdout.write("Demo logins (user / password / role):")
        for login in logins:
            roles = ", ".join(role.value for role in login.roles)
            self.stdout.write(f"  {login.username:<11} {login.password:<14} {roles}")

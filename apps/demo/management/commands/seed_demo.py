"""manage.py seed_demo: the living demo of `make run`. Safe to run again: it repairs and tops
up what is there instead of duplicating it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.demo.agents import demo_runtime_ensure
from apps.demo.colleagues import COLLEAGUE_AFTER, DEMO_COLLEAGUES, demo_colleagues_ensure
from apps.demo.people import demo_users_ensure
from apps.demo.sandbox import sandbox_seed
from apps.demo.world import DEMO_PORT, demo_world_ensure, sandbox_url


class Command(BaseCommand):
    help = "Create the demo world (users per role, workflows, agents, books); print the logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=DEMO_PORT,
            help=f"the port the web server serves (default {DEMO_PORT}): the demo tools call "
            "its sandbox",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port: int = options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port: must be between 1 and 65535, got {port}")
        logins = demo_users_ensure()
        created = demo_world_ensure(
            author=User.objects.get(username="risk"),
            owner=User.objects.get(username="admin"),
            escalation_owner=User.objects.get(username="supervisor"),
            sandbox=sandbox_url(port),
        )
        created += demo_colleagues_ensure()
        created += sandbox_seed()
        created += demo_runtime_ensure()
        if created:
            self.stdout.write(
                f"Demo world: created {len(created)} things: "
                + ", ".join(created[:12])
                + (" ..." if len(created) > 12 else "")
            )
        self.stdout.write("Demo logins (user / password / role):")
        for login in logins:
            roles = ", ".join(role.value for role in login.roles)
            self.stdout.write(f"  {login.username:<11} {login.password:<14} {roles}")
        self.stdout.write(
            f"On duty in the demo's story (no login): {' and '.join(DEMO_COLLEAGUES)}, "
            f"supervisors, decide the demo items nobody has claimed for "
            f"{COLLEAGUE_AFTER.seconds // 60} minutes."
        )

"""Demo users, one per role, for `make run`. Their passwords are random per installation, kept
in var/demo-logins.json (mode 0600) so that every start can print them again. The colleagues on
duty in the demo's story, whom nobody signs in as, are in colleagues.py."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User

from apps.accounts.roles import Role
from apps.accounts.services import user_create, user_set_password, user_set_roles


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    roles: tuple[Role, ...]


# The demo's users are made and repaired by `seed_demo`, and audited as its doing.
SEED = "system:seed_demo"

DEMO_USERS: dict[str, tuple[Role, ...]] = {
    "supervisor": (Role.SUPERVISOR,),
    "risk": (Role.RISK,),
    "finance": (Role.FINANCE,),
    "oncall": (Role.ONCALL,),
    "admin": (Role.ADMIN,),
}


def _logins_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-logins.json"


def _load_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return {str(name): str(password) for name, password in data.items()}


def demo_users_ensure() -> list[DemoLogin]:
    """Create (or repair) one demo user per role and return their logins."""
    path = _logins_file()
    passwords = _load_passwords(path)
    logins = []
    for username, roles in DEMO_USERS.items():
        password = passwords.get(username) or secrets.token_urlsafe(9)
        user = User.objects.filter(username=username).first()
        if user is None:
            user_create(
                username=username,
                password=password,
                roles=roles,
                check_password=False,
                actor=SEED,
                via="demo",
            )
        else:
            if not user.check_password(password):
                user_set_password(user=user, password=password, actor=SEED, via="demo")
            user_set_roles(user=user, roles=roles, actor=SEED, via="demo")
        passwords[username] = password
        logins.append(DemoLogin(username, password, roles))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(passwords, indent=2))
    return logins

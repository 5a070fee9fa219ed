from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from apps.accounts.navigation import entries_for
from apps.accounts.roles import user_roles


def navigation(request: HttpRequest) -> dict[str, Any]:
    """The menu of the signed-in user: only the pages their roles open."""
    user = getattr(request, "user", None)
    if user is None:
        return {"nav_entries": [], "user_role_names": []}
    roles = user_roles(user)
    items = [
        {
            "label": entry.label,
            "url": entry.url,
            "description": entry.role.description,
            "active": request.path.startswith(entry.url),
        }
        for entry in entries_for(roles)
    ]
    return {"nav_entries": items, "user_role_names": sorted(role.value for role in roles)}

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import role_required
from apps.accounts.roles import Role
from apps.core.http import HtmxHttpRequest
from apps.killswitches.selectors import circuits, engaged_switches, recent_switches


@require_GET
@role_required(Role.ONCALL)
def console(request: HtmxHttpRequest) -> HttpResponse:
    context = {
        "engaged": list(engaged_switches()),
        "released": recent_switches(),
        "circuits": list(circuits()),
    }
    if request.htmx:
        return render(request, "killswitches/console.html#console-state", context)
    return render(request, "killswitches/console.html", context)

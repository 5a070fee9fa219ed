"""The request types of pages: `request.htmx` is set by django-htmx's middleware for every
request, and a page behind `role_required` or `login_required` only ever sees a signed-in user."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class AuthenticatedRequest(HtmxHttpRequest):
    """The request of a page behind `role_required` or `login_required`: those decorators send
    anonymous visitors to the login page before the view runs, so the view reads `request.user`
    as the signed-in User it is, with no check of its own. Annotate only views so decorated."""

    user: User

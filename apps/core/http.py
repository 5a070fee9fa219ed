"""The request type of pages that answer htmx: `request.htmx` is set by django-htmx's
middleware for every request."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails

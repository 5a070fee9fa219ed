from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.metrics import exposition
from apps.core.metrics_access import metrics_allowed


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for the addresses and the token the settings allow; 404 when
    neither is configured, so that an unconfigured install exposes nothing."""
    networks = settings.METRICS_ALLOWED_IPS
    token = settings.METRICS_TOKEN
    if not networks and not token:
        raise Http404("metrics are not enabled")
    allowed = metrics_allowed(
        remote_addr=request.META.get("REMOTE_ADDR", ""),
        authorization=request.headers.get("Authorization", ""),
        networks=networks,
        token=token,
    )
    if not allowed:
        return HttpResponse(
            "metrics: this address is not in METRICS_ALLOWED_IPS and no valid METRICS_TOKEN "
            "was sent\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)

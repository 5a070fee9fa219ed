"""Telling an agent how its action ended: a signed POST to the agent's callback URL.

The body is JSON; the header `X-Escapement-Signature: t=<unix time>,v1=<hex>` carries an
HMAC-SHA256, keyed with the agent's callback secret, of `<t>.<body>`. The agent recomputes it
and compares (and refuses old timestamps, against replay). Each outcome is one
CallbackDelivery row, written in the transaction that settles the action, so none is lost;
delivery is retried with backoff until the agent answers 2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import urllib3
from django.utils import timezone

from apps.actions.dispatch import callback_dispatch
from apps.actions.models import Action, CallbackDelivery, Status

logger = logging.getLogger(__name__)

# The statuses an agent learns about by callback: the ones reached after the gate answered.
REPORTED = frozenset(
    {
        Status.APPROVED,
        Status.REJECTED,
        Status.EXPIRED,
        Status.CANCELLED,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.ROLLED_BACK,
        Status.ROLLBACK_FAILED,
    }
)
TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 8

_pool = urllib3.PoolManager(num_pools=8, maxsize=4, retries=False)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def callback_schedule(action: Action, status: str) -> CallbackDelivery | None:
    """Record the callback of `action` reaching `status` and send it once the caller's
    transaction commits. Nothing when the agent has no callback URL."""
    if status not in REPORTED:
        return None
    url = action.agent.callback_url
    if not url:
        return None
    delivery = CallbackDelivery.objects.create(action=action, status=status, url=url)
    callback_dispatch(delivery.pk)
    return delivery


def callback_payload(action: Action, status: str) -> dict[str, Any]:
    return {
        "action": str(action.pk),
        "agent": action.agent.slug,
        "workflow": action.workflow.slug,
        "tool": action.tool.slug,
        "subject": action.subject,
        "status": status,
        "decision": action.decision,
        "params": action.params,
        "result": action.result,
        "error": action.error,
    }


class CallbackFailed(Exception):
    pass


def callback_deliver(delivery_id: int) -> CallbackDelivery:
    """One attempt. Raises CallbackFailed (the task retries) unless the agent answered 2xx."""
    delivery = CallbackDelivery.objects.select_related(
        "action", "action__agent", "action__workflow", "action__tool"
    ).get(pk=delivery_id)
    if delivery.delivered_at is not None:
        return delivery
    action = delivery.action
    body = json.dumps(callback_payload(action, delivery.status), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Escapement-Callback/1",
        "X-Escapement-Action": str(action.pk),
        "X-Escapement-Delivery": str(delivery.pk),
        "X-Escapement-Signature": signature(action.agent.callback_secret, int(time.time()), body),
    }
    delivery.attempts += 1
    error = ""
    status: int | None = None
    try:
        response = _pool.request(
            "POST",
            delivery.url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS),
        )
        status = response.status
        if not 200 <= status < 300:
            error = f"answered HTTP {status}"
    except urllib3.exceptions.HTTPError as exc:
        error = f"connection failed: {type(exc).__name__}"
    delivery.response_status = status
    delivery.last_error = error
    if not error:
        delivery.delivered_at = timezone.now()
    delivery.save(update_fields=["attempts", "response_status", "last_error", "delivered_at"])
    if error:
        logger.info("callback %s for action %s: %s", delivery.pk, action.pk, error)
        raise CallbackFailed(error)
    return delivery

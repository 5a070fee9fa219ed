"""The colleagues on duty in the demo's story: two supervisors (DEMO_COLLEAGUES, users nobody
signs in as) who decide the demo items nobody has claimed for COLLEAGUE_AFTER, oldest first,
each tick of the demo traffic. They decide as the story has it: due refunds, spot checks,
invoice holds and MFA resets approved (the two of them for a red-zone item, which needs two
people), change-of-mind refunds rejected, and the fallbacks of work the system of record
refused rejected rather than run again. So the queue goes down by itself when nobody visits,
and their decisions feed the SLO page's approval and override rates (the rejected
change-of-mind refunds keep the refunds approval rate under its target: an alert with a reason)
and the balance sheet's review minutes. An item someone has claimed is left alone."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from apps.accounts.roles import Role
from apps.accounts.services import user_create
from apps.demo.agents import DEMO_SOURCE
from apps.demo.people import SEED
from apps.reviews.models import Kind, ReviewItem, Verdict
from apps.reviews.models import State as ReviewState
from apps.reviews.services import (
    DecisionInput,
    ReviewConflict,
    ReviewForbidden,
    ReviewInvalid,
    review_decide,
)

logger = logging.getLogger(__name__)

# Two supervisors on duty in the demo's story: the demo traffic has them decide the demo items
# nobody has claimed for a while (demo_colleagues_work below, each tick of traffic.py), so that
# the queue stays a size a person can work and the SLOs have decisions to measure. Nobody signs
# in as them: their passwords are random and never kept or shown.
DEMO_COLLEAGUES: tuple[str, ...] = ("kim.schulz", "ravi.menon")

# How long a demo item waits for a visitor before one of the colleagues on duty decides it.
COLLEAGUE_AFTER = timedelta(minutes=5)
# Items they decide per tick: more than the traffic opens, so the queue goes down.
COLLEAGUE_ITEMS_PER_TICK = 3


@dataclass(frozen=True)
class Judgement:
    verdict: str
    reason_code: str
    reason_text: str


def colleague_judgement(item: ReviewItem) -> Judgement:
    """What the colleagues on duty decide about a demo item, and why."""
    action = item.action
    tool = action.tool.slug
    if item.kind == Kind.FALLBACK:
        error = (item.error or action.error or "it could not run").splitlines()[0][:300]
        return Judgement(
            Verdict.REJECT,
            "not-eligible",
            f"The system of record refused it ({error}); running it again would not help.",
        )
    if item.kind == Kind.SPOT_CHECK:
        return Judgement(
            Verdict.APPROVE, "within-policy", "Spot check: the record matches the request."
        )
    if tool == "issue_refund" and "mind" in str(action.params.get("reason", "")).lower():
        return Judgement(
            Verdict.REJECT,
            "not-eligible",
            "A change of mind is not refunded once the item has been used; offered an exchange.",
        )
    if tool == "reset_mfa":
        return Judgement(
            Verdict.APPROVE, "verified", "Called the employee back on their desk line first."
        )
    return Judgement(
        Verdict.APPROVE, "within-policy", "Checked against the source system: in order."
    )


def demo_colleagues_ensure() -> list[str]:
    """Create the colleagues on duty that are missing (as supervisors); return what was
    created, for the log. One that exists keeps its roles and password."""
    created = []
    for username in DEMO_COLLEAGUES:
        if User.objects.filter(username=username).exists():
            continue
        user_create(
            username=username,
            password=secrets.token_urlsafe(24),
            roles=(Role.SUPERVISOR,),
            check_password=False,
            actor=SEED,
            via="demo",
        )
        created.append(f"colleague {username}")
    return created


def _colleagues() -> list[User]:
    found = {user.username: user for user in User.objects.filter(username__in=DEMO_COLLEAGUES)}
    return [found[name] for name in DEMO_COLLEAGUES if name in found]


def _decide(item_id: int, user: User, judgement: Judgement) -> bool | None:
    """One colleague's decision: True when final, False when a second approval is due, None
    when it could not be made (someone else got there first, say)."""
    given = DecisionInput(judgement.verdict, judgement.reason_code, judgement.reason_text)
    try:
        return review_decide(item_id=item_id, user=user, given=given).final
    except (ReviewForbidden, ReviewInvalid) as refused:
        if judgement.verdict == Verdict.REJECT:
            logger.info("demo: %s could not decide review %s: %s", user, item_id, refused)
            return None
        # The book active now would not let it run (a visitor published a stricter one, say).
        reason = Judgement(Verdict.REJECT, "not-eligible", refused.message[:300])
        return _decide(item_id, user, reason)
    except ReviewConflict:
        return None


def demo_colleagues_work(
    now: datetime | None = None, *, limit: int = COLLEAGUE_ITEMS_PER_TICK
) -> list[int]:
    """The colleagues on duty decide up to `limit` demo items nobody has claimed for
    COLLEAGUE_AFTER, oldest first; return the ids of the items they closed."""
    colleagues = _colleagues()
    if not colleagues:
        return []
    moment = now or timezone.now()
    waiting = (
        ReviewItem.objects.filter(
            state=ReviewState.OPEN,
            claimed_by__isnull=True,
            created_at__lte=moment - COLLEAGUE_AFTER,
            action__runtime_step__step__run__source=DEMO_SOURCE,
        )
        .select_related("action", "action__tool")
        .order_by("created_at", "id")[:limit]
    )
    closed = []
    for item in waiting:
        judgement = colleague_judgement(item)
        decided = set(item.decisions.values_list("user_id", flat=True))
        # They share the work: who looks first goes by the item.
        first = item.pk % len(colleagues)
        for colleague in colleagues[first:] + colleagues[:first]:
            if colleague.pk in decided:
                continue  # a red-zone item one of them approved already: the other's turn
            final = _decide(item.pk, colleague, judgement)
            if final is None:
                break
            if final:
                closed.append(item.pk)
                logger.info(
                    "demo: %s decided review %s (%s of %s on %s): %s",
                    colleague,
                    item.pk,
                    item.kind,
                    item.action.tool.slug,
                    item.action.subject,
                    judgement.verdict,
                )
                break
    return closed

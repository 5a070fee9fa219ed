"""Opening, claiming and deciding review items, and the sweep that escalates and expires them.

Every decision runs in one transaction that locks the item's row first: two people deciding the
same item at once are served one after the other, and the second finds it decided and is told
so (ReviewConflict), never a half-applied decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from apps.actions.decision import Ruling, action_rule_now
from apps.actions.enqueue import action_enqueue, action_retry
from apps.actions.models import Action, Status
from apps.actions.params import ParamsInvalid, params_check, params_digest
from apps.actions.states import IllegalTransition, transition
from apps.audit.services import audit_batch, audit_record
from apps.core.errors import ServiceError
from apps.reviews.items import item_close, item_escalate
from apps.reviews.models import ReviewDecision, ReviewItem, State, Verdict

# The short lists a person picks a reason from; "other" asks for the reason in words.
APPROVE_REASONS: dict[str, str] = {
    "within-policy": "Within policy; the evidence checks out",
    "verified": "Verified with the customer or the source system",
    "exception": "Documented business exception",
    "other": "Other (explain)",
}
REJECT_REASONS: dict[str, str] = {
    "wrong-amount": "Wrong amount",
    "insufficient-evidence": "The evidence does not support it",
    "duplicate": "Duplicate of another action",
    "not-eligible": "Not eligible under the policy",
    "suspicious": "Looks like abuse or fraud",
    "other": "Other (explain)",
}
REASON_TEXT_MAX = 2000


class ReviewError(ServiceError):
    """A decision or claim that cannot be made; `field` names the input at fault, if any."""


class ReviewConflict(ReviewError):
    """Someone else got there first: decided, claimed, expired or withdrawn."""


class ReviewInvalid(ReviewError):
    """The decision's input is wrong (a missing reason, params the tool refuses)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors), errors[0][0])
        self.errors = errors


class ReviewForbidden(ReviewError):
    """This person may not decide this item (they own the agent, or already approved it)."""


def approval_lifetime() -> timedelta:
    """How long an approval holds: a second approval, and the run itself, must come within it."""
    return timedelta(minutes=int(getattr(settings, "REVIEW_APPROVAL_TTL_MINUTES", 60)))


def _locked(item_id: int) -> ReviewItem:
    try:
        return (
            ReviewItem.objects.select_for_update(of=("self",))
            .select_related("action", "action__agent", "action__tool", "action__book_version")
            .get(pk=item_id)
        )
    except ReviewItem.DoesNotExist:
        raise ReviewConflict("This review item does not exist.") from None


def _closed_message(item: ReviewItem) -> str:
    if item.state == State.EXPIRED:
        return "This item expired before anyone decided it; it was never run."
    if item.state == State.WITHDRAWN:
        return "This item was withdrawn (its action was drained by on-call)."
    last = item.decisions.select_related("user").order_by("-created_at").first()
    if last is None:
        return "This item was already decided."
    when = timezone.localtime(last.created_at).strftime("%H:%M:%S")
    return f"Already decided: {last.get_verdict_display()} by {last.user.get_username()} at {when}."


def review_claim(*, item_id: int, user: User) -> ReviewItem:
    with transaction.atomic():
        item = _locked(item_id)
        if not item.is_open:
            raise ReviewConflict(_closed_message(item))
        _refuse_owner(item, user)
        if item.claimed_by_id not in (None, user.pk):
            raise ReviewConflict(f"Already claimed by {_name(item.claimed_by)}.")
        if item.claimed_by_id is None:
            item.claimed_by, item.claimed_at = user, timezone.now()
            item.save(update_fields=["claimed_by", "claimed_at"])
            audit_record(
                actor=user, verb="review.claimed", target=item, subject=item.action.subject
            )
        return item


def review_unclaim(*, item_id: int, user: User) -> ReviewItem:
    with transaction.atomic():
        item = _locked(item_id)
        if item.claimed_by_id != user.pk:
            raise ReviewConflict("You have not claimed this item.")
        item.claimed_by, item.claimed_at = None, None
        item.save(update_fields=["claimed_by", "claimed_at"])
        audit_record(actor=user, verb="review.unclaimed", target=item, subject=item.action.subject)
        return item


def _refuse_owner(item: ReviewItem, user: User) -> None:
    """The owner of the proposing agent neither decides nor claims its items (a claim would
    lock every other supervisor out)."""
    agent = item.action.agent
    if agent.owner_id == user.pk:
        raise ReviewForbidden(
            f"You own {agent.slug}, the agent that proposed this: another person must decide it."
        )


def _name(user: Any) -> str:
    return str(user.get_username()) if user is not None else "nobody"


@dataclass(frozen=True)
class DecisionInput:
    verdict: str
    reason_code: str
    reason_text: str = ""
    params: dict[str, Any] | None = None  # for edit_approve: the params to run instead
    # The digest of the params the person saw (the page sends it): if they changed since, an
    # approval would approve params nobody showed them, so the decision is refused.
    seen_digest: str = ""


@dataclass
class DecisionResult:
    item: ReviewItem
    decision: ReviewDecision
    final: bool
    queued: Action | None = None
    messages: list[str] = field(default_factory=list)


def _check_input(
    item: ReviewItem, given: DecisionInput
) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """The input's problems, and the edited params in their canonical form (for edit_approve)."""
    errors: list[tuple[str, str]] = []
    if given.verdict not in Verdict.values:
        return [("verdict", f"must be one of {', '.join(Verdict.values)}")], None
    reasons = REJECT_REASONS if given.verdict == Verdict.REJECT else APPROVE_REASONS
    if not given.reason_code:
        errors.append(("reason_code", "pick a reason"))
    elif given.reason_code not in reasons:
        errors.append(("reason_code", f"must be one of {', '.join(reasons)}"))
    text = given.reason_text.strip()
    if given.reason_code == "other" and not text:
        errors.append(("reason_text", "say why in a few words (the reason is 'other')"))
    if len(text) > REASON_TEXT_MAX:
        errors.append(("reason_text", f"at most {REASON_TEXT_MAX} characters"))
    params = None
    if given.verdict == Verdict.EDIT_APPROVE:
        if not isinstance(given.params, dict):
            errors.append(("params", "must be a JSON object"))
        elif item.action.status not in RUNNABLE_AFTER_REVIEW:
            errors.append(("params", "an action that already ran cannot be edited"))
        else:
            try:
                params = params_check(item.action.tool, given.params)
            except ParamsInvalid as invalid:
                errors.extend(invalid.errors)
    return errors, params


def params_diff(before: Any, after: Any, path: str = "params") -> list[dict[str, Any]]:
    """[{field, before, after}] for every changed leaf, with dotted field names."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for name in sorted(set(before) | set(after), key=str):
            missing = object()
            old, new = before.get(name, missing), after.get(name, missing)
            if old is missing:
                changes.append({"field": f"{path}.{name}", "before": None, "after": new})
            elif new is missing:
                changes.append({"field": f"{path}.{name}", "before": old, "after": None})
            else:
                changes.extend(params_diff(old, new, f"{path}.{name}"))
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"field": path, "before": before, "after": after}]


def feedback_context(item: ReviewItem) -> dict[str, Any]:
    """What the person saw when deciding: the action as proposed and why it reached them."""
    action = item.action
    return {
        "action": str(action.pk),
        "workflow": item.workflow.slug if hasattr(item, "workflow") else None,
        "agent": action.agent.slug,
        "tool": action.tool.slug,
        "subject": action.subject,
        "params": action.params,
        "confidence": str(action.confidence) if action.confidence is not None else None,
        "reasoning": action.reasoning,
        "evidence": action.evidence,
        "decision": action.decision,
        "reasons": action.reasons,
        "book_version": action.book_version.number if action.book_version else None,
        "kind": item.kind,
        "zone": item.zone,
        "status": action.status,
        "error": item.error or action.error,
    }


# An action in one of these states runs when people approve its item: a held action, or a
# fallback (failed or drained) that an approval runs again as a new action.
RUNNABLE_AFTER_REVIEW = (Status.PENDING_REVIEW, Status.FAILED, Status.CANCELLED)


def _params_to_run(item: ReviewItem, edited: dict[str, Any] | None) -> dict[str, Any]:
    """The params an approval now would run: the edit given, else the last edit still waiting
    for approvals, else the action's own."""
    if edited is not None:
        return edited
    if item.pending_params is not None:
        return dict(item.pending_params)
    return dict(item.action.params)


def _valid_approvals(item: ReviewItem, ruling: Ruling, now: datetime) -> Any:
    """The approvals that still count for the params `ruling` decided: of these very params,
    under this book version, not yet expired."""
    return item.decisions.filter(
        verdict__in=(Verdict.APPROVE, Verdict.EDIT_APPROVE),
        params_digest=ruling.digest,
        book_version=ruling.version,
        expires_at__gt=now,
    )


def subject_after_edit(subject: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """The subject of edited params: `employee:E-101` becomes `employee:E-105` when the param
    that named E-101 now names E-105, so that the item shows what will run."""
    kind, sep, name = subject.partition(":")
    if not sep:
        return subject
    for key, old in before.items():
        new = after.get(key)
        if _names(old) and str(old) == name and new != old and _names(new):
            return f"{kind}:{new}"
    return subject


def _names(value: Any) -> bool:
    """Whether a param's value can name a subject (text or a whole number)."""
    return isinstance(value, str | int) and not isinstance(value, bool)


def review_decide(*, item_id: int, user: User, given: DecisionInput) -> DecisionResult:
    """Record one person's decision and apply it once it is final.

    Held action: approve (after the second approval, for red-zone items needing two) queues it
    at once; reject ends it. Fallback of an action that could not run: approve runs it again
    as a new action. Spot check of an executed action: approve confirms it, reject records the
    rework.

    An approval that would make params run asks the active Decision Book first, by the gate's
    decision function, on exactly those params (edited or not, under the version active now):
    a deny is refused naming the policy; a hold needs the approvals a fresh proposal would
    need. Each approval is bound to the params' digest, the version and an expiry; an edit
    starts the count again, with the editor as its first approver."""
    # Audit events appended when the block ends, after the queue's tally moved: the chain's
    # head is always taken last (as the gate does), so no two transactions wait in a cycle.
    with transaction.atomic(), audit_batch():
        item = _locked(item_id)
        action = item.action
        if not item.is_open:
            raise ReviewConflict(_closed_message(item))
        if item.claimed_by_id not in (None, user.pk):
            raise ReviewConflict(f"Claimed by {_name(item.claimed_by)}: unclaimed items only.")
        _refuse_owner(item, user)
        errors, edited = _check_input(item, given)
        if errors:
            raise ReviewInvalid(errors)
        if given.seen_digest and given.seen_digest != params_digest(_params_to_run(item, None)):
            raise ReviewConflict(
                "The params of this item changed since you opened it (someone edited them): "
                "look at them again before deciding."
            )

        now = timezone.now()
        approving = given.verdict in (Verdict.APPROVE, Verdict.EDIT_APPROVE)
        to_run = _params_to_run(item, edited)
        ruling: Ruling | None = None
        if approving and action.status in RUNNABLE_AFTER_REVIEW:
            ruling = action_rule_now(action, to_run, at=now)
            if not ruling.may_run_after_approval:
                if edited is not None:
                    raise ReviewInvalid([("params", ruling.refusal())])
                raise ReviewForbidden(ruling.refusal())
            digest = ruling.digest
            if _valid_approvals(item, ruling, now).filter(user=user).exists():
                raise ReviewForbidden(
                    "You already approved these params: a second, different person must "
                    "approve them."
                )
            required = ruling.approvals_required
            approvals = 1 + _valid_approvals(item, ruling, now).count()
        else:
            digest = params_digest(to_run)
            if item.decisions.filter(user=user, params_digest=digest).exists():
                raise ReviewForbidden(
                    "You already approved this item: a second, different person must approve it."
                )
            required, approvals = item.approvals_required, 1
        final = not approving or approvals >= required

        context = feedback_context(item)
        diff = params_diff(action.params, edited) if edited is not None else []
        decision = ReviewDecision.objects.create(
            item=item,
            user=user,
            verdict=given.verdict,
            reason_code=given.reason_code,
            reason_text=given.reason_text.strip(),
            context=context,
            params_after=edited,
            diff=diff,
            final=final,
            created_at=now,
            params_digest=digest,
            book_version=ruling.version if ruling is not None else None,
            expires_at=now + approval_lifetime() if ruling is not None else None,
        )
        if edited is not None:
            _edit(item, action, edited, actor=user, now=now)
        if ruling is not None and required != item.approvals_required:
            item.approvals_required = required
            item.save(update_fields=["approvals_required"])
        audit_record(
            actor=user,
            verb=f"review.{given.verdict}",
            target=item,
            subject=action.subject,
            data={
                "action": str(action.pk),
                "reason": given.reason_code,
                "reason_text": given.reason_text.strip(),
                "diff": diff,
                "final": final,
                "approvals": approvals if approving else None,
                "params_digest": digest,
                "book_version": ruling.version.number if ruling and ruling.version else None,
                "decision": ruling.decision if ruling is not None else None,
            },
        )
        result = DecisionResult(item=item, decision=decision, final=final)
        if not final:
            # Approval 1 of 2: recorded; the item waits, unclaimed, for a second person.
            item.claimed_by, item.claimed_at = None, None
            item.save(update_fields=["claimed_by", "claimed_at"])
            result.messages.append(
                f"Approval {approvals} of {required} recorded: a second person must approve."
            )
            return result

        if item.claimed_at is None:
            # Decided without an explicit claim: the review time starts when the item was opened.
            item.claimed_by, item.claimed_at = user, item.created_at
        item.outcome = given.verdict
        result.queued = _apply(item, action, user, given, to_run, ruling, now)
        item_close(item, State.DECIDED, now, "outcome", "claimed_by", "claimed_at", "retry")
        return result


def _edit(
    item: ReviewItem, action: Action, params: dict[str, Any], *, actor: User, now: datetime
) -> None:
    """Keep edited params for the approvals still to come. A held action takes them (and the
    subject they name) at once, so that every later reader sees what will run; a fallback's
    failed action keeps its record, and the item carries the params its retry will run."""
    item.pending_params = params
    item.save(update_fields=["pending_params"])
    if action.status != Status.PENDING_REVIEW:
        return
    subject = subject_after_edit(action.subject, action.params, params)
    Action.objects.filter(pk=action.pk).update(params=params, subject=subject, updated_at=now)
    if subject != action.subject:
        audit_record(
            actor=actor,
            verb="action.subject_changed",
            target=action,
            subject=subject,
            data={"from": action.subject, "to": subject, "review": item.pk},
        )
    action.params, action.subject = params, subject


def _apply(
    item: ReviewItem,
    action: Action,
    user: User,
    given: DecisionInput,
    params: dict[str, Any],
    ruling: Ruling | None,
    now: datetime,
) -> Action | None:
    data: dict[str, Any] = {"review": item.pk, "reason": given.reason_code}
    approving = given.verdict != Verdict.REJECT
    if action.status == Status.PENDING_REVIEW:
        if not approving:
            transition(action, Status.REJECTED, actor=user, data=data, finished_at=now)
            return None
        assert ruling is not None
        assert ruling.version is not None
        expires = _approval_expiry(item, ruling, now)
        data |= {
            "book_version": ruling.version.number,
            "params_digest": ruling.digest,
            "approval_expires_at": expires.isoformat(),
        }
        transition(action, Status.APPROVED, actor=user, data=data, book_version=ruling.version)
        return action_enqueue(action, ruling=ruling, actor=user, approval_expires_at=expires)
    if action.status in (Status.FAILED, Status.CANCELLED) and approving:
        assert ruling is not None
        expires = _approval_expiry(item, ruling, now)
        retry = action_retry(
            action,
            params=params,
            ruling=ruling,
            actor=user,
            note=data,
            approval_expires_at=expires,
        )
        item.retry = retry
        return retry
    # A spot check (or a rejected fallback): the decision is the record; nothing runs.
    return None


def _approval_expiry(item: ReviewItem, ruling: Ruling, now: datetime) -> datetime:
    """The approvals hold until the first of them expires (this one included)."""
    first = (
        _valid_approvals(item, ruling, now)
        .order_by("expires_at")
        .values_list("expires_at", flat=True)
        .first()
    )
    return first or now + approval_lifetime()


@dataclass
class SweepReport:
    escalated: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)


def reviews_sweep(*, now: datetime | None = None) -> SweepReport:
    """Escalate overdue items to their escalation owner; expire those past their expiry.

    An expired held action becomes `expired` and never runs. Each item is handled in its own
    transaction, locked and re-checked, so a person deciding it at the same moment wins or
    loses cleanly."""
    now = now or timezone.now()
    report = SweepReport()
    overdue = ReviewItem.objects.filter(
        state=State.OPEN, deadline__lt=now, escalated_at__isnull=True
    ).values_list("pk", flat=True)
    for item_id in list(overdue[:500]):
        with transaction.atomic():
            item = _locked(item_id)
            if item.is_open and item.escalated_at is None:
                item_escalate(
                    item,
                    to_user_id=item.action.escalation_owner_id,
                    actor="system:sla",
                    note="overdue",
                    at=now,
                )
                report.escalated.append(item.pk)
    stale = ReviewItem.objects.filter(state=State.OPEN, expires_at__lt=now).values_list(
        "pk", flat=True
    )
    for item_id in list(stale[:500]):
        with transaction.atomic(), audit_batch():  # the chain head last, as in review_decide
            item = _locked(item_id)
            if not item.is_open:
                continue
            action = item.action
            if action.status == Status.PENDING_REVIEW:
                try:
                    transition(
                        action,
                        Status.EXPIRED,
                        actor="system:sla",
                        data={"review": item.pk, "deadline": item.deadline.isoformat()},
                        finished_at=now,
                    )
                except IllegalTransition:
                    continue
            item_close(item, State.EXPIRED, now)
            audit_record(
                actor="system:sla", verb="review.expired", target=item, subject=action.subject
            )
            report.expired.append(item.pk)
    return report

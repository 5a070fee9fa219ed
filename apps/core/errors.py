"""The base of the errors services raise for a request they refuse.

Each app keeps its own class (ReviewError, SwitchError, BookError, ...) so that its callers
catch only what that app can refuse; all of them carry the same two things, so that a page or
an API can show any of them the same way: the sentence for a person, and the input at fault."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal: `message` says why, for a person; `field` names the input at fault, or is
    empty when the refusal is about the state of things rather than one input."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

"""Staff API tokens: how a person's scripts and pagers reach the staff API without a browser
session. A token acts as its user, with that user's roles at the moment of each request."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StaffToken(models.Model):
    """Only a SHA-256 digest of the token is stored; the token itself is printed once, when it
    is made. Tokens carry 256 bits of randomness, so a fast hash is enough."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_tokens"
    )
    prefix = models.CharField(max_length=12, unique=True, help_text="public part, for lookup")
    digest = models.CharField(max_length=64)
    label = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.prefix}"

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class EscapementAdminConfig(AdminConfig):
    """The Django admin, served by our site class so that only the admin role gets in."""

    default_site = "apps.accounts.admin_site.EscapementAdminSite"

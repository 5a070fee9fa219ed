from __future__ import annotations

from typing import Any

from django.db import migrations


def create_head(apps: Any, schema_editor: Any) -> None:
    apps.get_model("audit", "ChainHead").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(create_head, migrations.RunPython.noop)]

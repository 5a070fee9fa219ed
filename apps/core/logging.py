from __future__ import annotations

import logging

from apps.core.request_context import get_request_id


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request or task it was written for."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = get_request_id()
        return True

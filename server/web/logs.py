"""Structured logs: one JSON object per line, each carrying the request id when there is one."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from server.api.app_state import CURRENT_REQUEST_ID
from server.web.email_routes import VARIANT_HEADER, ImageResponse
from server.web.request_handling import REQUEST_ID_HEADER


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = CURRENT_REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class JsonAccessLogger(AbstractAccessLogger):
    """One line per request: route, status, time, and for images the outcome and variant."""

    @property
    def enabled(self) -> bool:
        """Skip building the line when INFO is off (a hot path at thousands of opens/s)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "request_id": response.headers.get(REQUEST_ID_HEADER),
        }
        if isinstance(response, ImageResponse) and response.outcome is not None:
            fields["outcome"] = response.outcome
            fields["variant"] = response.headers.get(VARIANT_HEADER)
        self.logger.info("request", extra={"fields": fields})

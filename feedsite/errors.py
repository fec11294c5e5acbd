"""Domain errors: services raise these; feedsite.api.errors maps them to 4xx responses."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    status_code = 400
    code = "invalid"


MAX_ID = 2**63 - 1  # a bigint: every id the database can hold


def check_id(value: int, field: str) -> int:
    """An id from a URL or a body: beyond a bigint is a 400 naming the field (PostgreSQL and
    SQLite would each fail differently)."""
    if not 0 <= value <= MAX_ID:
        raise InvalidInput(f"{field} must be an integer from 0 to 2^63-1", field=field)
    return value


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Forbidden(DomainError):
    status_code = 403
    code = "permission_denied"

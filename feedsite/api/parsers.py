"""The one JSON parser of the API: strict, bounded and the same on every database.

orjson refuses what PostgreSQL cannot store or JSON does not allow (NaN, Infinity, numbers that
overflow a double, lone surrogates, invalid UTF-8); on top of that a body may nest at most
FEEDSITE_JSON_MAX_DEPTH levels, may hold no NUL character in a string or key (PostgreSQL's
text and jsonb refuse it, SQLite would store it), and may be at most
DATA_UPLOAD_MAX_MEMORY_SIZE bytes (413). Every refusal is a JSON 400 (or 413) naming what is
wrong, before anything reaches the database or Redis."""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

# What PostgreSQL's text and jsonb cannot hold: NUL, and UTF-16 surrogates (lone ones cannot
# be encoded; a string from a strict parser never holds a pair).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def json_problem(value: Any, max_depth: int) -> str | None:
    """What makes a parsed body unacceptable, with where it is ("metadata.tags[2]"), or None.
    Iterative (a deep body cannot exhaust the stack). Pure."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict | list) and depth > max_depth:
            return f"{path or 'body'}: JSON nested deeper than {max_depth} levels"
        if isinstance(node, dict):
            for key, child in node.items():
                if UNSTORABLE.search(key):
                    return f"{path or 'body'}: a key holds a NUL character or a lone surrogate"
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))
        elif isinstance(node, str) and UNSTORABLE.search(node):
            return f"{path or 'body'}: strings cannot hold a NUL character or a lone surrogate"
    return None


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > cap:
            raise BodyTooLarge(f"the request body is over {cap} bytes")
        raw = stream.read(cap + 1) if stream is not None else b""
        if len(raw) > cap:
            raise BodyTooLarge(f"the request body is over {cap} bytes")
        if not raw:
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        problem = json_problem(data, settings.FEEDSITE_JSON_MAX_DEPTH)
        if problem:
            raise ParseError(problem)
        return data

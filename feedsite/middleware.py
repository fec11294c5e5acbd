"""The first middleware: who the client is, how big its body may be, and how fast it may guess
passwords on the HTML login forms; before anything reads the body or the database.

- Proxy headers are believed only from FEEDSITE_TRUSTED_PROXIES (addresses, networks, or
  "unix" for a peer on the Unix socket, which only the proxy that `make run` starts can reach).
  From anyone else X-Forwarded-For/-Proto/-Host are dropped; from a trusted proxy REMOTE_ADDR
  becomes the right-most forwarded address that is not itself a trusted proxy. Throttles, logs
  and SECURE_PROXY_SSL_HEADER then see the real client.
- A declared body over DATA_UPLOAD_MAX_MEMORY_SIZE is a JSON 413 before it is read.
- The admin's and the browsable API's login forms share the API login's throttle: per
  (client address, username), with Retry-After; it fails open when Redis is down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from feedsite.addresses import address_bucket

LOGIN_FORMS = ("/admin/login/", "/api-auth/login/")
FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


@lru_cache(maxsize=1)
def _trusted(spec: tuple[str, ...]) -> tuple[bool, tuple]:
    nets = tuple(ipaddress.ip_network(s, strict=False) for s in spec if s != "unix")
    return "unix" in spec, nets


def is_trusted_proxy(addr: str, spec: tuple[str, ...]) -> bool:
    """Whether a peer address is one of the configured proxies ('' is the Unix socket). Pure."""
    unix, nets = _trusted(spec)
    if not addr:
        return unix
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def client_address(peer: str, forwarded_for: str | None, spec: tuple[str, ...]) -> str:
    """The client: the peer, or behind trusted proxies the right-most forwarded address that
    is not a trusted proxy (entries left of it were written by the client and prove nothing).
    Pure."""
    if not is_trusted_proxy(peer, spec) or not forwarded_for:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop, spec):
            return hop
    return hops[0] if hops else peer


def apply_proxy_headers(meta: dict) -> None:
    """REMOTE_ADDR from a trusted proxy's X-Forwarded-For; X-Forwarded-* dropped from anyone
    else (also used by the WSGI fast lane, which runs before the middleware)."""
    spec = tuple(settings.FEEDSITE_TRUSTED_PROXIES)
    peer = meta.get("REMOTE_ADDR") or ""
    if is_trusted_proxy(peer, spec):
        meta["REMOTE_ADDR"] = client_address(peer, meta.get("HTTP_X_FORWARDED_FOR"), spec)
    else:
        for header in FORWARDED:
            meta.pop(header, None)


class RequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        apply_proxy_headers(meta)
        declared = meta.get("CONTENT_LENGTH") or ""
        cap = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if declared.isdigit() and int(declared) > cap:
            return JsonResponse(
                {"detail": f"the request body is over {cap} bytes", "code": "too_large"},
                status=413,
            )
        if request.method == "POST" and request.path in LOGIN_FORMS:
            refused = login_form_throttled(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        """The database down under a view outside DRF (the admin, the lean feed read): a JSON
        503, as DRF's exception handler answers, not a 500."""
        from feedsite.api.errors import DATABASE_DOWN, DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS

        if isinstance(exc, DATABASE_DOWN):
            response = JsonResponse(DATABASE_UNAVAILABLE, status=503)
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        return None


def login_form_throttled(request: HttpRequest) -> HttpResponse | None:
    from feedsite.api.throttles import count_window, parse_rate

    limit, window = parse_rate(settings.FEEDSITE_THROTTLE_RATES["login"])
    username = str(request.POST.get("username", ""))[:150]
    ident = f"{address_bucket(request.META.get('REMOTE_ADDR', ''))}:{username}"  # LoginThrottle's
    counted = count_window("login", ident, window)
    if counted is None:
        return None  # Redis unavailable: fail open
    hits, left = counted
    if hits <= limit:
        return None
    response = HttpResponse(
        f"Too many login attempts; try again in {left} seconds.\n",
        status=429,
        content_type="text/plain",
    )
    response["Retry-After"] = str(left)
    return response

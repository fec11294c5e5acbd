"""OpenAPI extensions: how the schema describes our authentication."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class CachedTokenScheme(OpenApiAuthenticationExtension):
    target_class = "feedsite.api.auth.CachedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Token <token>`, from POST /api/auth/token/ (expires; revoke with "
                "POST /api/auth/logout/ or /api/auth/logoutall/)"
            ),
        }

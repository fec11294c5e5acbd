from django.apps import AppConfig


class FeedsiteConfig(AppConfig):
    name = "feedsite"

    def ready(self) -> None:
        from .api import signals  # noqa: F401

from django.apps import AppConfig


class FeedsiteConfig(AppConfig):
    name = "feedsite"

    def ready(self) -> None:
        from .api import schema, signals  # noqa: F401 - connects receivers, registers extensions

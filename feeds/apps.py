from django.apps import AppConfig


class FeedsConfig(AppConfig):
    name = "feeds"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the model-signal receivers

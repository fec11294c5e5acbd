from django.apps import AppConfig


class FollowsConfig(AppConfig):
    name = "follows"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the counter receivers

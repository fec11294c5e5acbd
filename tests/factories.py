from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from follows.models import UserStats


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-correct-horse-9")

    @factory.post_generation
    def stats(self, create, extracted, **kwargs):
        if create:
            self.save()
            UserStats.objects.get_or_create(user=self)

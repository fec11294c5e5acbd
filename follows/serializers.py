from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from rest_framework import serializers

User = get_user_model()


class UserSerializer(serializers.Serializer):
    """The only public shape of a user: no email, no flags, no password hash."""

    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    followers_count = serializers.SerializerMethodField()
    following_count = serializers.SerializerMethodField()
    is_celebrity = serializers.SerializerMethodField()

    def _stats(self, user) -> tuple[int, int]:
        stats = getattr(user, "stats", None)
        return (stats.followers_count, stats.following_count) if stats else (0, 0)

    def get_followers_count(self, user) -> int:
        return self._stats(user)[0]

    def get_following_count(self, user) -> int:
        return self._stats(user)[1]

    def get_is_celebrity(self, user) -> bool:
        return self.context["is_pull_author"](self._stats(user)[0])


class UserPageSerializer(serializers.Serializer):
    items = UserSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    password = serializers.CharField(
        max_length=128, write_only=True, style={"input_type": "password"}
    )


class RegisterSerializer(CredentialsSerializer):
    """A new account. The schema states the rules it can (username pattern, password length);
    the password must also not be too common, all digits or like the username."""

    username = serializers.RegexField(
        r"^[\w.@+-]+\Z", max_length=150, help_text="letters, digits and @/./+/-/_ only"
    )
    password = serializers.CharField(
        min_length=8, max_length=128, write_only=True, style={"input_type": "password"}
    )
    email = serializers.EmailField(
        required=False,
        allow_blank=True,
        max_length=254,
        help_text="optional: where notifications go while you are offline",
    )

    def validate(self, attrs: dict) -> dict:
        password_validation.validate_password(attrs["password"], User(username=attrs["username"]))
        return attrs


class RegisteredSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class RelatedUserSerializer(serializers.Serializer):
    """A user one has blocked or muted, and since when."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    created_at = serializers.DateTimeField()


class RelatedUserPageSerializer(serializers.Serializer):
    items = RelatedUserSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class MeSerializer(UserSerializer):
    """The caller's own profile: the public shape plus the email address."""

    email = serializers.CharField(
        read_only=True, help_text="where notification emails go; empty when none was given"
    )

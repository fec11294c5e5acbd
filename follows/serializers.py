from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from rest_framework import serializers

from activities.serializers import object_id_field, object_type_field

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


class ObjectRefSerializer(serializers.Serializer):
    """An object as activities name it (``object_type:object_id``): the same rules as a
    publish's object_type and object_id. Given as body fields or query parameters, never in
    the path: ids may hold "/" ("owner/repo")."""

    type = object_type_field(help_text="the object's type, as activities' object_type")
    id = object_id_field(help_text="the object's id, as activities' object_id; may contain '/'")


class ObjectSerializer(serializers.Serializer):
    """An object and its followers."""

    type = serializers.CharField()
    id = serializers.CharField()
    followers_count = serializers.IntegerField(min_value=0)
    is_celebrity = serializers.BooleanField(
        help_text="followers_count is at or above the celebrity threshold: followers pull the "
        "object's activities at read time"
    )


class ObjectFollowedSerializer(ObjectSerializer):
    """The answer to following an object: the object and when the follow began."""

    created_at = serializers.DateTimeField()


class FollowedObjectSerializer(serializers.Serializer):
    """An object the caller follows, and since when."""

    type = serializers.CharField()
    id = serializers.CharField()
    created_at = serializers.DateTimeField()


class FollowedObjectPageSerializer(serializers.Serializer):
    items = FollowedObjectSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)

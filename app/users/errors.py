"""What can go wrong with a user: a missing one, an identity someone else holds."""

from __future__ import annotations

from app.errors import Conflict, NotFound


class UserNotFound(NotFound):
    code = "user_not_found"
    detail = "No user has this id."


class UsernameTaken(Conflict):
    code = "username_taken"
    detail = "This username is already taken."


class EmailTaken(Conflict):
    code = "email_taken"
    detail = "An account with this email already exists."

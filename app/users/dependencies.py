"""What a user request needs beyond its body: the user id in the path."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from app.db import MAX_ID

UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]

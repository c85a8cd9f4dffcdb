"""The base every request body shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """A body a caller sends: an unknown field is refused (422), never silently dropped, so a
    misspelt `titel` or a smuggled `is_admin` cannot pass unnoticed. Subclasses may add to
    `model_config` (examples); pydantic merges it with this one."""

    model_config = ConfigDict(extra="forbid")

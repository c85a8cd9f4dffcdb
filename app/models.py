"""Every table's model, imported in one place so metadata is complete for alembic."""

from __future__ import annotations


def load_all_models() -> None:
    """Import each domain's models, registering their tables on `Base.metadata`."""
    import app.accounts.models
    import app.images.models
    import app.users.models  # noqa: F401

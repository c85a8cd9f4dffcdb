"""Revoking the single-use tokens mailed to a user when their credentials change."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import AccountToken

# A reset link or an email change still waiting for its link would let whoever started it
# take the account back after the owner changed the password or signed out everywhere.
# Registration links only confirm an address and are left alone.
CREDENTIAL_TOKEN_PURPOSES = ("reset_password", "verify_email")


async def revoke_credential_tokens(session: AsyncSession, user_id: int) -> None:
    """Delete the user's pending password-reset and email-change tokens."""
    await session.execute(
        delete(AccountToken).where(
            AccountToken.user_id == user_id,
            AccountToken.purpose.in_(CREDENTIAL_TOKEN_PURPOSES),
        )
    )

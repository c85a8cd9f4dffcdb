"""Account endpoints: register and verify, sign in and out, refresh, passwords, profile."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.accounts import service, sessions
from app.accounts.dependencies import (
    CurrentAuth,
    CurrentUser,
    PasswordHasherDep,
    SessionClientDep,
    TokenServiceDep,
)
from app.accounts.errors import (
    AccountNotVerified,
    InactiveAccount,
    InvalidCredentials,
    InvalidLinkToken,
    InvalidToken,
    NotAuthenticated,
    SessionNotFound,
    WrongPassword,
)
from app.accounts.mails import AccountOutboxDep
from app.accounts.password_policy import WeakPassword
from app.accounts.schemas import (
    ChangePasswordRequest,
    DeleteAccountRequest,
    LinkTokenRequest,
    LoginForm,
    LoginRequest,
    Message,
    ProfileUpdate,
    RefreshRequest,
    RegisterRequest,
    ResendVerificationRequest,
    ResetPasswordRequest,
    SendResetLinkRequest,
    SessionList,
    SessionRead,
    TokenResponse,
)
from app.accounts.sessions import TokenPair
from app.db import MAX_ID, SessionDep
from app.errors import InvalidInput, error_responses
from app.rate_limits import ClientAddress, RateLimited, RateLimiterDep
from app.state import SettingsDep, StateDep
from app.users.errors import EmailTaken, UsernameTaken
from app.users.models import User
from app.users.schemas import UserPrivate

router = APIRouter(prefix="/accounts", tags=["accounts"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _login_body(request: Request) -> LoginRequest:
    """The credentials, from JSON `{login, password}` or from the OAuth2 password form."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if content_type in _FORM_TYPES:
            form = LoginForm.model_validate(dict((await request.form()).items()))
            return LoginRequest(login=form.username, password=form.password)
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {"schema": LoginForm.model_json_schema()},
        },
    }
}


def _token_response(pair: TokenPair, response: Response) -> TokenResponse:
    # RFC 6749 section 5.1: no cache, shared or private, may keep a token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return TokenResponse(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )


SessionIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The session's id.")]

RESET_LINK_SENT = "If an account matches, a link to reset its password has been mailed."
VERIFICATION_LINK_SENT = (
    "If an unconfirmed account matches, a new link to confirm it has been mailed."
)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPrivate,
    summary="Create an account",
    responses=error_responses(UsernameTaken, EmailTaken, WeakPassword, RateLimited),
)
async def register(
    body: RegisterRequest,
    session: SessionDep,
    hasher: PasswordHasherDep,
    limiter: RateLimiterDep,
    outbox: AccountOutboxDep,
    settings: SettingsDep,
    address: ClientAddress,
) -> User:
    """Create an account. The password needs 8 to 128 characters, not only digits, not
    close to the username or email, and not a common password. With
    REGISTER_VERIFICATION_ENABLED a confirmation link is mailed, required before signing in."""
    return await service.register(
        session,
        hasher,
        limiter,
        outbox,
        settings,
        address=address,
        username=body.username,
        email=body.email,
        password=body.password,
    )


@router.post(
    "/verify-registration",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Confirm a new account",
    responses=error_responses(InvalidLinkToken, InvalidInput),
)
async def verify_registration(body: LinkTokenRequest, session: SessionDep) -> None:
    """Confirm the account with the token from the registration mail (single use)."""
    await service.verify_registration(session, token=body.token)


@router.post(
    "/resend-verification",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    summary="Mail a new confirmation link",
    responses=error_responses(InvalidInput, RateLimited),
)
async def resend_verification(
    body: ResendVerificationRequest,
    state: StateDep,
    background: BackgroundTasks,
    limiter: RateLimiterDep,
    address: ClientAddress,
) -> Message:
    """Mail a new confirmation link to the unconfirmed account with this username or email.
    The answer is the same, and as quick, whether or not such an account exists or is
    confirmed: the lookup and the mail happen after it. At most
    RATE_LIMIT_RESEND_VERIFICATION_PER_ACCOUNT mails per account; beyond that the answer is
    still 202 and no mail goes out."""
    await service.count_verification_resend(limiter, address=address)
    background.add_task(
        service.mail_verification_link,
        state.sessionmaker,
        limiter,
        state.mailer,
        state.account_mails,
        login=body.login,
    )
    return Message(detail=VERIFICATION_LINK_SENT)


@router.post(
    "/login",
    response_model=TokenResponse,
    summary="Sign in and get a token pair",
    openapi_extra=_LOGIN_BODY,
    responses=error_responses(
        InvalidCredentials, InactiveAccount, AccountNotVerified, InvalidInput, RateLimited
    ),
)
async def login(
    body: Annotated[LoginRequest, Depends(_login_body)],
    response: Response,
    session: SessionDep,
    hasher: PasswordHasherDep,
    tokens: TokenServiceDep,
    limiter: RateLimiterDep,
    address: ClientAddress,
    client: SessionClientDep,
) -> TokenResponse:
    """Exchange a username (or email) and password for an access token and a refresh token,
    starting a session. Accepts JSON `{login, password}` or the OAuth2 password form."""
    pair = await service.login(
        session,
        hasher,
        tokens,
        limiter,
        address=address,
        login=body.login,
        password=body.password,
        client=client,
    )
    return _token_response(pair, response)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    summary="Trade a refresh token for a new pair",
    responses=error_responses(InvalidToken, InvalidInput),
)
async def refresh(
    body: RefreshRequest,
    response: Response,
    session: SessionDep,
    tokens: TokenServiceDep,
    client: SessionClientDep,
) -> TokenResponse:
    """Rotate: the refresh token stops working and a new pair is returned. A refresh token
    used twice ends its whole session (the second use is taken as theft)."""
    pair = await sessions.refresh_session(session, tokens, body.refresh_token, client)
    return _token_response(pair, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out of this session",
    responses=error_responses(NotAuthenticated),
)
async def logout(auth: CurrentAuth, session: SessionDep) -> None:
    """End the current session: its access and refresh tokens stop working at once."""
    await sessions.end_session(session, auth.session_id)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out everywhere",
    responses=error_responses(NotAuthenticated),
)
async def logout_all(user: CurrentUser, session: SessionDep) -> None:
    """End every session of the signed-in user, this one included; pending password-reset
    and email-change links stop working too."""
    await service.sign_out_everywhere(session, user)


@router.post(
    "/change-password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change the password",
    responses=error_responses(NotAuthenticated, WrongPassword, WeakPassword, RateLimited),
)
async def change_password(
    body: ChangePasswordRequest,
    auth: CurrentAuth,
    session: SessionDep,
    hasher: PasswordHasherDep,
    limiter: RateLimiterDep,
    outbox: AccountOutboxDep,
) -> None:
    """Set a new password (the old one is required); every other session is ended, pending
    password-reset and email-change links stop working, and a notice is mailed to the
    account's address. Wrong passwords count against the account's sign-in limit."""
    await service.change_password(
        session,
        hasher,
        limiter,
        outbox,
        auth.user,
        current_session_id=auth.session_id,
        old_password=body.old_password,
        password=body.password,
    )


@router.post(
    "/send-reset-password-link",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    summary="Mail a password reset link",
    responses=error_responses(InvalidInput, RateLimited),
)
async def send_reset_password_link(
    body: SendResetLinkRequest,
    background: BackgroundTasks,
    state: StateDep,
    address: ClientAddress,
) -> Message:
    """Mail a single-use reset link to the account with this username or email. The answer
    is the same, and as quick, whether or not such an account exists: the lookup and the
    mail happen after it. At most RATE_LIMIT_RESET_PER_ACCOUNT mails per account; beyond
    that the answer is still 202 and no mail goes out."""
    await service.count_reset_link_request(state.rate_limiter, address=address)
    background.add_task(
        service.mail_reset_link,
        state.sessionmaker,
        state.rate_limiter,
        state.mailer,
        state.account_mails,
        login=body.login,
    )
    return Message(detail=RESET_LINK_SENT)


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with a mailed token",
    responses=error_responses(InvalidLinkToken, WeakPassword),
)
async def reset_password(
    body: ResetPasswordRequest,
    session: SessionDep,
    hasher: PasswordHasherDep,
    outbox: AccountOutboxDep,
) -> None:
    """Set a new password with the token from the reset mail; the token works once, every
    session of the account ends and a notice is mailed. Sign in with the new password next."""
    await service.reset_password(session, hasher, outbox, token=body.token, password=body.password)


@router.get(
    "/profile",
    response_model=UserPrivate,
    summary="The signed-in user's profile",
    responses=error_responses(NotAuthenticated),
)
async def profile(user: CurrentUser) -> User:
    """The signed-in user, email included."""
    return user


@router.patch(
    "/profile",
    response_model=UserPrivate,
    summary="Change one's username or email",
    responses=error_responses(
        NotAuthenticated, WrongPassword, UsernameTaken, EmailTaken, InvalidInput, RateLimited
    ),
)
async def update_profile(
    body: ProfileUpdate,
    user: CurrentUser,
    session: SessionDep,
    hasher: PasswordHasherDep,
    limiter: RateLimiterDep,
    outbox: AccountOutboxDep,
    settings: SettingsDep,
) -> User:
    """Change the username, or the email. Changing the email needs the current `password`
    (wrong ones count against the account's sign-in limit). With
    REGISTER_VERIFICATION_ENABLED a new email takes effect only after the link mailed to it
    is followed (POST /accounts/verify-email). When the email changes, the old address gets
    a notice."""
    return await service.update_profile(
        session,
        hasher,
        limiter,
        outbox,
        settings,
        user,
        username=body.username,
        email=body.email,
        password=body.password,
    )


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Confirm a new email address",
    responses=error_responses(InvalidLinkToken, EmailTaken, InvalidInput),
)
async def verify_email(
    body: LinkTokenRequest, session: SessionDep, outbox: AccountOutboxDep
) -> None:
    """Switch the account to the address the token was mailed to (single use); the old
    address gets a notice."""
    await service.verify_email(session, outbox, token=body.token)


@router.delete(
    "/profile",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete one's account",
    responses=error_responses(NotAuthenticated, WrongPassword, InvalidInput, RateLimited),
)
async def delete_profile(
    body: DeleteAccountRequest,
    user: CurrentUser,
    session: SessionDep,
    hasher: PasswordHasherDep,
    limiter: RateLimiterDep,
) -> None:
    """Delete the account (the password is required; wrong ones count against the
    account's sign-in limit): the user, their sessions and their images are gone."""
    await service.delete_account(session, hasher, limiter, user, password=body.password)


@router.get(
    "/sessions",
    response_model=SessionList,
    summary="Your sign-in sessions",
    responses=error_responses(NotAuthenticated),
)
async def list_sessions(auth: CurrentAuth, session: SessionDep) -> SessionList:
    """The signed-in user's live sessions, newest first, with where each was last used;
    `current` marks the one of the calling token."""
    rows = await sessions.list_sessions(session, auth.user.id)
    return SessionList(items=[SessionRead.of(row, current_id=auth.session_id) for row in rows])


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End one of your sessions",
    responses=error_responses(NotAuthenticated, SessionNotFound, InvalidInput),
)
async def end_session(session_id: SessionIdPath, auth: CurrentAuth, session: SessionDep) -> None:
    """End one of the signed-in user's sessions at once: its access and refresh tokens stop
    working. Another user's session id answers 404 `session_not_found`."""
    await sessions.end_own_session(session, auth.user.id, session_id)

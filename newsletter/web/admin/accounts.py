"""Operator accounts: argon2id password hashes, names and passwords checked before storing."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from newsletter import storage
from newsletter.models import Operator

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" would only cost CPU

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


class AccountError(ValueError):
    """A bad operator name or password: the message says which and why."""


def check_username(name: str) -> str:
    """The name, or AccountError: 1 to 64 letters, digits, `_ . @ -`, starting with one."""
    if not USERNAME.fullmatch(name):
        raise AccountError(
            f"{name!r} is not a valid operator name: use 1 to 64 letters, digits, _ . @ or -,"
            " starting with a letter or digit."
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"The password must have at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"The password must have at most {MAX_PASSWORD} characters.")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash (salt and parameters included) of a checked password."""
    return _HASHER.hash(check_password(password))


@cache
def _decoy_hash() -> str:
    return _HASHER.hash("a password nobody has")


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`. Without an account (`stored` None) a decoy hash
    is checked all the same, so an unknown name takes as long as a wrong password."""
    if len(password) > MAX_PASSWORD:
        password = password[:MAX_PASSWORD]  # fails below, in the same time as any other
    try:
        return _HASHER.verify(stored or _decoy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether a hash was made with weaker parameters than the library's current ones."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def add_operator(session: Session, username: str, password: str, now: datetime) -> Operator:
    """Create an operator account, or set a new password for an existing one."""
    name = check_username(username)
    return storage.add_operator(session, name, hash_password(password), now)

"""API key tokens: `vc_` + 32 random base62 characters + a 6-character CRC32 checksum.

The checksum lets a mistyped or malformed token be refused without a database lookup; only a
SHA-256 hash of the token is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib

TOKEN_PREFIX = "vc_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 32  # 32 * log2(62) ≈ 190 bits
_CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(TOKEN_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
# Checked on every request: one regex match instead of a character-by-character loop.
_SHAPE = re.compile(
    re.escape(TOKEN_PREFIX) + f"[{_ALPHABET}]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}"
)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def new_token() -> str:
    """A fresh token; shown to the operator once, never stored."""
    body = TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """Shape and checksum are right (says nothing about whether the key exists)."""
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        return False
    if not _SHAPE.fullmatch(token):
        return False
    body, checksum = token[:-_CHECKSUM_LENGTH], token[-_CHECKSUM_LENGTH:]
    return secrets.compare_digest(_checksum(body), checksum)


def hash_token(token: str) -> str:
    """The stored form: tokens carry ~190 bits of entropy, so plain SHA-256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """The non-secret beginning shown in listings so operators can tell keys apart."""
    return token[:DISPLAY_PREFIX_LENGTH]

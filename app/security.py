"""The app's safety: who may write, signed sessions, CSRF tokens, Host and Origin checks, response headers.

- Reads are open to whoever reaches the server (loopback by default). Writes (review decisions)
  need a login: a reviewer signs in with the operator's token (``--token-file``; the reviewer
  gives a name) or with their own token (``--users-file``, lines ``name token``). Tokens are
  compared with :func:`hmac.compare_digest`. In read-only mode there is no login and every write
  is refused.
- The session is a cookie signed with HMAC-SHA256 under a key drawn at start (restarting the app
  signs everyone out); ``HttpOnly``, ``SameSite=Strict``.
- Every form carries a CSRF token: the HMAC of a random per-browser cookie; a write without the
  matching token is refused (403), as is one whose ``Origin`` is not this server.
- The ``Host`` header must name this server (no DNS rebinding), as in the SPARQL server.
- Every page is sent with a Content-Security-Policy that allows only this server's own scripts,
  styles and images (no inline script), ``X-Frame-Options: DENY`` and ``nosniff``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from prodkg.errors import ConfigError

__all__ = ["LOOPBACK_NAMES", "Auth", "load_tokens"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SESSION_COOKIE = "prodkg_session"
CSRF_COOKIE = "prodkg_csrf"
SESSION_SECONDS = 12 * 3600

HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # not no-referrer: Chromium would then send "Origin: null" with our own forms
    "cache-control": "no-store",
}


def load_tokens(token_file: str | None = None, users_file: str | None = None) -> dict[str, str | None]:
    """token -> reviewer name (None: the reviewer names themselves at login)."""
    tokens: dict[str, str | None] = {}
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc}") from exc
        if len(token) < 16:
            raise ConfigError(f"--token-file {token_file}: the token must be at least 16 characters")
        tokens[token] = None
    if users_file:
        try:
            lines = Path(users_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read --users-file {users_file}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, token = line.strip().rpartition(" ")
            if not name.strip() or len(token) < 16:
                raise ConfigError(f"--users-file {users_file} line {number}: expected 'name token' with a token of at least 16 characters")
            tokens[token] = name.strip()
    return tokens


@dataclass
class Auth:
    tokens: dict[str, str | None]
    read_only: bool = False
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def writable(self) -> bool:
        return not self.read_only and bool(self.tokens)

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, payload, hashlib.sha256).digest()).decode().rstrip("=")

    # --- login ---------------------------------------------------------------------------------------
    def check_token(self, given: str, name: str) -> str | None:
        """The reviewer's name when ``given`` is a valid token (``name`` is used for the shared token), else None."""
        if not self.writable or not given:
            return None
        found: str | None | bool = False
        for token, owner in self.tokens.items():
            if hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
                found = owner
        if found is False:
            return None
        who = found if isinstance(found, str) else " ".join(name.split())
        if not who or len(who) > 80 or any(ord(ch) < 32 for ch in who):
            return None
        return who

    def session_cookie(self, who: str) -> str:
        payload = json.dumps({"u": who, "exp": int(time.time()) + SESSION_SECONDS}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(payload)}"

    def reviewer(self, cookie: str | None) -> str | None:
        """The signed-in reviewer of a session cookie, or None."""
        if not cookie or not self.writable or "." not in cookie:
            return None
        body, sig = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(sig.encode(), self._sign(payload).encode()):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or int(data.get("exp", 0)) < time.time() or not isinstance(data.get("u"), str):
            return None
        return data["u"]

    # --- CSRF ----------------------------------------------------------------------------------------
    def csrf_token(self, browser: str) -> str:
        return self._sign(b"csrf|" + browser.encode())

    def check_csrf(self, browser: str | None, given: str | None) -> bool:
        return bool(browser and given) and hmac.compare_digest(given.encode(), self.csrf_token(browser).encode())


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        name = host.split("]")[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in allowed or name.strip("[]") in allowed

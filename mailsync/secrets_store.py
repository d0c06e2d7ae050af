"""Where sign-ins and passwords are kept: the system keyring, or a 0600 file.

The keyring is reached through the `keyring` package (the optional extra
`mailsync[keyring]`). Entries are under the service "mailsync" with the user name
"oauth2:ACCOUNT" (a JSON record: refresh token, access token and its expiry) or
"password:ACCOUNT" (a password stored by `mailsync password`).

Without a usable keyring (not installed, or no backend: a headless server, cron without
a desktop session) OAuth2 records go to `oauth2-token.json` in the account's state
directory, mode 0600, written atomically. `token_store` chooses: "auto" (the keyring when
one is usable, else the file; reads look in both), "keyring" or "file".

Nothing here prints, logs or puts a secret into an error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from mailsync.config import Account
from mailsync.errors import AuthError, ConfigError, local_io_error

SERVICE = "mailsync"
TOKEN_FILE = "oauth2-token.json"
LOCK_FILE = "oauth2.lock"


def usable_keyring(chosen: bool = True) -> Any | None:
    """The keyring backend when the extra is installed and a real backend is found.
    With chosen=False (token_store = "auto") a backend keyring itself ranks as a last
    resort (priority under 1: keyrings.alt's plain-text file) is taken only when the
    user named it (PYTHON_KEYRING_BACKEND or a keyringrc); else the 0600 file wins."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:   # a broken keyringrc or backend module
        return None
    if isinstance(backend, fail.Keyring) or type(backend).__module__.endswith(".null"):
        return None
    if getattr(backend, "backends", None) == []:     # a chainer with nothing behind it
        return None
    if not chosen and _priority(backend) < 1 and not _named_by_user():
        return None
    return backend


def _priority(backend: Any) -> float:
    try:
        return float(backend.priority)
    except Exception:
        return 0.0


def _named_by_user() -> bool:
    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return True
    try:
        from keyring.core import load_config
        return load_config() is not None
    except Exception:
        return False


def backend_name(backend: Any) -> str:
    return f"{type(backend).__module__.rsplit('.', 1)[-1]}.{type(backend).__name__}"


def _keyring_failed(account: Account, exc: Exception) -> AuthError:
    return AuthError(f"account {account.name}: the system keyring failed: "
                     f"{type(exc).__name__}",
                     "unlock it (cron has no desktop session), or set token_store = "
                     "\"file\" and run `mailsync login " + account.name + "` again")


class TokenStore:
    """The OAuth2 record of one account."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.path = account.state_dir / TOKEN_FILE
        self.keyring = None
        if account.token_store != "file":
            self.keyring = usable_keyring(chosen=account.token_store == "keyring")
            if self.keyring is None and account.token_store == "keyring":
                raise ConfigError(f"account {account.name}: token_store = \"keyring\" but no "
                                  "keyring is usable",
                                  "pip install 'mailsync[keyring]' and set up a backend, or "
                                  "use token_store = \"file\"")
        self._user = f"oauth2:{account.name}"

    def where(self) -> str:
        if self.keyring is not None:
            return f"the system keyring ({backend_name(self.keyring)}, service " \
                   f"{SERVICE!r}, entry {self._user!r})"
        return f"{self.path} (mode 0600)"

    def load(self) -> dict | None:
        if self.keyring is not None:
            try:
                text = self.keyring.get_password(SERVICE, self._user)
            except Exception as exc:
                raise _keyring_failed(self.account, exc) from None
            if text:
                return _parse(text)
            if self.account.token_store == "keyring":
                return None
        try:
            return _parse(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    def save(self, record: dict) -> None:
        text = json.dumps(record, sort_keys=True)
        if self.keyring is not None:
            try:
                self.keyring.set_password(SERVICE, self._user, text)
            except Exception as exc:
                raise _keyring_failed(self.account, exc) from None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()      # an older file copy would only mislead
            return
        write_private(self.path, text.encode())

    @contextlib.contextmanager
    def locked(self, create: bool = False) -> Iterator[None]:
        """Hold the account's token lock (one refresh at a time across processes).
        The lock file exists once `mailsync login` ran; without it, no lock."""
        path = self.account.state_dir / LOCK_FILE
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            if create:
                _private_dir(self.account.state_dir)
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            yield
            return
        except OSError as exc:
            raise local_io_error(exc, str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _parse(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_private(path: Path, data: bytes) -> None:
    """Write data to path atomically, mode 0600 from the first byte."""
    try:
        _private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise local_io_error(exc, str(path)) from None


# Passwords ----------------------------------------------------------------------------------

def _password_keyring(account: Account) -> Any:
    backend = usable_keyring()
    if backend is None:
        raise ConfigError(f"account {account.name}: password_keyring = true but no keyring "
                          "is usable", "pip install 'mailsync[keyring]' and set up a backend, "
                          "or use password_command")
    return backend


def keyring_password(account: Account) -> str:
    backend = _password_keyring(account)
    try:
        value = backend.get_password(SERVICE, f"password:{account.name}")
    except Exception as exc:
        raise _keyring_failed(account, exc) from None
    if not value:
        raise AuthError(f"account {account.name}: no password stored in the keyring",
                        f"store one with `mailsync password {account.name}`")
    return value


def store_password(account: Account, password: str) -> str:
    """Store the account's password in the keyring; returns where it went."""
    backend = _password_keyring(account)
    try:
        backend.set_password(SERVICE, f"password:{account.name}", password)
    except Exception as exc:
        raise _keyring_failed(account, exc) from None
    return f"the system keyring ({backend_name(backend)}, service {SERVICE!r}, entry " \
           f"'password:{account.name}')"

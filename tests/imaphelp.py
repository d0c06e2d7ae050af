"""Test-side hands on both sides of an IMAP account: a second IMAP client plays the
user's phone or webmail, file operations play a local mail client (mutt, notmuch).
No pytest import: also used by bench/ scripts."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

from imapclient import IMAPClient

from mailsync import names

LETTER_TO_FLAG = {"S": b"\\Seen", "R": b"\\Answered", "F": b"\\Flagged", "T": b"\\Deleted",
                  "D": b"\\Draft", "P": b"$Forwarded"}
FLAG_TO_LETTER = {v.lower(): k for k, v in LETTER_TO_FLAG.items()}


# Server side ----------------------------------------------------------------------------
def client(server, user: str) -> IMAPClient:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    c = IMAPClient(server.host, port=server.imaps_port, ssl=True, ssl_context=ctx, timeout=30)
    c.login(user, server.password)
    return c


class Remote:
    """The server as another mail client sees it."""

    def __init__(self, server, user: str) -> None:
        self.c = client(server, user)

    def close(self) -> None:
        try:
            self.c.logout()
        except Exception:
            pass

    def folders(self) -> list[str]:
        return sorted(name for flags, _, name in self.c.list_folders()
                      if b"\\Noselect" not in flags)

    def create(self, folder: str) -> None:
        self.c.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        self.c.delete_folder(folder)

    def append(self, folder: str, message: bytes, letters: str = "") -> int:
        reply = self.c.append(folder, message.replace(b"\n", b"\r\n"),
                              [LETTER_TO_FLAG[c] for c in letters])
        return int(reply.split(b"]")[0].split()[-1])

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[bytes, str]]:
        """uid -> (body with LF, flag letters)."""
        self.c.select_folder(folder, readonly=True)
        uids = self.c.search("ALL")
        if not uids:
            return {}
        data = self.c.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        return {uid: (d[b"BODY[]"].replace(b"\r\n", b"\n"), letters(d[b"FLAGS"]))
                for uid, d in data.items()}

    def bodies(self, folder: str = "INBOX") -> list[bytes]:
        return sorted(body for body, _ in self.messages(folder).values())

    def flags_by_body(self, folder: str = "INBOX") -> dict[bytes, str]:
        return {body: fl for body, fl in self.messages(folder).values()}

    def uid_of(self, folder: str, body: bytes) -> int:
        return next(uid for uid, (b, _) in self.messages(folder).items() if b == body)

    def set_flags(self, folder: str, uid: int, add: str = "", remove: str = "") -> None:
        self.c.select_folder(folder)
        if add:
            self.c.add_flags([uid], [LETTER_TO_FLAG[c] for c in add])
        if remove:
            self.c.remove_flags([uid], [LETTER_TO_FLAG[c] for c in remove])

    def expunge(self, folder: str, uid: int) -> None:
        self.c.select_folder(folder)
        self.c.add_flags([uid], [b"\\Deleted"])
        self.c.uid_expunge([uid])

    def move(self, folder: str, uid: int, dest: str) -> None:
        self.c.select_folder(folder)
        self.c.move([uid], dest)

    def uidvalidity(self, folder: str) -> int:
        return self.c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]


def letters(flags) -> str:
    return "".join(sorted(FLAG_TO_LETTER[f.lower()] for f in flags
                          if isinstance(f, bytes) and f.lower() in FLAG_TO_LETTER))


# Local side -----------------------------------------------------------------------------
class Local:
    """The Maildir as a local mail client sees it (maildir++ layout unless told)."""

    def __init__(self, root: Path, layout: str = "maildir++") -> None:
        self.root, self.layout = root, layout

    def path(self, folder: str = "INBOX") -> Path:
        rel = names.local_relpath(tuple(folder.split("/")), self.layout)
        return self.root / rel if rel else self.root

    def files(self, folder: str = "INBOX") -> list[Path]:
        p = self.path(folder)
        return sorted(f for sub in ("new", "cur") if (p / sub).is_dir()
                      for f in (p / sub).iterdir())

    def bodies(self, folder: str = "INBOX") -> list[bytes]:
        return sorted(f.read_bytes() for f in self.files(folder))

    def flags_by_body(self, folder: str = "INBOX") -> dict[bytes, str]:
        return {f.read_bytes(): flags_of(f) for f in self.files(folder)}

    def file_of(self, folder: str, body: bytes) -> Path:
        return next(f for f in self.files(folder) if f.read_bytes() == body)

    def deliver(self, folder: str, body: bytes, letters: str = "") -> Path:
        p = self.path(folder)
        for sub in ("cur", "new", "tmp"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        name = f"{time.time():.6f}.P{os.getpid()}R{os.urandom(4).hex()}.testclient"
        tmp = p / "tmp" / name
        tmp.write_bytes(body)
        dest = p / ("cur" if letters else "new") / (name + (f":2,{letters}" if letters else ""))
        os.rename(tmp, dest)
        return dest

    def set_flags(self, folder: str, body: bytes, letters: str) -> Path:
        f = self.file_of(folder, body)
        key = f.name.split(":2,")[0]
        dest = f.parent.parent / "cur" / f"{key}:2,{''.join(sorted(letters))}"
        os.rename(f, dest)
        return dest

    def delete(self, folder: str, body: bytes) -> None:
        self.file_of(folder, body).unlink()

    def move(self, folder: str, body: bytes, dest_folder: str) -> Path:
        f = self.file_of(folder, body)
        dest = self.path(dest_folder) / f.parent.name / f.name
        os.rename(f, dest)
        return dest

    def make_folder(self, folder: str) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.path(folder) / sub).mkdir(parents=True, exist_ok=True)


def flags_of(path: Path) -> str:
    _, sep, info = path.name.partition(":2,")
    return "".join(sorted(c for c in info if c in "DFPRST")) if sep else ""

"""imapclient imported without importlib.metadata: a start-up time saving, kept here alone.

imapclient's __init__ imports imapclient.version, which asks importlib.metadata for the
package's version. Importing importlib.metadata (zipfile, email, csv, ...) and scanning
sys.path for the distribution costs 10-20 ms of a ~100 ms no-op sync
(`bench/startup.py`: "imap import" against "imap import, metadata"). The version is
already in the name of imapclient's dist-info folder beside the package, so install()
puts a stand-in imapclient.version, built from that name, in sys.modules before the
first import of imapclient. Python's import system takes a module already in
sys.modules as imported; the stand-in has the two names imapclient reads from it.

When anything is not as expected (imapclient already imported, no dist-info folder or
several, a version that is not three numbers) nothing is done and imapclient is imported
the usual way. tests/test_imapclient_version.py checks both paths, and that the version
seen is the one importlib.metadata reports.
"""

from __future__ import annotations

import os
import re
import sys
import types
from importlib.util import find_spec

_DIST_INFO = re.compile(r"(?i)imapclient-(\d+)\.(\d+)\.(\d+)\.dist-info\Z")


def version_from_names(names: list[str]) -> tuple[int, int, int] | None:
    """imapclient's version from the names in the folder that holds the package: the
    one imapclient-X.Y.Z.dist-info among them, else None (none, or several installs)."""
    found = [m for name in names if (m := _DIST_INFO.match(name))]
    if len(found) != 1:
        return None
    major, minor, micro = (int(x) for x in found[0].groups())
    return major, minor, micro


def install() -> bool:
    """Put the stand-in imapclient.version in place; False when it was left out."""
    if "imapclient" in sys.modules or "imapclient.version" in sys.modules:
        return False
    try:
        spec = find_spec("imapclient")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if len(locations) != 1:
            return False
        version = version_from_names(os.listdir(os.path.dirname(locations[0])))
    except (ImportError, OSError, ValueError):
        return False
    if version is None:
        return False
    module = types.ModuleType("imapclient.version")
    module.version = "%d.%d.%d" % version
    module.version_info = (*version, "final")
    sys.modules["imapclient.version"] = module
    return True

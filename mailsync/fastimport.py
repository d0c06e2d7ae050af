"""Start-up time: keep imapclient from loading importlib.metadata.

imapclient's __init__ imports imapclient.version, which asks importlib.metadata for the
package's version; importing importlib.metadata (zipfile, email, csv, ...) is about 20 ms,
a sixth of a no-op sync. The version is already in the name of imapclient's dist-info
folder beside the package, so a stand-in imapclient.version is built from that. When
anything about this is not as expected, nothing is done and the import is the usual one.
"""

from __future__ import annotations

import os
import re
import sys
import types
from importlib.util import find_spec

_DIST_INFO = re.compile(r"(?i)imapclient-(\d+)\.(\d+)\.(\d+)\.dist-info\Z")


def imapclient_without_metadata() -> None:
    if "imapclient" in sys.modules or "imapclient.version" in sys.modules:
        return
    try:
        spec = find_spec("imapclient")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if len(locations) != 1:
            return
        found = [m for name in os.listdir(os.path.dirname(locations[0]))
                 if (m := _DIST_INFO.match(name))]
    except (ImportError, OSError, ValueError):
        return
    if len(found) != 1:
        return                      # none, or several installs: let importlib.metadata say
    major, minor, micro = (int(x) for x in found[0].groups())
    module = types.ModuleType("imapclient.version")
    module.version = f"{major}.{minor}.{micro}"
    module.version_info = (major, minor, micro, "final")
    sys.modules["imapclient.version"] = module

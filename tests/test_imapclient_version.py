"""imapclient imported without importlib.metadata (start-up time): the stand-in module
reports the installed version, and anything unexpected leaves the usual import alone.
A fresh interpreter for each, since the point is what a first import does."""

from __future__ import annotations

import subprocess
import sys

from mailsync.drivers.imap.imapclient_version import version_from_names
from tests.conftest import cli_env


def fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_imap_driver_loads_imapclient_without_importlib_metadata():
    out = fresh("import sys\nfrom mailsync.drivers import imap\n"
                "print('importlib.metadata' in sys.modules, imap.imapclient_version.__name__)")
    assert out == "False mailsync.drivers.imap.imapclient_version"


def test_imapclient_reports_the_version_importlib_metadata_knows():
    out = fresh("from mailsync.drivers import imap\nimport imapclient, importlib.metadata\n"
                "print(imapclient.__version__ == importlib.metadata.version('imapclient'),"
                " imapclient.version_info[3])")
    assert out == "True final"


def test_an_imapclient_imported_first_is_left_as_it_is():
    out = fresh("import imapclient, sys\nfrom mailsync.drivers.imap import imapclient_version\n"
                "print(imapclient_version.install(),"
                " 'importlib.metadata' in sys.modules)")
    assert out == "False True"


def test_the_version_is_read_from_the_one_dist_info_folder_only():
    assert version_from_names(["imapclient", "imapclient-4.1.0.dist-info", "rich"]) == (4, 1, 0)
    assert version_from_names(["IMAPClient-3.0.1.dist-info"]) == (3, 0, 1)
    assert version_from_names(["imapclient"]) is None                 # no metadata at all
    assert version_from_names(["imapclient-4.1.0.dist-info",
                               "imapclient-3.0.1.dist-info"]) is None  # two installs
    assert version_from_names(["imapclient-4.1.0rc1.dist-info"]) is None

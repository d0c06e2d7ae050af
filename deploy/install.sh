#!/bin/sh
# Install mailsync from a source tree into a new virtualenv at PREFIX: the step the
# container recipe (deploy/Containerfile) runs, and that tests/test_deploy.py runs
# where no container tool works. Needs python3 (3.11 or newer) with venv, and the
# package index for click, imapclient and rich.
#   sh deploy/install.sh PREFIX SOURCE
set -eu
prefix=$1
source=$2
python3 -m venv "$prefix"
"$prefix/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$source"
"$prefix/bin/mailsync" --version

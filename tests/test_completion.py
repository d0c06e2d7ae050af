"""Shell completion (issue 14): click's scripts for bash, zsh and fish load in the real
shells, and complete commands and the config's account names. A shell that is not
installed is skipped, except under CI=true (.ci/setup installs zsh and fish)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import cli_env, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{shell} is not installed (.ci/setup installs it)", pytrace=False)
        pytest.skip(f"{shell} is not installed")
    return path


@pytest.fixture
def env(tmp_path):
    """A `mailsync` on PATH and a config with two accounts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "mailsync"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m mailsync \"$@\"\n")
    script.chmod(0o755)
    config = write_config(tmp_path / "config.toml", "work", {
        "protocol": "imap", "host": "imap.example.org", "user": "me", "password_env": "P",
        "maildir": str(tmp_path / "M1"), "state_dir": str(tmp_path / "s1")})
    with open(config, "a") as f:
        f.write(f'[accounts.home]\nprotocol = "pop3"\nhost = "pop.example.org"\n'
                f'user = "me"\npassword_env = "P"\nmaildir = "{tmp_path / "M2"}"\n'
                f'state_dir = "{tmp_path / "s2"}"\n')
    return cli_env({"PATH": f"{bindir}:{os.environ['PATH']}", "MAILSYNC_CONFIG": str(config),
                    "HOME": str(tmp_path)})


def run(argv: list[str], env: dict) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash(env):
    bash = need("bash")
    script = ('eval "$(_MAILSYNC_COMPLETE=bash_source mailsync)" || exit 9\n'
              'complete -p mailsync || exit 8\n'
              'complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
              'COMPREPLY=(); _mailsync_completion mailsync; printf "%s\\n" "${COMPREPLY[@]}"; }\n'
              'complete_words mailsync wa\necho --\n'
              'complete_words mailsync sync ""\necho --\n'
              'complete_words mailsync schedule h\n')
    out = run([bash, "--norc", "--noprofile", "-c", script], env)
    lines = out.splitlines()
    assert "watch" in lines[:lines.index("--")]
    rest = out.split("--\n")
    assert sorted(rest[1].split()) == ["home", "work"]
    assert rest[2].split() == ["home"]


def test_zsh(env):
    zsh = need("zsh")
    script = ('autoload -Uz compinit && compinit -u -D\n'
              'eval "$(_MAILSYNC_COMPLETE=zsh_source mailsync)" || exit 9\n'
              'whence -w _mailsync_completion\n')
    assert "function" in run([zsh, "-f", "-c", script], env)
    # what the loaded function asks mailsync for, as zsh asks it
    out = run(["mailsync"], {**env, "_MAILSYNC_COMPLETE": "zsh_complete",
                             "COMP_WORDS": "mailsync watch ", "COMP_CWORD": "2"})
    assert {"home", "work"} <= set(out.split())


def test_fish(env):
    fish = need("fish")
    script = ("_MAILSYNC_COMPLETE=fish_source mailsync | source\n"
              "complete -C 'mailsync status w'\n"
              "echo ==\n"
              "complete -C 'mailsync sch'\n")
    out = run([fish, "--no-config", "-c", script], env)
    accounts, commands = out.split("==\n")
    assert [line.split("\t")[0] for line in accounts.splitlines()] == ["work"]
    assert "schedule" in [line.split("\t")[0] for line in commands.splitlines()]


def test_completion_never_fails_on_a_broken_config(tmp_path):
    (tmp_path / "bad.toml").write_text("[accounts\n")
    done = subprocess.run([sys.executable, "-m", "mailsync"], capture_output=True, text=True,
                          env=cli_env({"_MAILSYNC_COMPLETE": "bash_complete",
                                       "COMP_WORDS": "mailsync sync ", "COMP_CWORD": "2",
                                       "MAILSYNC_CONFIG": str(tmp_path / "bad.toml")}),
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "" and "Traceback" not in done.stderr

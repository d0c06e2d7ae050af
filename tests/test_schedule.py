"""`mailsync schedule` (issue 14, acceptance 4): a valid systemd user service + timer,
or the watch service; --install writes them under $XDG_CONFIG_HOME/systemd/user/.
Checked with `systemd-analyze verify` where it is installed, and parsed either way."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest

from tests.conftest import run_cli, write_config


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config.toml", "work", {
        "protocol": "imap", "host": "imap.example.org", "user": "me",
        "password_env": "WORK_PASSWORD", "maildir": str(tmp_path / "Mail"),
        "state_dir": str(tmp_path / "state")})


def split_units(text: str) -> dict[str, str]:
    parts = re.split(r"(?m)^# (mailsync-\S+)\n", text)
    return dict(zip(parts[1::2], parts[2::2]))


def parsed(text: str) -> configparser.ConfigParser:
    p = configparser.ConfigParser(strict=True, interpolation=None)
    p.optionxform = str
    p.read_string(text)
    return p


def verify(directory, names: list[str]) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return   # parsed above; the tool is optional (not in every container)
    done = subprocess.run([tool, "verify", "--man=no", *names], cwd=directory,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_timer_and_service_for_one_shot_runs(config, tmp_path):
    done = run_cli("-c", str(config), "schedule", "work", "--every", "15m")
    assert done.code == 0, done.err
    units = split_units(done.out)
    assert set(units) == {"mailsync-work.service", "mailsync-work.timer"}
    service, timer = parsed(units["mailsync-work.service"]), parsed(units["mailsync-work.timer"])
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith(f"-c {config} -q run work")
    assert "75" in service["Service"]["SuccessExitStatus"]
    assert timer["Timer"]["OnUnitActiveSec"] == "900s"
    assert timer["Timer"]["Unit"] == "mailsync-work.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    verify(tmp_path, list(units))


def test_watch_service(config, tmp_path):
    done = run_cli("-c", str(config), "schedule", "work", "--watch")
    assert done.code == 0, done.err
    units = split_units(done.out)
    assert list(units) == ["mailsync-work-watch.service"]
    service = parsed(units["mailsync-work-watch.service"])["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].endswith(" watch work")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["WatchdogSec"]) > 0
    (tmp_path / "mailsync-work-watch.service").write_text(units["mailsync-work-watch.service"])
    verify(tmp_path, ["mailsync-work-watch.service"])


def test_install_writes_the_units_for_the_user(config, tmp_path):
    home = tmp_path / "xdg"
    done = run_cli("-c", str(config), "schedule", "work", "--every", "1h", "--install",
                   env={"XDG_CONFIG_HOME": str(home)})
    assert done.code == 0, done.err
    unit_dir = home / "systemd" / "user"
    assert sorted(p.name for p in unit_dir.iterdir()) == ["mailsync-work.service",
                                                         "mailsync-work.timer"]
    assert parsed((unit_dir / "mailsync-work.timer").read_text())["Timer"][
        "OnUnitActiveSec"] == "3600s"
    assert "systemctl --user enable --now mailsync-work.timer" in done.out


def test_account_name_with_at_sign_is_not_a_template(tmp_path):
    config = write_config(tmp_path / "c.toml", '"me@home"', {
        "protocol": "pop3", "host": "pop.example.org", "user": "me",
        "password_env": "P", "maildir": str(tmp_path / "M"), "state_dir": str(tmp_path / "s")})
    done = run_cli("-c", str(config), "schedule", "me@home", "--every", "30m")
    assert done.code == 0, done.err
    assert set(split_units(done.out)) == {"mailsync-me_home.service", "mailsync-me_home.timer"}


@pytest.mark.parametrize("args, code", [
    (["work"], 64),                        # neither --every nor --watch
    (["work", "--every", "soon"], 64),
    (["work", "--every", "10s"], 64),      # under a minute: that is what watch is for
    (["nobody", "--every", "15m"], 78),    # no such account
])
def test_refusals(config, args, code):
    done = run_cli("-c", str(config), "schedule", *args)
    assert done.code == code, done.err
    assert done.out == ""

"""Config loading: what a user's mistakes look like, and what a good file gives."""

import os

import pytest

from mailsync.config import load_config, resolve_secret
from mailsync.errors import ConfigError

GOOD = """
[defaults]
maildir_root = "~/Mail"
timeout = 30

[accounts.home]
protocol = "pop3"
host = "pop.example.net"
user = "me"
password_command = "echo s3cret; echo ignored"
max_size = "20M"
"""


def write(tmp_path, text, mode=0o600):
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def error_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.exit_code == 78
    return str(info.value)


def test_a_good_config_gives_defaults_and_expands_home(tmp_path):
    account = load_config(write(tmp_path, GOOD)).accounts["home"]
    assert account.port == 995 and account.tls == "implicit"
    assert account.maildir == os.path.expanduser("~/Mail/home") or \
        str(account.maildir) == os.path.expanduser("~/Mail/home")
    assert account.timeout == 30 and account.max_size == 20 * 1024 * 1024
    assert resolve_secret(account) == "s3cret"


def test_unknown_key_is_named_with_its_line(tmp_path):
    message = error_of(tmp_path, GOOD + 'colour = "blue"\n')
    assert "config.toml:12" in message and "'colour'" in message


def test_typo_gets_a_suggestion(tmp_path):
    assert "did you mean 'password_command'" in error_of(
        tmp_path, GOOD.replace("password_command", "password_comand"))


def test_wrong_type_names_key_and_expected_type(tmp_path):
    message = error_of(tmp_path, GOOD + "keep = \"yes\"\n")
    assert "keep must be true or false" in message


def test_missing_required_key(tmp_path):
    assert "missing 'host'" in error_of(tmp_path, GOOD.replace('host = "pop.example.net"', ""))


def test_malformed_toml_names_the_line(tmp_path):
    assert "line" in error_of(tmp_path, GOOD + "keep = \n")


def test_plaintext_needs_explicit_consent(tmp_path):
    assert "allow_plaintext" in error_of(tmp_path, GOOD + 'tls = "none"\n')
    cfg = load_config(write(tmp_path, GOOD + 'tls = "none"\nallow_plaintext = true\n'))
    assert cfg.accounts["home"].port == 110


def test_two_password_sources_are_refused(tmp_path):
    assert "keep only one" in error_of(tmp_path, GOOD + 'password = "x"\n')


def test_password_env(tmp_path, monkeypatch):
    text = GOOD.replace('password_command = "echo s3cret; echo ignored"', 'password_env = "PW"')
    account = load_config(write(tmp_path, text)).accounts["home"]
    monkeypatch.setenv("PW", "from-env")
    assert resolve_secret(account) == "from-env"
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError):
        resolve_secret(account)


def test_failing_password_command_is_a_config_error(tmp_path):
    account = load_config(write(tmp_path, GOOD.replace("echo s3cret; echo ignored", "exit 3"))
                          ).accounts["home"]
    with pytest.raises(ConfigError, match="exit status 3"):
        resolve_secret(account)


def test_readable_config_with_password_warns(tmp_path):
    text = GOOD.replace('password_command = "echo s3cret; echo ignored"', 'password = "pw"')
    assert load_config(write(tmp_path, text, 0o644)).warnings
    assert not load_config(write(tmp_path, text, 0o600)).warnings


def test_password_is_not_in_the_repr(tmp_path):
    text = GOOD.replace('password_command = "echo s3cret; echo ignored"', 'password = "pw123"')
    assert "pw123" not in repr(load_config(write(tmp_path, text)))


def test_unknown_account_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no account named 'work'"):
        load_config(write(tmp_path, GOOD)).select(["work"])

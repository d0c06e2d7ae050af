"""Docs that cannot drift: the man page and README document what the code offers.

Every command and long option of the click group, every config key and every exit status of
the contract must appear in man/mailsync.1 (in the right section) and in README.md, and every
command and option must have help text (in the style of sqlite-utils' test_docs.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from mailsync import errors
from mailsync.cli.app import EX_SOFTWARE, cli
from mailsync.config import KEYS

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man" / "mailsync.1"
README = ROOT / "README.md"

# The exit statuses scripts may rely on (README "Running from cron", man EXIT STATUS).
CONTRACT_EXIT_CODES = (0, 1, 64, 65, 69, 74, 75, 77, 78)
# Not in the contract table but documented: an internal error and an interrupted run.
OTHER_EXIT_CODES = (EX_SOFTWARE, errors.Interrupted.exit_code)

REQUIRED_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "CONFIGURATION",
                     "SYNC SEMANTICS", "POP3 SEMANTICS", "JSON OUTPUT", "FILES", "ENVIRONMENT",
                     "EXIT STATUS", "EXAMPLES", "INHERENT PROBLEMS", "SEE ALSO")

_ESCAPES = {r"\-": "-", r"\(dq": '"', r"\(aq": "'", r"\(rs": "\\", r"\(em": "\u2014",
            r"\(lq": "\u201c", r"\(rq": "\u201d", r"\e": "\\", r"\&": "", r"\ ": " "}


def roff_text(source: str) -> str:
    """Roff source as plain text: comments, font changes and escapes resolved.

    Request lines keep their name (".TP", ".B --keep") so sections can still be found.
    """
    lines = [ln for ln in source.splitlines() if not ln.startswith('.\\"')]
    text = "\n".join(lines)
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", text)
    for escape, plain in _ESCAPES.items():
        text = text.replace(escape, plain)
    return text


def split_sections(text: str, macro: str) -> dict[str, str]:
    """{title: body} for every .SH (or .SS) heading in text."""
    sections: dict[str, str] = {}
    title = None
    body: list[str] = []
    for line in text.splitlines():
        m = re.match(rf"^\.{macro}\s+(.*)$", line)
        if m:
            if title is not None:
                sections[title] = "\n".join(body)
            title, body = m.group(1).strip().strip('"'), []
        elif title is not None:
            body.append(line)
    if title is not None:
        sections[title] = "\n".join(body)
    return sections


@pytest.fixture(scope="module")
def man() -> str:
    return roff_text(MAN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def man_sections(man: str) -> dict[str, str]:
    return split_sections(man, "SH")


@pytest.fixture(scope="module")
def man_commands(man_sections: dict[str, str]) -> dict[str, str]:
    """{command name: its .SS subsection} from COMMANDS; a title is "run [ACCOUNT]..."."""
    subsections = split_sections(man_sections["COMMANDS"], "SS")
    return {title.split()[0]: body for title, body in subsections.items()}


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def mentions(text: str, word: str) -> bool:
    """word appears in text, not as part of a longer option or name."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def params(command: click.Command, parent: click.Context | None = None) -> list[click.Option]:
    ctx = click.Context(command, info_name=command.name, parent=parent)
    return [p for p in command.get_params(ctx) if isinstance(p, click.Option)]


def long_options(option: click.Option) -> list[str]:
    return [o for o in option.opts + option.secondary_opts if o.startswith("--")]


COMMANDS = sorted(cli.commands)
GROUP_OPTIONS = [(o, opt) for opt in params(cli) for o in long_options(opt)]
GLOBAL_NAMES = {o for o, _ in GROUP_OPTIONS}   # every command takes these too
COMMAND_OPTIONS = [(name, o, opt) for name in COMMANDS
                   for opt in params(cli.commands[name], click.Context(cli))
                   for o in long_options(opt) if o != "--help" and o not in GLOBAL_NAMES]


def test_the_cli_has_the_contract_commands():
    assert set(COMMANDS) == {"run", "fetch", "sync", "check", "status", "folders", "init",
                             "login", "password", "watch", "schedule"}


def test_man_page_has_every_section(man_sections):
    missing = [s for s in REQUIRED_SECTIONS if s not in man_sections]
    assert not missing, f"man/mailsync.1 lacks sections {missing}"


# Commands ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help(name):
    command = cli.commands[name]
    assert (command.help or "").strip(), f"command {name} has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_in_man_page(name, man_commands, man_sections):
    assert name in man_commands, f"COMMANDS in man/mailsync.1 has no .SS for {name}"
    assert mentions(man_sections["SYNOPSIS"], f"mailsync {name}"), \
        f"SYNOPSIS of man/mailsync.1 lacks `mailsync {name}`"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_in_readme(name, readme):
    assert mentions(readme, f"mailsync {name}"), f"README.md does not show `mailsync {name}`"


# Options -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,option,param", COMMAND_OPTIONS,
                         ids=[f"{n} {o}" for n, o, _ in COMMAND_OPTIONS])
def test_command_option_has_help(name, option, param):
    assert (param.help or "").strip(), f"{name} {option} has no help text"


@pytest.mark.parametrize("name,option,param", COMMAND_OPTIONS,
                         ids=[f"{n} {o}" for n, o, _ in COMMAND_OPTIONS])
def test_command_option_in_man_page(name, option, param, man_commands):
    assert mentions(man_commands.get(name, ""), option), \
        f"man/mailsync.1 does not document {option} under COMMANDS / {name}"


@pytest.mark.parametrize("name,option,param", COMMAND_OPTIONS,
                         ids=[f"{n} {o}" for n, o, _ in COMMAND_OPTIONS])
def test_command_option_in_readme(name, option, param, readme):
    assert mentions(readme, option), f"README.md does not mention {name} {option}"


@pytest.mark.parametrize("option,param", GROUP_OPTIONS, ids=[o for o, _ in GROUP_OPTIONS])
def test_group_option_has_help(option, param):
    assert (param.help or "").strip(), f"global option {option} has no help text"


@pytest.mark.parametrize("option,param", GROUP_OPTIONS, ids=[o for o, _ in GROUP_OPTIONS])
def test_group_option_in_man_page(option, param, man_sections):
    options = man_sections["OPTIONS"]
    for flag in param.opts + param.secondary_opts:   # short forms too: -c, -q, -v, -h
        assert mentions(options, flag), f"OPTIONS in man/mailsync.1 lacks {flag}"


@pytest.mark.parametrize("option,param", GROUP_OPTIONS, ids=[o for o, _ in GROUP_OPTIONS])
def test_group_option_in_readme(option, param, readme):
    assert mentions(readme, option), f"README.md does not mention {option}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_and_lists_the_global_options(name):
    from click.testing import CliRunner
    shown = CliRunner().invoke(cli, [name, "--help"]).output
    for option, _ in GROUP_OPTIONS:
        assert mentions(shown, option), f"`mailsync {name} --help` does not list {option}"


def test_every_command_accepts_help_and_the_man_page_says_so(man_sections):
    for name in COMMANDS:
        opts = [o for p in params(cli.commands[name], click.Context(cli)) for o in p.opts]
        assert "--help" in opts
    assert mentions(man_sections["COMMANDS"], "--help")


# Configuration -------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(KEYS))
def test_config_key_in_man_page(key, man_sections):
    keys = split_sections(man_sections["CONFIGURATION"], "SS")["Keys"]
    assert re.search(rf"^{re.escape(key)} = ", keys, re.M), \
        f"CONFIGURATION / Keys in man/mailsync.1 has no entry `{key} = ...`"


@pytest.mark.parametrize("key", sorted(KEYS))
def test_config_key_in_readme(key, readme):
    assert re.search(rf"^\| `{re.escape(key)}` \|", readme, re.M), \
        f"the README's table of config keys lacks `{key}`"


def test_man_page_documents_no_config_key_that_does_not_exist(man_sections):
    keys = split_sections(man_sections["CONFIGURATION"], "SS")["Keys"]
    documented = set(re.findall(r"^(\w+) = ", keys, re.M))
    assert documented == set(KEYS)


# Exit status ---------------------------------------------------------------------------
def test_contract_exit_codes_match_the_code():
    constants = {v for k, v in vars(errors).items() if k.startswith("EX_")}
    assert constants == set(CONTRACT_EXIT_CODES)


def _exit_codes(section: str) -> set[int]:
    return {int(code) for code in re.findall(r"^\.TP\n\.B (\d+)$", section, re.M)}


@pytest.mark.parametrize("code", CONTRACT_EXIT_CODES + OTHER_EXIT_CODES)
def test_exit_code_in_man_page(code, man_sections):
    assert code in _exit_codes(man_sections["EXIT STATUS"]), \
        f"EXIT STATUS in man/mailsync.1 does not list {code}"


def test_man_page_lists_no_other_exit_code(man_sections):
    assert _exit_codes(man_sections["EXIT STATUS"]) == \
        set(CONTRACT_EXIT_CODES + OTHER_EXIT_CODES)


@pytest.mark.parametrize("code", CONTRACT_EXIT_CODES + OTHER_EXIT_CODES)
def test_exit_code_in_readme(code, readme):
    assert re.search(rf"^\| {code} \|", readme, re.M), f"README.md's exit table lacks {code}"


# Rendering -----------------------------------------------------------------------------
def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if groff is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("groff is not installed, so man/mailsync.1 cannot be checked "
                        "(apt-get install groff-base)")
        pytest.skip("groff is not installed")
    done = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(MAN)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# The repository stands alone -------------------------------------------------------------
# Working papers kept outside the repository (a product spec, design notes, a shared
# folder) must not be cited: whoever clones the project cannot read them. The design is
# docs/design.md; the contract is the README and the man page.
_OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"/work/" + "shared",
                                r"\b" + "SP" + r"EC(?:\.md)?\b(?!-)",
                                r"\b" + "DES" + r"IGN(?:\.md)?\b"]))
_MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _repository_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.splitlines()
            if (ROOT / name).is_file() and not name.startswith(".venv/")]


def test_no_file_cites_a_document_outside_the_repository():
    cited = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                cited.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not cited, "cites a document outside the repository:\n" + "\n".join(cited)


def test_every_link_in_the_docs_points_at_a_file_in_the_repository():
    broken = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("bench/*.md"))]:
        for target in _MD_LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue                     # https:, mailto:
            if not (path.parent / target).resolve().is_relative_to(ROOT) \
                    or not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to nothing in the repository:\n" + "\n".join(broken)


def test_the_readme_links_to_the_design_page():
    assert "](docs/design.md)" in README.read_text(encoding="utf-8")
    assert (ROOT / "docs" / "design.md").is_file()


def test_the_design_page_names_every_module():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    package = ROOT / "mailsync"
    unnamed = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(package)
        names = {f"`{relative}`", f"`{path.name}`", f"`{path.stem}`"}
        if not any(name in design for name in names):
            unnamed.append(str(relative))
    assert not unnamed, f"docs/design.md says nothing of {unnamed}: add each to its table"

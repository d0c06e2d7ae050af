"""The command line: parse, load the config, call the engine, map errors to exit codes.

No protocol, Maildir, SQL or sync decisions here. main() is the one place that turns
every failure into one line and the contract's exit status.
"""

from __future__ import annotations

import gc
import os
import shlex
import sys
import traceback
from functools import update_wrapper
from pathlib import Path

import click

from mailsync import __version__
from mailsync.errors import EX_IOERR, EX_USAGE, Interrupted, MailsyncError
from mailsync.modes import MODES

EX_SOFTWARE = 70


class Context:
    def __init__(self, config_path: str | None, quiet: bool, verbose: int, json_out: bool,
                 progress: bool) -> None:
        from mailsync.cli.ui import OutputOptions, Ui
        self.config_path = Path(config_path).expanduser() if config_path else None
        self.ui = Ui(OutputOptions(quiet=quiet, verbose=verbose, json=json_out,
                                   progress=progress))
        self.verbose = verbose
        self.jobs: int | None = None      # --jobs
        self.shard: str | None = None     # --shard K/N

    def accounts(self, names: tuple[str, ...], config=None) -> list:
        """The named accounts (all when none is named), only those of --shard's share."""
        config = config or self.config()
        chosen = config.select(names)
        if self.shard is not None:
            from mailsync.shard import in_shard, parse_shard
            chosen = in_shard(chosen, parse_shard(self.shard))
        return chosen

    def job_count(self, config) -> int:
        from mailsync.accounts import DEFAULT_JOBS
        return self.jobs or config.jobs or DEFAULT_JOBS

    def config(self):
        from mailsync.config import load_config
        cfg = load_config(self.config_path)
        for warning in cfg.warnings:
            self.ui.warn(warning)
        return cfg


class Settings:
    """The global options as given so far: before the command, after it, or both
    (`mailsync -q run` = `mailsync run -q`; -v counts add up, -c given twice: the last)."""

    def __init__(self) -> None:
        self.config_path: str | None = None
        self.quiet = self.json = self.no_progress = False
        self.verbose = 0
        self.jobs: int | None = None
        self.shard: str | None = None
        self.context: Context | None = None

    def make_context(self) -> Context:
        if self.context is None:
            self.context = Context(self.config_path, self.quiet, self.verbose, self.json,
                                   not self.no_progress)
            self.context.jobs, self.context.shard = self.jobs, self.shard
        return self.context

    def close(self) -> None:
        if self.context is not None:
            self.context.ui.close()


def _setting(name: str):
    def store(ctx: click.Context, param: click.Parameter, value):
        settings = ctx.ensure_object(Settings)
        if name == "verbose":
            settings.verbose += value or 0
        elif value:
            setattr(settings, name, value)
        return value
    return store


def _global_options(f):
    """The global options, on the group and on every command (see MailsyncGroup)."""
    decorators = [
        click.option("-c", "--config", metavar="PATH", expose_value=False,
                     callback=_setting("config_path"),
                     help="Config file (default: $MAILSYNC_CONFIG, else "
                          "$XDG_CONFIG_HOME/mailsync/config.toml)."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False,
                     callback=_setting("quiet"), help="Print nothing but errors."),
        click.option("-v", "--verbose", count=True, expose_value=False,
                     callback=_setting("verbose"),
                     help="More detail (a line per folder); -vv adds a protocol trace "
                          "with secrets redacted."),
        click.option("--json", is_flag=True, expose_value=False, callback=_setting("json"),
                     help="Print one JSON summary object on stdout when done."),
        click.option("--no-progress", is_flag=True, expose_value=False,
                     callback=_setting("no_progress"), help="Never draw progress bars."),
        click.option("--jobs", type=click.IntRange(min=1), metavar="N", expose_value=False,
                     callback=_setting("jobs"),
                     help="Work on up to N accounts at once (default: the config's "
                          "jobs, else 8)."),
        click.option("--shard", metavar="K/N", expose_value=False, callback=_setting("shard"),
                     help="Only the accounts in share K (0 to N-1) of N, by a stable hash "
                          "of the account name: N machines or processes take every "
                          "account once."),
        click.version_option(__version__, "--version", prog_name="mailsync",
                             help="Show the version and exit."),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _global_params() -> list[click.Parameter]:
    params = _global_options(lambda: None).__click_params__[::-1]
    for param in params:
        param.is_global = True
    return params


class MailsyncCommand(click.Command):
    """A command whose --help lists its own options, then the global ones apart."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own, shared = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                (shared if getattr(param, "is_global", False) else own).append(record)
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if shared:
            with formatter.section("Global options (before or after the command)"):
                formatter.write_dl(shared)


class MailsyncGroup(click.Group):
    """Every command takes the global options too, after its name, and lists them in
    its --help."""

    command_class = MailsyncCommand

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(getattr(p, "is_global", False) for p in cmd.params):
            cmd.params.extend(_global_params())
        super().add_command(cmd, name)


def pass_ctx(f):
    """Hand the command the run's Context, made once every global option is known."""
    @click.pass_context
    def wrapper(click_ctx: click.Context, *args, **kwargs):
        return f(click_ctx.ensure_object(Settings).make_context(), *args, **kwargs)
    return update_wrapper(wrapper, f)


@click.group(cls=MailsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_global_options
def cli() -> None:
    """Keep local Maildirs in step with POP3 and IMAP servers.

    The global options may also follow the command: `mailsync run -q` is
    `mailsync -q run`."""


def _run(ctx: Context, names: tuple[str, ...], options) -> None:
    from mailsync import stopping
    from mailsync.accounts import overall_exit_code, run_accounts
    config = ctx.config()
    accounts = ctx.accounts(names, config)
    _warn_ignored_options(ctx, accounts, options)
    stopping.install_signal_handlers()
    results = run_accounts(accounts, options, ctx.ui, jobs=ctx.job_count(config))
    _unmatched_folder_globs(results, options)
    from mailsync.logfile import log_results
    log_results(accounts, results, options)   # --log-file, log_file
    code = overall_exit_code(results)
    if stopping.stop_requested():
        code = stopping.interrupted().exit_code
    ctx.ui.results(results, code)
    sys.exit(code)


def _warn_ignored_options(ctx: Context, accounts: list, options) -> None:
    """An option that does nothing for an account is said, not silently ignored."""
    given = [name for name, value in (("--keep", options.keep), ("--limit", options.limit))
             if value is not None and options.command == "fetch"]
    for account in accounts:
        if account.protocol != "pop3" and given:
            ctx.ui.warn(f"account {account.name} is IMAP: {' and '.join(given)} apply to POP3 "
                        "accounts only and are ignored for it")


def _unmatched_folder_globs(results: list, options) -> None:
    """A --folder GLOB that matched no folder of an account is an error there (exit 64,
    a usage error: what was asked for cannot be done as written); the folders the
    other globs matched have still been synced."""
    if not options.folders:
        return
    from mailsync.errors import EX_USAGE
    from mailsync.names import matches
    for r in results:
        if r.protocol == "pop3" or r.folders is None or (not r.ok and not r.folders):
            continue
        unmatched = getattr(r, "unmatched_globs", None)   # the sync's, namespace-aware
        if unmatched is None:
            unmatched = [g for g in options.folders
                         if not any(matches(f.name, [g]) for f in r.folders)]
        if not unmatched:
            continue
        globs = ", ".join(repr(g) for g in unmatched)
        message = (f"account {r.name}: --folder {globs} matches no folder it syncs "
                   f"(folder names are case-sensitive; `mailsync folders {r.name}` "
                   "lists them)")
        r.error = f"{r.error}; {message}" if r.error else message
        r.ok, r.exit_code = False, EX_USAGE


_ALLOW_MASS_DELETE = click.option(
    "--allow-mass-delete", is_flag=True,
    help="IMAP: proceed even where a run would delete more than max_delete of a folder.")
_ALLOW_MASS_COPY = click.option(
    "--allow-mass-copy", is_flag=True,
    help="IMAP: proceed with a first sync whose content pairing matched too little of "
         "two full folders (it would copy most of each side to the other).")


@cli.command()
@click.argument("accounts", nargs=-1)
@_ALLOW_MASS_DELETE
@_ALLOW_MASS_COPY
@pass_ctx
def run(ctx: Context, accounts: tuple[str, ...], allow_mass_delete: bool,
        allow_mass_copy: bool) -> None:
    """Each account's own job: POP3 accounts fetch, IMAP accounts sync (all accounts when
    none is named). This is what cron calls."""
    from mailsync.accounts import RunOptions
    _run(ctx, accounts, RunOptions(command="run", allow_mass_delete=allow_mass_delete,
                                   allow_mass_copy=allow_mass_copy))


@cli.command()
@click.argument("accounts", nargs=-1)
@click.option("--keep", is_flag=True, default=None,
              help="POP3: leave the messages on the server.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="POP3: download at most N messages.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@_ALLOW_MASS_DELETE
@_ALLOW_MASS_COPY
@pass_ctx
def fetch(ctx: Context, accounts: tuple[str, ...], keep: bool | None, limit: int | None,
          dry_run: bool, allow_mass_delete: bool, allow_mass_copy: bool) -> None:
    """POP3: download new messages, then delete them on the server. IMAP: a one-way pull
    of new mail, as `sync --mode pull`."""
    from mailsync.accounts import RunOptions
    _run(ctx, accounts, RunOptions(command="fetch", dry_run=dry_run, keep=keep, limit=limit,
                                   mode="pull", allow_mass_delete=allow_mass_delete,
                                   allow_mass_copy=allow_mass_copy))


@cli.command()
@click.argument("accounts", nargs=-1)
@click.option("--folder", "folders", multiple=True, metavar="GLOB",
              help="Only server folders matching GLOB (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--mode", type=click.Choice(MODES),
              help="Override the account's mode for this run.")
@_ALLOW_MASS_DELETE
@_ALLOW_MASS_COPY
@click.option("--full", is_flag=True,
              help="Upgrade every headers-only placeholder to the full message.")
@pass_ctx
def sync(ctx: Context, accounts: tuple[str, ...], folders: tuple[str, ...], dry_run: bool,
         mode: str | None, allow_mass_delete: bool, allow_mass_copy: bool,
         full: bool) -> None:
    """IMAP two-way sync between server folders and local Maildir folders."""
    from mailsync.accounts import RunOptions
    _run(ctx, accounts, RunOptions(command="sync", dry_run=dry_run, mode=mode,
                                   folders=folders, allow_mass_delete=allow_mass_delete,
                                   allow_mass_copy=allow_mass_copy, full=full))


@cli.command()
@click.argument("accounts", nargs=-1)
@pass_ctx
def check(ctx: Context, accounts: tuple[str, ...]) -> None:
    """Validate the config, connect, verify TLS, log in, list capabilities and folders;
    changes nothing anywhere."""
    from mailsync.cli.readonly import check_accounts
    results = check_accounts(ctx.accounts(accounts), ctx.ui)
    sys.exit(results)


@cli.command()
@click.argument("accounts", nargs=-1)
@click.option("--all", "every_row", is_flag=True,
              help="A row for every account and folder, however many accounts there "
                   "are (without it, over 20 accounts are summed up on one screen).")
@pass_ctx
def status(ctx: Context, accounts: tuple[str, ...], every_row: bool) -> None:
    """What the local state knows: last run, its result, counts per folder."""
    from mailsync.cli.readonly import show_status
    sys.exit(show_status(ctx.accounts(accounts), ctx.ui, every_row))


@cli.command()
@click.argument("account", required=False)
@pass_ctx
def folders(ctx: Context, account: str | None) -> None:
    """Server folders with message counts and the local folder each maps to (ACCOUNT may
    be left out when the config has one account)."""
    from mailsync.errors import UsageError
    from mailsync.cli.readonly import show_folders
    config = ctx.config()
    if account is None and len(config.accounts) != 1:
        raise UsageError("folders needs an ACCOUNT: the config has "
                         f"{len(config.accounts)} accounts",
                         "name one of: " + ", ".join(config.accounts))
    sys.exit(show_folders(config.select([account] if account else [])[0], ctx.ui))


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@pass_ctx
def init(ctx: Context, path: str | None) -> None:
    """Write a commented example config (never overwrites a file)."""
    from mailsync.config import default_config_path
    from mailsync.example import write_example
    target = Path(path).expanduser() if path else (ctx.config_path or default_config_path())
    write_example(target)
    default = ctx.config_path is None and os.path.abspath(target) == os.path.abspath(
        default_config_path())
    check = "mailsync check" if default else f"mailsync -c {shlex.quote(str(target))} check"
    ctx.ui.lines([f"wrote {target}; edit it, then run `{check}`"])


@cli.command()
@click.argument("account")
@click.option("--device", is_flag=True,
              help="Sign in with a code on another device (the device-code flow).")
@click.option("--no-browser", is_flag=True,
              help="Do not open a browser; print the address to open instead.")
@pass_ctx
def login(ctx: Context, account: str, device: bool, no_browser: bool) -> None:
    """OAuth2 sign-in for ACCOUNT: in a browser (or --device), or with the client
    credentials of an organisation app; stores the refresh token and says where."""
    from mailsync import oauth
    from mailsync.oauth import login as oauth_login
    acct = ctx.config().select([account])[0]
    if ctx.ui.tracing:
        oauth.TRACE = ctx.ui.trace

    def say(text: str) -> None:
        click.echo(text, err=True)

    done = oauth_login(acct, say, device=device,
                       open_browser=not no_browser and sys.stdin.isatty())
    what = "refresh token" if done.refresh_token else "access token"
    lines = [f"{acct.name}: signed in ({done.flow}); {what} stored in {done.where}"]
    if not done.refresh_token and done.flow != "client credentials":
        lines.append(f"{acct.name}: the provider sent no refresh token: sign in again "
                     "when the access token expires (Microsoft needs the offline_access "
                     "scope)")
    ctx.ui.lines(lines)


@cli.command()
@click.argument("account")
@pass_ctx
def password(ctx: Context, account: str) -> None:
    """Store ACCOUNT's password in the system keyring (read from the terminal, or the
    first line of standard input); use it with password_keyring = true."""
    from mailsync.errors import UsageError
    from mailsync.secrets_store import store_password
    acct = ctx.config().select([account])[0]
    if sys.stdin.isatty():
        value = click.prompt(f"Password for {acct.user} ({acct.name})", hide_input=True,
                             confirmation_prompt=True, err=True)
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UsageError("no password given", "type it, or pipe it on standard input")
    where = store_password(acct, value)
    note = "" if acct.password_keyring else "; set password_keyring = true to use it"
    ctx.ui.lines([f"{acct.name}: password stored in {where}{note}"])


from mailsync.cli.commands import register as _register_commands  # noqa: E402

_register_commands(cli, pass_ctx)   # watch, schedule; ACCOUNT completion everywhere


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one line and the contract's exit code."""
    settings = Settings()
    try:
        cli.main(args=argv, prog_name="mailsync", standalone_mode=False, obj=settings)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except click.exceptions.NoArgsIsHelpError as exc:   # `mailsync` alone: the help
        click.echo(exc.ctx.get_help(), err=True)
        code = EX_USAGE
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "mailsync"
        hint = f" (see `{where} --help`)"
        click.echo(f"mailsync: {exc.format_message()}{hint}", err=True)
        code = EX_USAGE
    except click.exceptions.Abort:
        click.echo("mailsync: interrupted", err=True)
        code = Interrupted.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except MailsyncError as exc:
        click.echo(f"mailsync: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("mailsync: interrupted; what was stored is recorded, run again to finish",
                   err=True)
        code = Interrupted.exit_code
    except OSError as exc:
        click.echo(f"mailsync: {exc.filename or ''}: {exc.strerror or exc}", err=True)
        code = EX_IOERR
    except Exception as exc:  # a bug: one line, the traceback only with -vv
        click.echo(f"mailsync: internal error: {type(exc).__name__}: {exc} "
                   "(rerun with -vv and report it)", err=True)
        if settings.verbose >= 2:
            traceback.print_exc()
        code = EX_SOFTWARE
    finally:
        settings.close()   # a progress view still drawn is stopped, the cursor shown
    sys.stdout.flush()
    sys.exit(code)


def entry() -> None:
    """The installed command and `python -m mailsync`: main(), then a normal exit, so
    exit handlers (and coverage) run. Every helper thread is a daemon, so none can hold
    the exit up; output a reader no longer takes (`mailsync status | head -1`) is
    dropped instead of turning into an error at the exit.

    gc.freeze(): the interpreter's teardown collects garbage over every object still
    alive, about 15 ms of a 150 ms `mailsync status` (bench/startup.py); frozen objects
    are passed over. Nothing mailsync holds needs that collection: every file and
    database it wrote is closed and synced by now."""
    try:
        main()
    finally:
        _drop_unread_output()
        gc.freeze()


def _drop_unread_output() -> None:
    """Flush stdout and stderr; a stream whose reader went away is pointed at
    /dev/null, so the interpreter's own flush at exit has nothing to complain about."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:              # closed
            pass
        except OSError:                 # EPIPE: the reader went away
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

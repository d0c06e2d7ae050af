"""The commands of the always-in-step work: watch and schedule, and account-name
completion for every command's ACCOUNT argument. cli.py registers them on its group
(register(cli, pass_ctx)), so they take the global options like the others."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import click


def complete_accounts(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Account names from the config (the -c one when given), for shell completion.
    The file is only read, never validated: completion must not fail."""
    from click.shell_completion import CompletionItem
    from mailsync.config import default_config_path
    root = ctx.find_root()
    path = root.params.get("config_path") or getattr(root.obj, "config_path", None)
    try:
        data = tomllib.loads(Path(path or default_config_path()).expanduser().read_text())
        names = list(data.get("accounts", {}))
    except (OSError, ValueError, AttributeError):
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def _log_file_option() -> click.Option:
    from mailsync.logfile import remember_cli_path
    option = click.Option(["--log-file"], metavar="PATH", expose_value=False,
                          type=click.Path(dir_okay=False), callback=remember_cli_path,
                          help="Append one line per event (time, account, folder, what, "
                               "counts) to PATH, beside each account's log_file.")
    option.is_global = True   # listed with the global options in --help
    return option


def register(cli: click.Group, pass_ctx) -> None:
    for command in cli.commands.values():   # ACCOUNT arguments complete from the config
        for param in command.params:
            if isinstance(param, click.Argument) and param.name in ("accounts", "account"):
                param._custom_shell_complete = complete_accounts
    cli.params.append(_log_file_option())    # mailsync --log-file PATH run

    @cli.command()
    @click.argument("accounts", nargs=-1, shell_complete=complete_accounts)
    @pass_ctx
    def watch(ctx, accounts: tuple[str, ...]) -> None:
        """Stay running and keep the accounts in step: server changes through NOTIFY
        or IDLE, Maildir changes through inotify, a full pass every watch_full_sync,
        POP3 polled every poll_interval. SIGTERM/SIGINT stop it (exit 0), SIGHUP
        re-reads the config."""
        from mailsync.logfile import EventLog, cli_paths
        from mailsync.watch import watch_accounts
        from mailsync.watchview import WatchView, on_terminal
        quiet = getattr(ctx.ui.options, "quiet", False)
        # On a terminal a live table (state, last sync, next action per account) with
        # the event lines above it; else one log line per sync on stderr.
        view = WatchView() if on_terminal(quiet) else None
        log = EventLog(cli_paths(), to_stderr=not quiet,
                       stream=view.stream if view is not None and sys.stderr.isatty()
                       else None)
        sys.exit(watch_accounts(ctx.config, accounts, log, view))

    @cli.command()
    @click.argument("account", shell_complete=complete_accounts)
    @click.option("--every", metavar="DURATION",
                  help="How often the timer runs `mailsync run ACCOUNT` (15m, 1h ...).")
    @click.option("--watch", "as_watch", is_flag=True,
                  help="A service running `mailsync watch ACCOUNT` instead of a timer.")
    @click.option("--install", is_flag=True,
                  help="Write the units under ~/.config/systemd/user/ instead of "
                       "printing them.")
    @pass_ctx
    def schedule(ctx, account: str, every: str | None, as_watch: bool,
                 install: bool) -> None:
        """Print a systemd user service and timer running ACCOUNT every DURATION (or,
        with --watch, the service for `mailsync watch`); --install writes them."""
        from mailsync.cli import schedule as sched
        config = ctx.config()
        config.select([account])   # an unknown account is refused here
        made = sched.units(account, every, as_watch, ctx.config_path)
        if not install:
            for i, unit in enumerate(made):
                click.echo(("\n" if i else "") + f"# {unit.name}\n{unit.text}", nl=False)
            return
        paths = sched.install(made)
        ctx.ui.lines([f"wrote {p}" for p in paths] + [f"then: {sched.enable_hint(made)}"])

    for command in cli.commands.values():    # global: every command takes it
        if not any(p.name == "log_file" for p in command.params):
            command.params.append(_log_file_option())

"""deploy/: the container recipe builds from the repository alone, and the Kubernetes
example runs a real `mailsync` invocation per shard with its paths on its volumes.

The recipe is built with a container tool where one works (a docker or podman whose
daemon answers); where none does, as on this project's CI machine (a docker client
without a daemon), the recipe's own install step (deploy/install.sh, which its RUN
line calls) runs in a clean virtualenv from a copy of exactly what the recipe COPYs.
The manifest is YAML, read with PyYAML (in the test extra for this: the file users
copy is the one checked, comments and all, and only a YAML parser reads it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import click
import pytest
import yaml

from mailsync.cli.app import Settings, cli
from mailsync.shard import parse_shard

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "deploy" / "Containerfile"
MANIFEST = ROOT / "deploy" / "kubernetes" / "cronjob.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the recipe, continuation lines joined."""
    text = re.sub(r"\\\n", " ", RECIPE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parses_as_mailsync(argv: list[str]) -> click.Command:
    """The words after `mailsync` parse as one of its commands with its options (click's
    own parser, nothing run); returns the command."""
    settings = Settings()
    ctx = cli.make_context("mailsync", list(argv), obj=settings)
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:                    # click before 8.2
        protected = ctx.protected_args
    name, command, rest = cli.resolve_command(ctx, list(protected) + ctx.args)
    command.make_context(name, rest, parent=ctx)
    return command


def working_container_tool() -> str | None:
    for tool in ("podman", "docker"):
        path = shutil.which(tool)
        if path and subprocess.run([path, "info"], capture_output=True,
                                   timeout=60).returncode == 0:
            return path
    return None


# The recipe -------------------------------------------------------------------------------
def test_the_recipe_copies_only_what_the_repository_holds_and_runs_mailsync():
    steps = instructions()
    copies = [shlex.split(args)[:-1] for op, args in steps if op == "COPY"]
    assert copies and all((ROOT / src).exists() for srcs in copies for src in srcs)
    entry = json.loads(next(args for op, args in steps if op == "ENTRYPOINT"))
    cmd = json.loads(next(args for op, args in steps if op == "CMD"))
    assert entry == ["mailsync"]
    assert parses_as_mailsync(cmd).name == "run"
    run_lines = [args for op, args in steps if op == "RUN"]
    assert any("deploy/install.sh" in line for line in run_lines)


@pytest.mark.server   # builds an image or installs from the package index: not the fast part
def test_the_recipe_builds_from_the_repository_alone(tmp_path):
    tool = working_container_tool()
    if tool is not None:
        done = subprocess.run([tool, "build", "-f", str(RECIPE), "-t", "mailsync-test",
                               str(ROOT)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        shown = subprocess.run([tool, "run", "--rm", "mailsync-test", "--version"],
                               capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and "mailsync" in shown.stdout
        return
    # No container tool works here: the recipe's steps in a clean virtualenv, from a
    # copy of exactly what it COPYs (so a file it forgets to copy fails the install).
    source = tmp_path / "src"
    for op, args in instructions():
        if op != "COPY":
            continue
        *sources, dest = shlex.split(args)
        target = source / dest.removeprefix("/src/").rstrip("/")
        for src in sources:
            from_path = ROOT / src
            into = target / from_path.name if dest.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if from_path.is_dir():
                shutil.copytree(from_path, into, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.egg-info"))
            else:
                shutil.copy2(from_path, into)
    prefix = tmp_path / "opt"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHON", "MAILSYNC_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT / ".venv")))
    done = subprocess.run(["sh", str(source / "deploy" / "install.sh"), str(prefix),
                           str(source)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("mailsync, version")
    # Every module of the package was installed (a sub-package left out of the wheel
    # fails only when a run first imports it).
    site, = (prefix / "lib").glob("python3*/site-packages")
    installed = {p.relative_to(site).as_posix() for p in (site / "mailsync").rglob("*.py")}
    ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mailsync").rglob("*.py")}
    assert installed == ours, sorted(ours ^ installed)
    # The installed command works on its own: a config, a shard, a status.
    config = tmp_path / "config.toml"
    config.write_text(f'[defaults]\nprotocol = "imap"\nhost = "h"\npassword = "x"\n'
                      f'user = "{{account}}"\nstate_dir = "{tmp_path}/state/{{account}}"\n'
                      f'maildir = "{tmp_path}/mail/{{account}}"\n[accounts.a]\n[accounts.b]\n')
    config.chmod(0o600)
    shown = subprocess.run([str(prefix / "bin" / "mailsync"), "-c", str(config), "--json",
                            "--shard", "0/1", "status"], capture_output=True, text=True,
                           timeout=60, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert [a["name"] for a in json.loads(shown.stdout)["accounts"]] == ["a", "b"]


# The Kubernetes example ----------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_the_cronjob_is_an_indexed_job_whose_pods_each_run_one_shard(manifest):
    job = manifest["CronJob"]["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    container, = pod["containers"]
    argv = container["command"] + container["args"]
    assert argv[0] == "mailsync"
    shard = argv[argv.index("--shard") + 1]
    count = int(shard.split("/")[1])
    assert job["completions"] == count and job["parallelism"] <= count
    index_env, = [e for e in container["env"] if f"$({e['name']})" in shard]
    assert "job-completion-index" in index_env["valueFrom"]["fieldRef"]["fieldPath"]
    shards = set()
    for k in range(job["completions"]):   # the words each pod runs, as Kubernetes expands them
        words = [w.replace(f"$({index_env['name']})", str(k)) for w in argv[1:]]
        assert parses_as_mailsync(words).name == "run"
        shards.add(parse_shard(words[words.index("--shard") + 1]))
    assert shards == {(k, count) for k in range(count)}   # every share, once


def test_the_cronjob_keeps_each_accounts_maildir_and_state_on_its_volume(manifest, tmp_path):
    pod = manifest["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container, = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    config_path = Path(env["MAILSYNC_CONFIG"])
    config_volume = volumes[mounts[str(config_path.parent)]]
    config_map = manifest["ConfigMap"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][config_path.name]
    data_mount = next(p for p, n in mounts.items()
                      if "persistentVolumeClaim" in volumes[n])
    claim = volumes[mounts[data_mount]]["persistentVolumeClaim"]["claimName"]
    assert manifest["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert "ReadWriteMany" in manifest["PersistentVolumeClaim"]["spec"]["accessModes"]
    # The config is a valid mailsync config, every account's paths on the volume.
    (tmp_path / "config.toml").write_text(text)
    (tmp_path / "config.toml").chmod(0o600)
    from mailsync.config import load_config
    accounts = load_config(tmp_path / "config.toml").accounts
    assert accounts
    for account in accounts.values():
        for path in (account.maildir, account.state_dir):
            assert str(path).startswith(data_mount + "/"), path
        secret = shlex.split(account.password_command)[-1]
        secret_mount = str(Path(secret).parent)
        assert "secret" in volumes[mounts[secret_mount]]
        assert account.name in secret
    assert tomllib.loads(text)["jobs"] >= 1

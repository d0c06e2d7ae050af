"""The POP3 decision: what is downloaded, deleted, left on the server."""

import ast
from pathlib import Path

from mailsync.pop3fetch.plan import DAY, FetchPolicy, ServerMessage, plan_fetch

NOW = 1_800_000_000.0


def listing(*uids, size=100):
    return [ServerMessage(i + 1, uid, size) for i, uid in enumerate(uids)]


def test_new_messages_are_downloaded_and_then_deleted():
    plan = plan_fetch(listing("a", "b"), {}, FetchPolicy(), NOW)
    assert [m.uid for m in plan.downloads] == ["a", "b"]
    assert plan.delete_after_download and not plan.deletes


def test_messages_stored_by_an_earlier_run_are_deleted_not_downloaded():
    plan = plan_fetch(listing("a", "b"), {"a": NOW}, FetchPolicy(), NOW)
    assert [m.uid for m in plan.downloads] == ["b"]
    assert [m.uid for m in plan.deletes] == ["a"]


def test_keep_leaves_everything_on_the_server():
    plan = plan_fetch(listing("a", "b"), {"a": NOW}, FetchPolicy(keep=True), NOW)
    assert [m.uid for m in plan.downloads] == ["b"]
    assert not plan.deletes and not plan.delete_after_download


def test_keep_days_deletes_only_messages_downloaded_long_enough_ago():
    seen = {"old": NOW - 15 * DAY, "young": NOW - 13 * DAY}
    plan = plan_fetch(listing("old", "young"), seen, FetchPolicy(keep=True, keep_days=14), NOW)
    assert [m.uid for m in plan.deletes] == ["old"]
    assert not plan.downloads


def test_max_size_leaves_large_messages_on_the_server():
    msgs = [ServerMessage(1, "a", 10), ServerMessage(2, "b", 5000)]
    plan = plan_fetch(msgs, {}, FetchPolicy(max_size=1000), NOW)
    assert [m.uid for m in plan.downloads] == ["a"]
    assert [m.uid for m in plan.too_large] == ["b"]


def test_limit_defers_the_rest_to_a_later_run():
    plan = plan_fetch(listing("a", "b", "c"), {}, FetchPolicy(limit=2), NOW)
    assert [m.uid for m in plan.downloads] == ["a", "b"] and plan.deferred == 1


def test_without_uidl_every_message_is_downloaded_to_be_recognised_by_content():
    plan = plan_fetch(listing(None, None), {"sha256:ab": NOW}, FetchPolicy(), NOW)
    assert len(plan.downloads) == 2 and not plan.forget


def test_uidls_the_server_no_longer_lists_are_forgotten():
    plan = plan_fetch(listing("a"), {"a": NOW, "gone": NOW}, FetchPolicy(keep=True), NOW)
    assert plan.forget == ("gone",)


def test_planner_imports_no_io():
    tree = ast.parse(Path(__file__).parent.parent.joinpath("mailsync/pop3fetch/plan.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"os", "socket", "poplib", "sqlite3", "imapclient", "click", "rich"}

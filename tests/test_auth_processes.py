"""Many pocket processes of one user on one machine, one callback port (the one redirect URI registered at the
provider): each hands out its authorization URL and sees its own request completed, whichever process holds
the port when the callback lands. Against the real authorization server (oidc-provider)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from mcp import Client

from runner.auth import Authenticator
from runner.errors import SettingsError
from runner.settings import load_settings
from tests.auth_helpers import make_tool
from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET, Person, idp_entry
from tests.helpers import REPO, free_port, wait_listening

AGENT = """
import json, sys
from runner.pocket import Pocket
from runner.settings import load_settings

settings_file, secrets_file, tool = sys.argv[1:4]
with Pocket([tool], settings=load_settings(settings_file, secrets_file)) as pocket:
    print(json.dumps(pocket.initialize_tool_auth(user_id="alice")), flush=True)
    authorized = pocket.wait_tool_auth(timeout=120, user_id="alice")
    print(json.dumps({"authorized": authorized, "still_needed": pocket.initialize_tool_auth(user_id="alice")}))
"""


def shared_files(tmp_path: Path, callback_port: int, issuer: str) -> list[str]:
    """One settings file and one secrets file, as every process of this user reads them."""
    settings = tmp_path / "settings.toml"
    settings.write_text(
        f'data_dir = "{tmp_path / "data"}"\ncache_dir = "{tmp_path / "cache"}"\n'
        f"[credentials]\ncallback_port = {callback_port}\n"
    )
    secrets = tmp_path / ".secrets.toml"
    secrets.write_text(
        f'[auth.testidp]\nissuer = "{issuer}"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
        'default_scopes = ["openid", "offline_access"]\nauthorization_params = { prompt = "consent" }\n'
        'env = { TESTIDP_TOKEN = "{token}" }\n'
    )
    return [str(settings), str(secrets)]


def listeners(port: int, pids: list[int]) -> list[int]:
    """Which of `pids` listen on 127.0.0.1:`port` (from /proc: the socket's inode among their descriptors)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # 127.0.0.1:port, LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    holders = []
    for pid in pids:
        try:
            links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except (FileNotFoundError, ProcessLookupError):
            continue
        if links & inodes:
            holders.append(pid)
    return holders


def wait_for_holder(port: int, pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = listeners(port, pids)
        if holders:
            return holders
        time.sleep(0.05)
    return []


def call_tool(mcp_url: str) -> Any:
    async def scenario() -> Any:
        async with Client(mcp_url) as client:
            return await client.call_tool("reader", {})

    return anyio.run(scenario)


def state_and_code(callback: str) -> list[str]:
    query = parse_qs(urlsplit(callback).query)
    return [query["state"][0], query["code"][0]]


def test_three_processes_share_one_callback_port(tmp_path, callback_port, oidc_server):
    files = shared_files(tmp_path, callback_port, oidc_server.issuer)
    options = ["--settings", files[0], "--secrets", files[1]]
    tool = str(make_tool(tmp_path, "reader", "testidp", ["api:read"]))
    agent_script = tmp_path / "agent.py"
    agent_script.write_text(textwrap.dedent(AGENT))
    mcp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKET_")}
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    cli = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *options, "auth", "login", "testidp", "--scope", "api:read",
         "--user", "carol"], cwd=REPO, **pipes,
    )  # fmt: skip
    serve = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *options, "serve", tool, "--http", "--no-auth", "--port", str(mcp_port),
         "--user", "bob"], cwd=REPO, **pipes,
    )  # fmt: skip
    agent = subprocess.Popen([sys.executable, str(agent_script), *files, tool], cwd=REPO, **pipes)
    processes = {"cli": cli, "serve": serve, "agent": agent}
    outputs: dict[str, tuple[str, str]] = {}
    try:
        # Each of the three hands out a URL at once.
        cli_url = cli.stdout.readline().strip()
        assert cli_url.startswith(oidc_server.issuer), cli.stderr.read()
        assert wait_listening(mcp_port, serve, timeout=30), serve.stderr.read()
        needs_auth = call_tool(f"http://127.0.0.1:{mcp_port}/mcp")
        assert needs_auth.meta["pocket/outcome"] == "auth_required", needs_auth
        serve_url = needs_auth.meta["pocket/auth_url"]
        assert serve_url.startswith(oidc_server.issuer)
        assert "authorization is needed for user 'bob'" in needs_auth.content[0].text
        agent_line = agent.stdout.readline()
        assert agent_line, agent.stderr.read()
        agent_url = json.loads(agent_line)["testidp"]
        assert agent_url.startswith(oidc_server.issuer)
        assert len({cli_url, serve_url, agent_url}) == 3
        redirect = f"http://127.0.0.1:{callback_port}/auth/testidp/callback"
        for url in (cli_url, serve_url, agent_url):  # one redirect URI for all, the one registered
            assert parse_qs(urlsplit(url).query)["redirect_uri"] == [redirect]

        # Exactly one of them holds the port; the callbacks of all three land there.
        pids = [p.pid for p in processes.values()]
        holders = wait_for_holder(callback_port, pids)
        assert len(holders) == 1, holders
        holder = next(name for name, p in processes.items() if p.pid == holders[0])

        people = {name: Person(login=name) for name in ("carol", "bob", "alice")}
        callbacks = {
            "carol": people["carol"].authorize(cli_url),
            "bob": people["bob"].authorize(serve_url),
            "alice": people["alice"].authorize(agent_url),
        }
        opener = {"carol": "cli", "bob": "serve", "alice": "agent"}
        order = sorted(callbacks, key=lambda user: opener[user] != holder)  # the holder's own first: it may exit
        pages = {}
        for user in order:
            alive = [p.pid for p in processes.values() if p.poll() is None]
            now = wait_for_holder(callback_port, alive)
            assert len(now) == 1, now  # one at a time; after the holder exits, another takes the port over
            pages[user] = people[user].visit(callbacks[user])
            if opener[user] in ("cli", "agent"):  # they end once their request has its outcome
                outputs[opener[user]] = processes[opener[user]].communicate(timeout=60)
        for user, page in pages.items():
            assert page.status_code == 200, page.text
            assert "testidp is connected" in page.text and f"for user {user}" in page.text

        # Each process reports its own request authorized.
        _, cli_err = outputs["cli"]
        assert cli.returncode == 0, cli_err
        assert "testidp is authorized for user 'carol'" in cli_err
        agent_out, agent_err = outputs["agent"]
        assert agent.returncode == 0, agent_err
        assert json.loads(agent_out.splitlines()[-1]) == {"authorized": True, "still_needed": {}}
        again = call_tool(f"http://127.0.0.1:{mcp_port}/mcp")
        assert again.meta["pocket/outcome"] != "auth_required", again
        assert "authorization is needed" not in again.content[0].text

        # A state completed by a process that did not open it is single use: a replay is refused.
        assert wait_for_holder(callback_port, [serve.pid]) == [serve.pid]  # the last one left takes the port
        for user in ("carol", "bob", "alice"):
            replay = people[user].visit(callbacks[user])
            assert replay.status_code == 400 and "Authorization link not recognised" in replay.text
        for person in people.values():
            person.client.close()
    finally:
        for name, process in processes.items():
            if process.poll() is None:
                process.terminate()
            if name not in outputs:
                try:
                    outputs[name] = process.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    outputs[name] = process.communicate()

    # Nothing secret in what any process printed: states, codes, tokens.
    auth = Authenticator(load_settings(*files))
    try:
        secrets = [part for callback in callbacks.values() for part in state_and_code(callback)]
        for user in ("carol", "bob", "alice"):
            stored = auth.store.get(user, "testidp")
            assert stored is not None and "api:read" in stored.scopes
            secrets += [stored.value("token"), stored.value("refresh_token")]
    finally:
        auth.close()
    printed = "".join(out + err for out, err in outputs.values())
    assert all(secret and secret not in printed for secret in secrets)
    assert "code_verifier" not in printed and "Traceback" not in printed


def test_a_request_completed_by_the_holder_is_reported_by_its_opener_and_single_use(make_settings, oidc_server):
    """In one process for speed: two Authenticators on one data dir and callback port, as two processes are."""
    settings = make_settings({"testidp": idp_entry(oidc_server.issuer)})
    holder, other = Authenticator(settings), Authenticator(settings)
    try:
        holder_url = holder.authorization_url("testidp", user_id="dan")
        other_url = other.authorization_url("testidp", user_id="erin")  # the port is taken: no error, a URL
        assert other_url.startswith(oidc_server.issuer) and other_url != holder_url
        assert holder._site.holds_port() and not other._site.holds_port()
        erin = Person(login="erin")
        callback = erin.authorize(other_url)
        page = erin.visit(callback)  # lands at the holder, which did not open the request
        assert page.status_code == 200 and "testidp is connected" in page.text and "for user erin" in page.text
        assert other.wait(timeout=10, user_id="erin") == {"testidp": "authorized"}
        assert holder.wait(timeout=0, user_id="erin") == {}  # not the holder's request to report
        replay = erin.visit(callback)
        assert replay.status_code == 400 and "already used" in replay.text
        assert other.store.get("erin", "testidp") is not None
        erin.client.close()

        pending = other.authorization_url("testidp", user_id="frank")
        holder.close()  # the holder exits: the other process takes the port over
        deadline = time.monotonic() + 10
        while not other._site.holds_port() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other._site.holds_port()
        frank = Person(login="frank")
        assert frank.visit(frank.authorize(pending)).status_code == 200
        assert other.wait(timeout=10, user_id="frank") == {"testidp": "authorized"}
        frank.client.close()
    finally:
        holder.close()
        other.close()


def test_the_port_held_by_another_program_is_still_a_settings_error(make_settings, oidc_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        auth = Authenticator(make_settings({"testidp": idp_entry(oidc_server.issuer)}, callback_port=port))
        try:
            with pytest.raises(SettingsError, match=r"Address already in use; set credentials\.callback_port"):
                auth.authorization_url("testidp")
        finally:
            auth.close()


def test_a_denial_at_the_holder_is_the_openers_failure(make_settings, oidc_server):
    settings = make_settings({"testidp": idp_entry(oidc_server.issuer)})
    holder, other = Authenticator(settings), Authenticator(settings)
    try:
        holder.authorization_url("testidp", user_id="dan")
        url = other.authorization_url("testidp", user_id="gail")
        gail = Person(login="gail")
        page = gail.visit(gail.authorize(url, deny=True))
        assert page.status_code == 400 and "You declined access." in page.text
        [(provider, outcome)] = other.wait(timeout=10, user_id="gail").items()
        assert provider == "testidp" and outcome.startswith("failed: access_denied")
        assert other.store.get("gail", "testidp") is None
        gail.client.close()
    finally:
        holder.close()
        other.close()


def test_a_request_claimed_by_a_process_that_then_died_ends_as_a_failure(tmp_path, monkeypatch):
    """Its holder claimed the callback and exited before recording an outcome: the opener's wait does not hang."""
    from runner.auth import consent as consent_module
    from runner.auth.consent import Consent
    from runner.auth.oauth import Pending, new_state
    from runner.auth.store import CredentialStore

    monkeypatch.setattr(consent_module, "_LOST_AFTER", 0.5)
    store = CredentialStore(tmp_path / "data")
    consent = Consent(lambda: store)
    pending = Pending(
        state=new_state(), user_id="hal", provider="testidp", kind="oauth2", scopes=(), redirect_uri="x", ttl=0.5
    )
    consent.open(pending)
    assert store.claim_request(pending.state) is not None  # the other process's server took it
    assert store.claim_request(pending.state) is None  # once only
    started = time.monotonic()
    outcome = consent.wait(timeout=10, user_id="hal")
    assert time.monotonic() - started < 5
    assert str(outcome["testidp"]) == "failed: the pocket process that received the callback did not finish it"

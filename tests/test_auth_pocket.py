"""What agents see: Pocket's auth surface (hyperpocket-compatible), per-user credentials, redaction.

The real authorization server (`oidc_server`), the real Authenticator and, for calls, the real sandbox: the
test tool reports a hash of the token it received, so a test compares it with the token the user holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from runner.invocation import Invocation, Outcome
from runner.pocket import Pocket
from runner.settings import SandboxSettings
from tests.auth_helpers import containers_created, make_tool, write_settings
from tests.fixtures_oauth import idp_entry


@pytest.fixture
def pocket_factory(tmp_path, make_settings, oidc_server):
    made: list[Pocket] = []

    def make(tools: list[Path], auth: dict | None = None) -> Pocket:
        settings = make_settings(auth if auth is not None else {"testidp": idp_entry(oidc_server.issuer)})
        # A few calls per tool: a pool would mostly start containers only to remove them.
        settings = settings.model_copy(update={"sandbox": SandboxSettings(pool_size=0)})
        pocket = Pocket([str(t) for t in tools], settings=settings)
        made.append(pocket)
        return pocket

    yield make
    for pocket in made:
        pocket.close()


@pytest.mark.docker
def test_invoke_without_credentials_returns_auth_required_with_the_url(pocket_factory, tmp_path, docker_api):
    pocket = pocket_factory([make_tool(tmp_path, "unauthorized", "testidp", ["api:read"])])
    since = time.time()
    result = pocket.invoke("unauthorized", {})
    assert result.outcome is Outcome.AUTH_REQUIRED and result.outcome.exit_code == 3
    assert result.auth_url and result.auth_url in result.error
    assert (result.value, result.exit_code, result.stderr) == (None, None, "")
    assert containers_created(docker_api, "unauthorized", since) == []  # the tool never ran


@pytest.mark.docker
def test_initialize_wait_then_invoke_injects_the_token_and_redacts_it(
    pocket_factory, tmp_path, person, oidc_server, docker_api
):
    tools = [
        make_tool(tmp_path, "reader", "testidp", ["api:read"]),
        make_tool(tmp_path, "writer", "testidp", ["api:write"]),
        make_tool(tmp_path, "search", "serpapi", []),
    ]
    pocket = pocket_factory(tools)
    urls = pocket.initialize_tool_auth()
    assert set(urls) == {"testidp", "serpapi"}
    assert "/auth/serpapi/form?state=" in urls["serpapi"]
    scope = urls["testidp"].split("scope=")[1].split("&")[0]
    assert "api%3Aread" in scope and "api%3Awrite" in scope  # the union of the loaded tools' scopes

    def the_person() -> None:
        person.visit(person.authorize(urls["testidp"]))
        form_page = person.visit(urls["serpapi"])
        state = form_page.text.split("name='state' value='")[1].split("'")[0]
        person.client.post(urls["serpapi"].split("?")[0], data={"state": state, "token": "serp-key-123456"})

    worker = threading.Thread(target=the_person)
    worker.start()
    assert pocket.wait_tool_auth(timeout=30) is True
    worker.join()
    assert pocket.initialize_tool_auth() == {}

    # The token the Authenticator holds for the user: issued moments ago (3 s), far from the 1 s refresh margin,
    # so the call right after is handed the same one.
    token = pocket.authenticator.environment(pocket.tools["reader"].auth)["TESTIDP_TOKEN"]
    assert oidc_server.introspect(token)["active"] is True
    result = pocket.invoke("reader", {"echo": True})
    assert result.ok, result.error
    assert result.value["sha256"] == hashlib.sha256(token.encode()).hexdigest()  # what the tool received
    assert result.value["echo"] == "[redacted]" and token not in result.stderr and "[redacted]" in result.stderr
    result = pocket.invoke("search", {"variable": "SERPAPI_TOKEN", "echo": True})
    assert result.value["sha256"] == hashlib.sha256(b"serp-key-123456").hexdigest()
    assert "serp-key-123456" not in json.dumps(result.value) and "serp-key-123456" not in result.stderr


@pytest.mark.docker
def test_credentials_are_per_user(pocket_factory, tmp_path, person, docker_api):
    pocket = pocket_factory([make_tool(tmp_path, "whoami", "testidp", ["api:read"])])
    url = pocket.initialize_tool_auth(user_id="alice")["testidp"]
    person.visit(person.authorize(url))
    token = pocket.authenticator.environment(pocket.tools["whoami"].auth, "alice")["TESTIDP_TOKEN"]
    alice = pocket.invoke("whoami", {}, user_id="alice")
    assert alice.ok, alice.error
    assert alice.value["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    bob = pocket.invoke("whoami", {}, user_id="bob")
    assert bob.outcome is Outcome.AUTH_REQUIRED and bob.auth_url != url


@pytest.mark.docker
def test_async_initialize_and_wait(pocket_factory, tmp_path, person, docker_api):
    pocket = pocket_factory([make_tool(tmp_path, "whoami", "testidp", ["api:read"])])

    async def agent() -> bool:
        urls = await pocket.ainitialize_tool_auth()
        answer = asyncio.create_task(asyncio.to_thread(lambda: person.visit(person.authorize(urls["testidp"]))))
        granted = await pocket.await_tool_auth(timeout=30)
        await answer
        return granted

    assert asyncio.run(agent()) is True
    result = asyncio.run(pocket.ainvoke("whoami", {}))
    assert result.ok, result.error


def test_a_denied_authorization_makes_wait_false(pocket_factory, tmp_path, person):
    pocket = pocket_factory([make_tool(tmp_path, "whoami", "testidp", ["api:read"])])
    url = pocket.initialize_tool_auth()["testidp"]
    worker = threading.Thread(target=lambda: person.visit(person.authorize(url, deny=True)))
    worker.start()
    assert pocket.wait_tool_auth(timeout=30) is False
    worker.join()


def test_redaction_masks_every_occurrence():
    from runner.invocation import redact

    token = "gho_0123456789abcdef"
    result = Invocation(
        "t",
        Outcome.TOOL_FAILED,
        value={"nested": [f"Bearer {token}", {"k": token}]},
        error=f"failed with {token}",
        stderr=f"Authorization: Bearer {token}",
    )
    clean = redact(result, [token])
    assert token not in repr(clean) and clean.stderr == "Authorization: Bearer [redacted]"
    assert clean.value == {"nested": ["Bearer [redacted]", {"k": "[redacted]"}]}


@pytest.mark.docker
def test_twenty_concurrent_ainvokes_at_expiry_refresh_once(pocket_factory, tmp_path, person, oidc_server, docker_api):
    pocket = pocket_factory([make_tool(tmp_path, "whoami", "testidp", ["api:read"])])
    person.visit(person.authorize(pocket.initialize_tool_auth()["testidp"]))
    time.sleep(2.1)  # the 3 s token is now within the refresh margin
    mark = oidc_server.mark()

    async def agent() -> list[Invocation]:
        return await asyncio.gather(*(pocket.ainvoke("whoami", {}) for _ in range(20)))

    results = asyncio.run(agent())
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert len({r.value["sha256"] for r in results}) == 1
    assert oidc_server.events(mark) == ["grant.success refresh_token"]


def test_cli_invoke_without_credentials_exits_3_with_the_login_command(tmp_path, make_settings, cli):
    tool = make_tool(tmp_path, "search", "serpapi", [])
    settings = tmp_path / "settings.toml"
    settings.write_text(f'data_dir = "{tmp_path / "data"}"\n[credentials]\ncallback_port = 0\n')
    secrets = tmp_path / ".secrets.toml"
    secrets.write_text("")
    ran = cli("--settings", str(settings), "--secrets", str(secrets), "invoke", str(tool), "search", "--body", "{}")
    assert ran.returncode == 3
    assert "run `pocket auth login serpapi --user default`, then invoke again" in ran.stderr


@pytest.mark.docker
def test_after_a_lost_grant_the_cli_login_hint_asks_for_every_scope_the_tools_need(
    tmp_path, callback_port, oidc_server, person, docker_api
):
    """Following the hint once is enough: the next invoke of any loaded tool runs, it does not ask again."""
    import re
    import shlex
    import subprocess
    import sys
    from dataclasses import replace

    import httpx

    from runner.auth import Authenticator
    from runner.settings import load_settings
    from tests.fixtures_oauth import CLIENT_ID, CLIENT_SECRET

    tools = tmp_path / "tools"
    make_tool(tools, "reader", "testidp", ["api:read"])
    make_tool(tools, "writer", "testidp", ["api:write"])
    files = write_settings(tmp_path, callback_port, oidc_server.issuer)
    settings = load_settings(files[1], files[3])
    auth = Authenticator(settings)  # the user signed in once, for both tools
    try:
        url = auth.authorization_url("testidp", scopes=["api:read", "api:write"])
        threading.Thread(target=lambda: person.visit(person.authorize(url)), daemon=True).start()
        assert auth.wait(30) == {"testidp": "authorized"}
        stored = auth.store.get("default", "testidp")
        httpx.post(  # the grant is lost: the person removed the app at the provider
            f"{oidc_server.issuer}/token/revocation",
            data={"token": stored.value("refresh_token"), "token_type_hint": "refresh_token"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        ).raise_for_status()
        auth.store.put(replace(stored, expires_at=time.time() - 1))
    finally:
        auth.close()

    def pocket_cli(*args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "runner.cli", *files, *args]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    invoke = pocket_cli("invoke", str(tools), "reader", "--body", "{}")
    _, err = invoke.communicate(timeout=60)
    assert invoke.returncode == 3, err
    hint = re.search(r"run `(pocket auth login [^`]*)`, then invoke again", err)
    assert hint, err
    assert hint.group(1) == "pocket auth login testidp --user default --scope api:read --scope api:write"

    login = pocket_cli(*shlex.split(hint.group(1))[1:])  # as the person would run it
    url = login.stdout.readline().strip()
    assert url.startswith(oidc_server.issuer), login.stderr.read()
    assert person.visit(person.authorize(url)).status_code == 200
    _, err = login.communicate(timeout=30)
    assert login.returncode == 0, err
    for tool in ("writer", "reader"):
        invoke = pocket_cli("invoke", str(tools), tool, "--body", "{}")
        out, err = invoke.communicate(timeout=120)
        assert invoke.returncode == 0, err
        assert json.loads(out)["sha256"] != hashlib.sha256(b"").hexdigest()  # it was handed a token


def _linear_pocket_with_an_expired_grant(settings) -> Pocket:
    """A Pocket with one function tool of Linear and the default user's grant expired: its call must refresh."""
    from pydantic import SecretStr

    from runner.auth.store import Credential
    from runner.function_tools import function_tool

    @function_tool(auth_provider="linear")
    def issues(LINEAR_TOKEN: str) -> str:
        """List issues."""
        return "none"

    pocket = Pocket([issues], settings=settings)
    expired = Credential(
        user_id="default", provider="linear", kind="oauth2", expires_at=time.time() - 10,
        secrets={"token": SecretStr("lin-old"), "refresh_token": SecretStr("lin-refresh")},
    )  # fmt: skip
    pocket.authenticator.store.put(expired)
    return pocket


@pytest.mark.parametrize("provider_down", ["503", "unreachable"])
def test_a_provider_down_at_refresh_time_fails_the_call_without_asking_for_consent(
    make_settings, stand_in, provider_down
):
    token_url = f"{stand_in.url}/token" if provider_down == "503" else "http://127.0.0.1:9/token"  # discard port
    stand_in.json("POST /token", {"error": "temporarily_unavailable"}, status=503)
    settings = make_settings({"linear": {"token_url": token_url, "client_id": "c", "client_secret": "s"}})
    with _linear_pocket_with_an_expired_grant(settings) as pocket:
        result = pocket.invoke("issues", {})
        assert result.outcome is Outcome.TOOL_FAILED and result.outcome.exit_code == 1
        assert "refreshing it failed" in result.error and "try again later" in result.error
        assert result.auth_url is None
        assert pocket.initialize_tool_auth() == {}  # no URL would help: nothing to show the person
        assert pocket.authenticator.store.get("default", "linear").status == "active"  # kept for the next try


@pytest.mark.parametrize("error", ["unauthorized_client", "invalid_client"])
def test_a_client_refused_at_refresh_fails_the_call_naming_the_setting_and_keeps_the_grant(
    make_settings, stand_in, error
):
    stand_in.json("POST /token", {"error": error, "error_description": "client not allowed"}, status=400)
    settings = make_settings({"linear": {"token_url": f"{stand_in.url}/token", "client_id": "c", "client_secret": "s"}})
    with _linear_pocket_with_an_expired_grant(settings) as pocket:
        result = pocket.invoke("issues", {})
        assert result.outcome is Outcome.BAD_INPUT and result.outcome.exit_code == 2, result.error
        assert error in result.error and "check [auth.linear] client_id and client_secret" in result.error
        assert "grant is kept" in result.error and result.auth_url is None
        kept = pocket.authenticator.store.get("default", "linear")
        assert kept.status == "active" and kept.value("refresh_token") == "lin-refresh"


def test_a_partly_granted_authorization_makes_wait_false(pocket_factory, tmp_path, person):
    pocket = pocket_factory([make_tool(tmp_path, "admin", "testidp", ["api:read", "api:admin"])])
    url = pocket.initialize_tool_auth()["testidp"]
    worker = threading.Thread(target=lambda: person.visit(person.authorize(url)))
    worker.start()
    assert pocket.wait_tool_auth(timeout=30) is False  # the server grants no api:admin
    worker.join()


def corp_settings(tmp_path: Path):
    """Settings read from files as a person writes them: a provider whose variable is CORP_TOKEN."""
    from runner.settings import load_settings

    (tmp_path / "settings.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\ncache_dir = "{tmp_path / "cache"}"\n'
        "[sandbox]\npool_size = 0\n[credentials]\ncallback_port = 0\n"
        '[auth.corp]\nenv = { CORP_TOKEN = "{token}" }\n'
    )
    (tmp_path / ".secrets.toml").write_text('[auth.corp]\ntoken = "corp-token-5551234"\n')
    return load_settings(directory=tmp_path)


def test_a_variable_named_in_settings_reaches_a_function_tool_in_its_case(tmp_path):
    from runner.function_tools import function_tool

    @function_tool(auth_provider="corp")
    def corp_check(CORP_TOKEN: str) -> str:
        """Say whether the token arrived."""
        return "got " + hashlib.sha256(CORP_TOKEN.encode()).hexdigest()

    with Pocket([corp_check], settings=corp_settings(tmp_path)) as pocket:
        result = pocket.invoke("corp_check", {})
    assert result.ok, result.error
    assert result.value == "got " + hashlib.sha256(b"corp-token-5551234").hexdigest()


@pytest.mark.docker
def test_a_variable_named_in_settings_reaches_a_sandboxed_tool_in_its_case(tmp_path, docker_api):
    tool = make_tool(tmp_path / "tools", "corp_tool", "corp", [])
    with Pocket([str(tool)], settings=corp_settings(tmp_path)) as pocket:
        upper = pocket.invoke("corp_tool", {"variable": "CORP_TOKEN"})
        lower = pocket.invoke("corp_tool", {"variable": "corp_token"})
    assert upper.ok and lower.ok, (upper.error, lower.error)
    assert upper.value["sha256"] == hashlib.sha256(b"corp-token-5551234").hexdigest()
    assert lower.value["sha256"] == hashlib.sha256(b"").hexdigest()  # no lower-cased twin

"""@function_tool: schemas from signatures, in-process calls through Pocket, auth, failures, mixing with folders."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from runner.errors import SourceError
from runner.function_tools import FunctionTool, function_tool
from runner.invocation import Outcome
from runner.manifest import ToolAnnotations
from runner.pocket import Pocket
from runner.schema import body_problems
from runner.settings import SandboxSettings
from tests.helpers import HELLO, TOOLS, settings


class Place(BaseModel):
    city: str
    country: str = "FR"


@function_tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@function_tool(auth_provider="slack", scopes=["chat:write"])
def post_message(
    channel: Annotated[str, Field(description="Channel id, like C123.")],
    text: str,
    SLACK_BOT_TOKEN: str,
) -> dict[str, Any]:
    """Post a message to a Slack channel.

    Args:
        text: What to say.
    """
    return {"channel": channel, "text": text, "token_length": len(SLACK_BOT_TOKEN)}


@function_tool
async def slow_echo(text: str, delay: float = 0.0) -> str:
    """Echo after a delay."""
    await asyncio.sleep(delay)
    return text


def test_schema_comes_from_the_signature_and_docstring():
    @function_tool
    def search(query: str, place: Place, limit: int = 10, kind: Literal["web", "news"] = "web") -> list[str]:
        """Search the web.

        Longer explanation.

        Args:
            query: What to look for,
                in plain words.
            limit: At most this many results.
        """
        return []

    spec = search.tool
    assert spec.name == "search"
    assert spec.description == "Search the web.\n\nLonger explanation."
    schema = spec.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["query", "place"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["query"] == {"type": "string", "description": "What to look for, in plain words."}
    assert schema["properties"]["limit"] == {
        "type": "integer",
        "default": 10,
        "description": "At most this many results.",
    }
    assert schema["properties"]["kind"]["enum"] == ["web", "news"]
    assert schema["properties"]["place"] == {"$ref": "#/$defs/Place"}
    assert schema["$defs"]["Place"]["properties"]["city"] == {"type": "string"}
    assert "title" not in schema and "title" not in schema["properties"]["query"]


def test_the_token_parameter_is_never_in_the_schema():
    schema = post_message.tool.input_schema
    assert set(schema["properties"]) == {"channel", "text"}
    assert schema["required"] == ["channel", "text"]
    assert schema["properties"]["channel"]["description"] == "Channel id, like C123."
    assert schema["properties"]["text"]["description"] == "What to say."
    assert "SLACK_BOT_TOKEN" not in str(post_message.tool.model_dump())
    assert post_message.auth.provider == "slack" and post_message.auth.scopes == ("chat:write",)


def test_decorated_function_is_still_a_function():
    assert add(2, 3) == 5
    assert isinstance(add, FunctionTool)
    assert add.__doc__ == "Add two integers."
    assert repr(post_message) == "FunctionTool('post_message', auth_provider='slack')"


@pytest.mark.parametrize("name", ["has space", "a" * 65, "dot.ted", ""])
def test_tool_names_are_checked_when_decorating(name):
    with pytest.raises(ValueError, match="not a safe identifier"):
        function_tool(name=name)(lambda: None)


def test_name_and_description_can_be_given():
    tool = function_tool(name="sum-two", description="Sum.")(lambda a, b: a + b)
    assert tool.name == "sum-two" and tool.description == "Sum."


def test_lambda_needs_a_name():
    with pytest.raises(ValueError, match="pass name="):
        function_tool(lambda: None)


def test_auth_needs_the_token_parameter():
    with pytest.raises(TypeError, match="has no parameter GITHUB_TOKEN"):

        @function_tool(auth_provider="github")
        def star(repo: str) -> None: ...


def test_every_variable_of_a_credential_is_injected_and_none_is_asked_of_the_model(tmp_path):
    @function_tool(auth_provider="kraken")
    def balance(pair: str, KRAKEN_API_KEY: str, KRAKEN_API_SECRET: str) -> list[str]:
        """Balance of a pair."""
        return [pair, KRAKEN_API_KEY[:4], KRAKEN_API_SECRET[:4]]

    @function_tool(auth_provider="linkedin", auth_handler="linkedin-basicauth")
    def profile(LINKEDIN_USERNAME: str, LINKEDIN_PASSWORD: str) -> int:
        """Length of the password."""
        return len(LINKEDIN_PASSWORD)

    assert balance.input_schema["properties"] == {"pair": {"type": "string"}}
    assert balance.input_schema["required"] == ["pair"] and profile.input_schema["properties"] == {}
    with Pocket([balance, profile], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("kraken", {"api_key": "key-1234", "api_secret": "sec-5678"})
        pocket.authenticator.login_with("linkedin", {"username": "ada", "password": "pw-123456"}, kind="basic")
        # the model cannot supply the secret itself: the schema forbids extra keys
        assert pocket.invoke("balance", {"pair": "XBT", "KRAKEN_API_SECRET": "made-up"}).outcome is Outcome.BAD_INPUT
        assert pocket.invoke("balance", {"pair": "XBT"}).value == ["XBT", "key-", "sec-"]
        assert pocket.invoke("profile", {}).value == 9


def test_an_auth_handler_the_provider_does_not_offer_is_refused_when_decorated():
    with pytest.raises(TypeError, match="provider 'serpapi' has no auth handler 'oauth2'; it offers serpapi-token"):

        @function_tool(auth_provider="serpapi", auth_handler="oauth2")
        def search(q: str, SERPAPI_TOKEN: str) -> None: ...


def test_auth_through_var_keyword_is_accepted():
    @function_tool(auth_provider="github")
    def star(repo: str, **env: str) -> str:
        return env["GITHUB_TOKEN"][:3]

    assert list(star.tool.input_schema["properties"]) == ["repo"]


def test_scopes_without_provider_is_an_error():
    with pytest.raises(TypeError, match="need an auth_provider"):
        function_tool(scopes=["x"])(add.func)


def test_invoke_sync_and_async_function_tools(tmp_path):
    with Pocket([add, slow_echo], settings=settings(tmp_path)) as pocket:
        result = pocket.invoke("add", {"a": 2})
        assert result.ok and result.value == 3 and result.text() == "3"
        assert pocket.invoke("slow_echo", {"text": "hi"}).value == "hi"

        async def both() -> list[Any]:
            return await asyncio.gather(
                pocket.ainvoke("add", {"a": 1, "b": 5}), pocket.ainvoke("slow_echo", {"text": "yo"})
            )

        assert [r.value for r in asyncio.run(both())] == [6, "yo"]


def test_sync_invoke_of_an_async_tool_inside_a_running_loop(tmp_path):
    pocket = Pocket([slow_echo], settings=settings(tmp_path))

    async def inside() -> Any:
        return pocket.invoke("slow_echo", {"text": "nested"})

    assert asyncio.run(inside()).value == "nested"
    pocket.close()


def test_async_calls_run_concurrently(tmp_path):
    pocket = Pocket([slow_echo], settings=settings(tmp_path))

    async def four() -> list[Any]:
        return await asyncio.gather(*(pocket.ainvoke("slow_echo", {"text": str(i), "delay": 0.3}) for i in range(4)))

    started = time.perf_counter()
    results = asyncio.run(four())
    assert [r.value for r in results] == ["0", "1", "2", "3"]
    assert time.perf_counter() - started < 0.9


def test_bad_body_reads_like_a_sandboxed_tools(tmp_path):
    pocket = Pocket([add], settings=settings(tmp_path))
    result = pocket.invoke("add", {"a": "two", "c": 1})
    assert result.outcome is Outcome.BAD_INPUT
    expected = "; ".join(body_problems(add.tool.input_schema, {"a": "two", "c": 1}))
    assert result.error == "invalid body: " + expected
    assert "/a: 'two' is not of type 'integer'" in result.error
    assert "unknown key" in result.error or "Additional properties" in result.error
    assert pocket.invoke("add", None).error == "invalid body: the body must be a JSON object, got null"
    assert pocket.invoke("add", {}).error == "invalid body: body: 'a' is a required property"


def test_unknown_tool(tmp_path):
    result = Pocket([add], settings=settings(tmp_path)).invoke("nope", {})
    assert result.outcome is Outcome.BAD_INPUT and result.error == "unknown tool 'nope' (known: add)"


def test_exceptions_become_tool_failed(tmp_path):
    @function_tool
    def divide(a: float, b: float) -> float:
        """Divide."""
        return a / b

    @function_tool
    async def fail_async() -> None:
        raise LookupError

    pocket = Pocket([divide, fail_async], settings=settings(tmp_path))
    result = pocket.invoke("divide", {"a": 1, "b": 0})
    assert result.outcome is Outcome.TOOL_FAILED
    assert result.error == "ZeroDivisionError: float division by zero"
    assert result.text() == "error: ZeroDivisionError: float division by zero"
    assert pocket.invoke("fail_async", {}).error == "LookupError"
    assert asyncio.run(pocket.ainvoke("fail_async", {})).error == "LookupError"


def test_return_values_become_json_data(tmp_path):
    @function_tool
    def where() -> Place:
        """A place."""
        return Place(city="Lyon")

    @function_tool
    def many() -> set[int]:
        """A set."""
        return {1}

    @function_tool
    def ratio(n: int) -> float:
        """A ratio JSON cannot hold."""
        return float("nan") if n == 0 else float("inf")

    @function_tool
    def ratios() -> dict[str, list[float]]:
        """Ratios, one of them infinite."""
        return {"r": [0.5, float("-inf")]}

    pocket = Pocket([where, many, ratio, ratios], settings=settings(tmp_path))
    assert pocket.invoke("where", {}).value == {"city": "Lyon", "country": "FR"}
    assert pocket.invoke("many", {}).value == [1]
    assert [pocket.invoke("ratio", {"n": n}).text() for n in (0, 1)] == ["null", "null"]
    assert pocket.invoke("ratios", {}).text() == '{"r": [0.5, null]}'


def test_nested_models_are_passed_as_models(tmp_path):
    @function_tool
    def describe(place: Place) -> str:
        """Describe."""
        assert isinstance(place, Place)
        return f"{place.city}, {place.country}"

    result = Pocket([describe], settings=settings(tmp_path)).invoke("describe", {"place": {"city": "Oslo"}})
    assert result.value == "Oslo, FR"


def test_the_token_arrives_as_the_keyword_argument(tmp_path):
    with Pocket([post_message], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("slack", {"token": "xoxb-alice-secret"}, user_id="alice")
        result = pocket.invoke("post_message", {"channel": "C1", "text": "hi"}, user_id="alice")
        assert result.ok, result.error
        assert result.value == {"channel": "C1", "text": "hi", "token_length": len("xoxb-alice-secret")}
        assert pocket.invoke("post_message", {"channel": "C1", "text": "hi"}, user_id="bob").outcome is (
            Outcome.AUTH_REQUIRED
        )  # alice's token is hers only


def test_auth_required_carries_the_url(tmp_path):
    with Pocket([post_message], settings=settings(tmp_path)) as pocket:
        for result in (
            pocket.invoke("post_message", {"channel": "C1", "text": "hi"}, user_id="bob"),
            asyncio.run(pocket.ainvoke("post_message", {"channel": "C1", "text": "hi"}, user_id="bob")),
        ):
            assert result.outcome is Outcome.AUTH_REQUIRED
            assert result.auth_url.startswith("http://127.0.0.1:")
            assert result.auth_url in result.text()


def test_a_token_never_appears_in_a_result(tmp_path):
    @function_tool(auth_provider="github")
    def leaky(mode: str, GITHUB_TOKEN: str) -> Any:
        """Leaks its token, one way or another."""
        if mode == "raise":
            raise RuntimeError(f"request failed with token {GITHUB_TOKEN}")
        return {"echo": [f"token={GITHUB_TOKEN}"]}

    @function_tool(auth_provider="github")
    async def leaky_async(GITHUB_TOKEN: str) -> str:
        """Same, async."""
        raise RuntimeError(GITHUB_TOKEN)

    pocket = Pocket([leaky, leaky_async], settings=settings(tmp_path))
    pocket.authenticator.login_with("github", {"token": "ghp_SECRET123"})
    failed = pocket.invoke("leaky", {"mode": "raise"})
    assert failed.outcome is Outcome.TOOL_FAILED
    assert failed.error == "RuntimeError: request failed with token [redacted]"
    assert pocket.invoke("leaky", {"mode": "return"}).value == {"echo": ["token=[redacted]"]}
    assert asyncio.run(pocket.ainvoke("leaky_async", {})).error == "RuntimeError: [redacted]"


def test_timeouts(tmp_path):
    @function_tool
    def sleepy(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "awake"

    pocket = Pocket([sleepy, slow_echo], settings=settings(tmp_path))
    started = time.perf_counter()
    result = pocket.invoke("sleepy", {"seconds": 2}, timeout=0.2)
    assert time.perf_counter() - started < 1.5
    assert result.outcome is Outcome.TOOL_FAILED and result.error.startswith("timed out after 0.2 s")
    assert pocket.invoke("sleepy", {"seconds": 0}, timeout=5).value == "awake"
    result = pocket.invoke("slow_echo", {"text": "x", "delay": 2}, timeout=0.2)
    assert result.error == "timed out after 0.2 s"
    result = asyncio.run(pocket.ainvoke("slow_echo", {"text": "x", "delay": 2}, timeout=0.2))
    assert result.error == "timed out after 0.2 s"
    result = asyncio.run(pocket.ainvoke("sleepy", {"seconds": 2}, timeout=0.2))
    assert result.error.startswith("timed out after 0.2 s (an in-process function cannot be stopped")
    pocket.close()


def test_many_concurrent_sync_calls_with_a_timeout_all_finish(tmp_path):
    """Each waits on the event loop, not on a worker thread that the function itself would need."""

    @function_tool
    def nap(n: int) -> int:
        """Nap briefly."""
        time.sleep(0.2)
        return n

    async def burst(pocket: Pocket) -> list:
        return await asyncio.gather(*(pocket.ainvoke("nap", {"n": n}, timeout=5) for n in range(100)))

    with Pocket([nap], settings=settings(tmp_path)) as pocket:
        results = asyncio.run(burst(pocket))
    assert [r.value for r in results] == list(range(100)), [r.error for r in results if not r.ok][:3]


def test_plain_functions_are_accepted(tmp_path):
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    pocket = Pocket([shout], settings=settings(tmp_path))
    assert isinstance(pocket.tools["shout"], FunctionTool)
    assert pocket.invoke("shout", {"text": "hey"}).value == "HEY"


@pytest.mark.docker
def test_mixed_sources_and_variables_by_precedence(tmp_path, docker_api):
    """manifest < [variables.TOOL] < (source, {...}) < invoke(variables=) < the token, in the real container."""
    options = {
        "variables": {"dumpenv": {"CHANNEL": "from-settings", "OTHER": "1"}},
        "auth": {"slack": {"token": "xoxb-static-token"}},
        "sandbox": SandboxSettings(pool_size=0),
    }
    with Pocket(
        [add, (str(TOOLS / "dumpenv"), {"CHANNEL": "from-source"})], settings=settings(tmp_path, **options)
    ) as pocket:
        assert list(pocket.tools) == ["add", "dumpenv"]
        env = pocket.invoke("dumpenv", {}).value["env"]
        assert (env["CHANNEL"], env["OTHER"]) == ("from-source", "1")
        env = pocket.invoke("dumpenv", {}, variables={"OTHER": "2", "SLACK_BOT_TOKEN": "spoofed"}).value["env"]
        assert env["OTHER"] == "2"
        assert env["SLACK_BOT_TOKEN"] == "[redacted]"  # the real token won, and never comes back to the agent
        assert pocket.invoke("add", {"a": 1}).value == 2


def test_duplicate_names_across_kinds_are_an_error(tmp_path):
    @function_tool
    def hello(name: str) -> str:
        """Clash."""
        return name

    with pytest.raises(
        SourceError, match=r"two tools are named 'hello': .*pocket\.json and function .*test_function_tools"
    ):
        Pocket([HELLO, hello], settings=settings(tmp_path))
    with pytest.raises(SourceError, match="two tools are named 'add'"):
        Pocket([add, add.func], settings=settings(tmp_path))


@pytest.mark.parametrize(
    "entry, message",
    [
        (42, "cannot load a tool from int"),
        (("a", "b", "c"), "must be \\(source"),
        (("a", {"X": 1}), "must map names to strings"),
    ],
)
def test_bad_entries(tmp_path, entry, message):
    with pytest.raises(TypeError, match=message):
        Pocket([entry], settings=settings(tmp_path))


def test_a_single_source_must_be_in_a_list(tmp_path):
    with pytest.raises(TypeError, match="must be a list"):
        Pocket(add, settings=settings(tmp_path))


def test_the_package_exports_the_decorator_even_after_the_modules_load():
    import runner
    from runner import function_tool as exported
    from runner.pocket import Pocket as _  # noqa: F401  (loads runner.function_tools)

    assert exported is function_tool
    assert runner.function_tool is function_tool
    assert runner.FunctionTool is FunctionTool


def test_function_tools_folders_and_git_repositories_together(tmp_path, tool_repo, docker_api):
    repository = f"file://{tool_repo.bare}@v1#tools"
    with Pocket([add, HELLO, (repository, {"REGION": "eu"})], settings=settings(tmp_path)) as pocket:
        assert list(pocket.tools) == ["add", "hello", "alpha", "beta"]
        assert pocket.invoke("alpha", {}).value["env"]["REGION"] == "eu"
    with pytest.raises(SourceError, match="two tools are named 'alpha'"):
        Pocket([repository, f"file://{tool_repo.bare}@main#tools/alpha"], settings=settings(tmp_path))


def test_only_values_made_from_a_secret_are_redacted(tmp_path):
    """A username is no secret, and masking it by substring mangled results ("Canada" for user "ada")."""

    @function_tool(auth_provider="linkedin", auth_handler="linkedin-basicauth")
    def profile(**credentials: str) -> dict[str, str]:
        """Who is signed in, and where."""
        return {
            "country": "Canada",
            "user": credentials["LINKEDIN_USERNAME"],
            "password": credentials["LINKEDIN_PASSWORD"],
            "basic": credentials["LINKEDIN_BASIC_AUTH"],
        }

    @function_tool(auth_provider="linkedin", auth_handler="linkedin-basicauth")
    async def aprofile(**credentials: str) -> str:
        """The same, async."""
        return f"{credentials['LINKEDIN_USERNAME']} in Canada, {credentials['LINKEDIN_PASSWORD']}"

    auth = {"linkedin": {"username": "ada", "password": "pw-123456"}}
    with Pocket([profile, aprofile], settings=settings(tmp_path, auth=auth)) as pocket:
        assert pocket.invoke("profile", {}).value == {
            "country": "Canada", "user": "ada", "password": "[redacted]", "basic": "[redacted]"
        }  # fmt: skip
        assert asyncio.run(pocket.ainvoke("aprofile", {})).value == "ada in Canada, [redacted]"


class Forecast(BaseModel):
    place: Place
    celsius: float


def test_the_output_schema_comes_from_the_return_annotation():
    @function_tool
    def forecast(city: str) -> Forecast:
        """Weather."""
        return Forecast(place=Place(city=city), celsius=21.5)

    @function_tool
    def maybe(city: str) -> Forecast | None:
        """Weather, if known."""
        return None

    schema = forecast.tool.output_schema
    assert (schema["type"], schema["required"], forecast.output_wrapped) == ("object", ["place", "celsius"], False)
    assert schema["properties"]["place"] == {"$ref": "#/$defs/Place"}
    assert "title" not in schema and "title" not in schema["$defs"]["Place"]  # as in input schemas
    wrapped = maybe.tool.output_schema  # not an object: wrapped, its definitions kept at the root
    assert maybe.output_wrapped and wrapped["required"] == ["result"] and "Place" in wrapped["$defs"]
    assert wrapped["properties"]["result"] == {"anyOf": [{"$ref": "#/$defs/Forecast"}, {"type": "null"}]}
    assert add.tool.output_schema == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }
    assert post_message.tool.output_schema == {"type": "object", "additionalProperties": True}


class Opaque:
    """Not a type pydantic can describe."""


def test_no_output_schema_without_a_describable_return_annotation():
    def untyped(a: int):
        return a

    def returns_none(a: int) -> None:
        return None

    def returns_any(a: int) -> Any:
        return a

    def returns_opaque(a: int) -> Opaque:
        return Opaque()

    for func in (untyped, returns_none, returns_any, returns_opaque):
        assert function_tool(func).tool.output_schema is None, func.__name__


def test_title_and_annotations_are_declared_on_the_decorator():
    @function_tool(title="Look up a place", annotations={"readOnlyHint": True, "openWorldHint": False})
    def lookup(city: str) -> Place:
        """Look up a place."""
        return Place(city=city)

    assert lookup.tool.title == "Look up a place"
    assert lookup.tool.annotations.hints() == {"readOnlyHint": True, "openWorldHint": False}
    assert add.tool.title is None and add.tool.annotations is None
    hints = ToolAnnotations(destructive=False, idempotent=True)  # or the model, by field name
    assert function_tool(annotations=hints)(lookup.func).tool.annotations is hints


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"readonlyHint": True}, "bad annotations (readonlyHint: Extra inputs are not permitted)"),
        ({"readOnlyHint": "maybe"}, "bad annotations (readOnlyHint: Input should be a valid boolean"),
        (["readOnlyHint"], "annotations must be a mapping"),
    ],
)
def test_bad_annotations_are_refused_when_decorating(annotations, expected):
    with pytest.raises(TypeError) as info:

        @function_tool(annotations=annotations)
        def tool() -> None:
            """Nothing."""

    assert expected in str(info.value) and "test_function_tools" in str(info.value)
    if "bad annotations" in expected:
        assert "MCP's hints are readOnlyHint, destructiveHint, idempotentHint, openWorldHint" in str(info.value)

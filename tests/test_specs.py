"""Tool specs and tool-call round trips, checked against the OpenAI and Anthropic SDKs' own types.

The SDKs run for real against an in-process HTTP transport (httpx.MockTransport): they serialize our
specs and tool-result messages into request bodies, and parse canned model responses into the objects
an agent loop hands back to `pocket.invoke`. No network, no API key.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import anthropic
import httpx
import httpx2  # what the Anthropic SDK is built on
import openai
import pytest
from pydantic import TypeAdapter

from runner.function_tools import function_tool
from runner.invocation import Outcome
from runner.pocket import Pocket
from runner.specs import SpecFormat, ToolResult, parse_tool_call, strict_problems, tool_spec, tool_specs
from tests.helpers import HELLO, settings


@function_tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@function_tool
def shout(text: str) -> str:
    """Shout the text."""
    return text.upper()


@function_tool
def fail() -> None:
    """Always fails."""
    raise RuntimeError("no luck")


@pytest.fixture
def pocket(tmp_path):
    with Pocket([add, shout, fail, HELLO], settings=settings(tmp_path)) as pocket:
        yield pocket


def _keys(td: Any) -> set[str]:
    return set(td.__required_keys__) | set(td.__optional_keys__)


def assert_matches(td: Any, value: dict[str, Any]) -> None:
    """`value` has only keys `td` knows, every required one, and validates as `td` (pydantic)."""
    assert set(value) <= _keys(td), set(value) - _keys(td)
    assert set(td.__required_keys__) <= set(value), set(td.__required_keys__) - set(value)
    TypeAdapter(td).validate_python(value)


def test_openai_chat_specs_match_the_sdk_types(pocket):
    from openai.types.chat import ChatCompletionFunctionToolParam
    from openai.types.shared_params import FunctionDefinition

    specs = pocket.tool_specs("openai")
    assert [s["function"]["name"] for s in specs] == ["add", "shout", "fail", "hello"]
    for spec in specs:
        assert_matches(ChatCompletionFunctionToolParam, spec)
        assert_matches(FunctionDefinition, spec["function"])
        assert "strict" not in spec["function"]
        assert spec["function"]["parameters"]["type"] == "object"
    assert specs[0] == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
                "required": ["a"],
                "additionalProperties": False,
            },
        },
    }
    assert specs[3]["function"]["parameters"] == json.loads((HELLO / "pocket.json").read_text())["tool"]["inputSchema"]


def test_openai_responses_specs_match_the_sdk_types(pocket):
    from openai.types.responses import FunctionToolParam

    specs = pocket.tool_specs("openai-responses")
    for spec in specs:
        assert_matches(FunctionToolParam, spec)
        assert spec["strict"] is False  # Responses would default to strict: say it
    assert specs[1] == {
        "type": "function",
        "name": "shout",
        "description": "Shout the text.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "strict": False,
    }


def test_anthropic_specs_match_the_sdk_types(pocket):
    from anthropic.types import ToolParam

    specs = pocket.tool_specs("anthropic")
    for spec in specs:
        assert_matches(ToolParam, spec)
        assert spec["input_schema"]["type"] == "object"
    assert specs[0]["name"] == "add" and specs[0]["description"] == "Add two integers."


def test_unknown_format(pocket):
    with pytest.raises(ValueError, match="use one of openai, openai-responses, anthropic"):
        pocket.tool_specs("gemini")
    assert pocket.tool_specs("openai-chat") == pocket.tool_specs(SpecFormat.OPENAI)


def test_strict_only_when_the_schema_allows_it(pocket):
    @function_tool
    def closed(text: str, n: int) -> str:
        """All required."""
        return text * n

    assert strict_problems(closed.tool.input_schema) == []
    assert tool_spec(closed.tool, "openai", strict=True)["function"]["strict"] is True
    assert tool_spec(closed.tool, "openai-responses", strict=True)["strict"] is True
    assert strict_problems(add.tool.input_schema) == [
        "/: every property must be required; not so for b",
        "/properties/b: 'default' is not supported in strict mode (every field is required)",
    ]
    problems = strict_problems(json.loads((HELLO / "pocket.json").read_text())["tool"]["inputSchema"])
    assert problems == ["/properties/name: keyword 'minLength' is not supported in strict mode"]
    with pytest.raises(ValueError, match=r"these tools cannot be strict: add: .* \| hello: .*minLength"):
        pocket.tool_specs("openai", strict=True)
    assert tool_specs([closed], "openai", strict=True)[0]["function"]["strict"] is True
    closed_hint = " (for a pydantic model of a function tool: model_config = ConfigDict(extra='forbid'))"
    assert strict_problems({"type": "object", "properties": {"o": {"type": "object", "properties": {}}}}) == [
        "/: objects need additionalProperties: false" + closed_hint,
        "/: every property must be required; not so for o",
        "/properties/o: objects need additionalProperties: false" + closed_hint,
    ]
    anthropic = tool_spec(closed.tool, "anthropic", strict=True)
    assert anthropic["strict"] is True and "strict" not in tool_spec(closed.tool, "anthropic")
    from anthropic.types import ToolParam

    assert_matches(ToolParam, anthropic)


def test_a_schema_without_type_gets_object_and_properties():
    from runner.manifest import ToolSpec

    spec = ToolSpec(name="t", description="d", inputSchema={"$schema": "https://json-schema.org/draft/2020-12/schema"})
    assert tool_spec(spec, "anthropic")["input_schema"] == {"type": "object", "properties": {}}


# -- tool calls in, tool results out ---------------------------------------------------------------------


def test_openai_tool_call_dict(pocket):
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    message = pocket.invoke(call)
    assert message == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    assert isinstance(message, ToolResult) and message.invocation.value == 5
    from openai.types.chat import ChatCompletionToolMessageParam

    assert_matches(ChatCompletionToolMessageParam, message)


def test_openai_responses_function_call_dict(pocket):
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "shout", "arguments": '{"text": "hi"}'}
    output = pocket.invoke(item)
    assert output == {"type": "function_call_output", "call_id": "call_9", "output": "HI"}
    from openai.types.responses.response_input_item_param import FunctionCallOutput

    assert_matches(FunctionCallOutput, output)


def test_anthropic_tool_use_dict(pocket):
    from anthropic.types import ToolResultBlockParam

    ok = pocket.invoke({"type": "tool_use", "id": "toolu_1", "name": "shout", "input": {"text": "hey"}})
    assert ok == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "HEY"}
    failed = pocket.invoke({"type": "tool_use", "id": "toolu_2", "name": "fail", "input": {}})
    assert failed == {
        "type": "tool_result",
        "tool_use_id": "toolu_2",
        "content": "error: RuntimeError: no luck",
        "is_error": True,
    }
    for block in (ok, failed):
        assert_matches(ToolResultBlockParam, block)


def test_the_agents_mistakes_come_back_as_results(pocket):
    bad_json = pocket.invoke({"id": "c", "type": "function", "function": {"name": "add", "arguments": "{oops"}})
    assert bad_json["content"].startswith("error: the tool call's arguments are not valid JSON")
    assert bad_json.invocation.outcome is Outcome.BAD_INPUT
    arguments = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    too_deep = pocket.invoke({"id": "c", "type": "function", "function": {"name": "add", "arguments": arguments}})
    assert too_deep["content"] == "error: the tool call's arguments are nested too deeply to read"
    no_id = pocket.invoke({"type": "tool_use", "id": None, "name": "add", "input": {"a": 1}})
    assert no_id["tool_use_id"] == ""  # never the text "None"
    unknown = pocket.invoke({"type": "tool_use", "id": "t", "name": "nope", "input": {}})
    assert unknown["is_error"] is True and "unknown tool 'nope'" in unknown["content"]
    bad_body = pocket.invoke({"type": "tool_use", "id": "t", "name": "add", "input": {"a": "x"}})
    assert bad_body["content"] == "error: invalid body: /a: 'x' is not of type 'integer'"
    no_args = pocket.invoke({"id": "c", "type": "function", "function": {"name": "fail", "arguments": ""}})
    assert no_args["content"] == "error: RuntimeError: no luck"


def test_things_that_are_not_tool_calls_are_a_programming_error(pocket):
    with pytest.raises(TypeError, match="not a tool call"):
        pocket.invoke({"role": "assistant", "content": "hi"})
    with pytest.raises(TypeError, match="not a tool call"):
        pocket.invoke(42)
    with pytest.raises(TypeError, match="either a tool name and a body, or a tool call"):
        pocket.invoke({"type": "tool_use", "id": "t", "name": "add", "input": {}}, {"a": 1})


def test_sdk_objects_are_accepted(pocket):
    from anthropic.types import ToolUseBlock
    from openai.types.chat.chat_completion_message_function_tool_call import ChatCompletionMessageFunctionToolCall
    from openai.types.responses import ResponseFunctionToolCall

    chat = ChatCompletionMessageFunctionToolCall(
        id="call_1", type="function", function={"name": "add", "arguments": '{"a": 1}'}
    )
    assert pocket.invoke(chat)["content"] == "2"
    responses = ResponseFunctionToolCall(type="function_call", call_id="call_2", name="add", arguments='{"a": 4}')
    assert pocket.invoke(responses) == {"type": "function_call_output", "call_id": "call_2", "output": "5"}
    block = ToolUseBlock(type="tool_use", id="toolu_3", name="add", input={"a": 9})
    assert pocket.invoke(block)["content"] == "10"
    assert parse_tool_call(block).format is SpecFormat.ANTHROPIC


# -- whole agent loops with the real SDKs over an in-process transport -------------------------------------


class FakeModelServer:
    """Answers SDK requests with canned bodies, in order, and keeps every request body it was sent."""

    def __init__(self, responses: list[dict[str, Any]], http: Any = httpx):
        self.responses = list(responses)
        self.requests: list[dict[str, Any]] = []
        self.http = http  # the Anthropic SDK is built on httpx2, OpenAI's on httpx

    def __call__(self, request: Any) -> Any:
        self.requests.append(json.loads(request.content))
        return self.http.Response(200, json=self.responses.pop(0))

    def client(self) -> Any:
        return self.http.Client(transport=self.http.MockTransport(self))


def _chat_completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None, "message": message}],
    }


def test_openai_chat_agent_loop(pocket):
    server = FakeModelServer(
        [
            _chat_completion(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "add", "arguments": '{"a": 40, "b": 2}'},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "shout", "arguments": '{"text": "ok"}'},
                        },
                    ],
                },
                "tool_calls",
            ),
            _chat_completion({"role": "assistant", "content": "42, OK"}, "stop"),
        ]
    )
    client = openai.OpenAI(api_key="test", base_url="http://model.test/v1", http_client=server.client())
    messages: list[Any] = [{"role": "user", "content": "add 40 and 2, and shout ok"}]
    while True:
        reply = client.chat.completions.create(model="gpt-test", messages=messages, tools=pocket.tool_specs("openai"))
        message = reply.choices[0].message
        messages.append(message)
        if not message.tool_calls:
            break
        messages += [pocket.invoke(call) for call in message.tool_calls]
    assert message.content == "42, OK"
    first, second = server.requests
    assert first["tools"] == pocket.tool_specs("openai")
    assert second["messages"][2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "42"},
        {"role": "tool", "tool_call_id": "call_b", "content": "OK"},
    ]


def test_openai_responses_agent_loop(pocket):
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "add",
        "arguments": '{"a": 1}',
        "status": "completed",
    }
    base = {"id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-test", "status": "completed"}
    base |= {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    text = {"type": "message", "id": "m", "role": "assistant", "status": "completed"}
    text["content"] = [{"type": "output_text", "text": "2", "annotations": []}]
    server = FakeModelServer([base | {"output": [call]}, base | {"id": "resp_2", "output": [text]}])
    client = openai.OpenAI(api_key="test", base_url="http://model.test/v1", http_client=server.client())
    items: list[Any] = [{"role": "user", "content": "add 1"}]
    response = client.responses.create(model="gpt-test", input=items, tools=pocket.tool_specs("openai-responses"))
    items += response.output
    items += pocket.tool_results(response)
    response = client.responses.create(model="gpt-test", input=items, tools=pocket.tool_specs("openai-responses"))
    assert response.output_text == "2"
    assert server.requests[0]["tools"] == pocket.tool_specs("openai-responses")
    assert server.requests[1]["input"][-1] == {"type": "function_call_output", "call_id": "call_1", "output": "2"}


def test_anthropic_agent_loop(pocket):
    def message(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }

    server = FakeModelServer(
        [
            message(
                [
                    {"type": "text", "text": "Let me."},
                    {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2}},
                    {"type": "tool_use", "id": "toolu_2", "name": "fail", "input": {}},
                ],
                "tool_use",
            ),
            message([{"type": "text", "text": "3, and one failure"}], "end_turn"),
        ],
        http=httpx2,
    )
    client = anthropic.Anthropic(api_key="test", base_url="http://model.test", http_client=server.client())
    messages: list[Any] = [{"role": "user", "content": "go"}]
    while True:
        reply = client.messages.create(
            model="claude-test", max_tokens=100, messages=messages, tools=pocket.tool_specs("anthropic")
        )
        messages.append({"role": "assistant", "content": reply.content})
        if reply.stop_reason != "tool_use":
            break
        messages += pocket.tool_results(reply)
    assert reply.content[0].text == "3, and one failure"
    assert server.requests[0]["tools"] == pocket.tool_specs("anthropic")
    assert server.requests[1]["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": "error: RuntimeError: no luck",
                "is_error": True,
            },
        ],
    }


def test_tool_results_of_a_reply_without_calls(pocket):
    assert pocket.tool_results({"role": "assistant", "content": "done", "tool_calls": None}) == []
    assert pocket.tool_results({"content": [{"type": "text", "text": "done"}]}) == []


def test_tool_results_run_concurrently_when_async(pocket):
    import asyncio

    reply = {"content": [{"type": "tool_use", "id": f"t{i}", "name": "add", "input": {"a": i}} for i in range(3)]}
    messages = asyncio.run(pocket.atool_results(reply))
    assert [b["content"] for b in messages[0]["content"]] == ["1", "2", "3"]


def test_typeddict_checker_rejects_unknown_keys():
    from anthropic.types import ToolParam

    with pytest.raises(AssertionError):
        assert_matches(ToolParam, {"name": "x", "input_schema": {"type": "object"}, "parameters": {}})
    assert typing.get_type_hints(ToolParam)  # the SDK types resolve


@pytest.mark.docker
def test_a_sandboxed_tool_answers_tool_calls(pocket, docker_api):
    openai_call = {"id": "c1", "type": "function", "function": {"name": "hello", "arguments": '{"name": "Ada"}'}}
    assert pocket.invoke(openai_call) == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": '{"greeting": "Hello, Ada!"}',
    }
    block = pocket.invoke({"type": "tool_use", "id": "t1", "name": "hello", "input": {"name": ""}})
    assert block["is_error"] is True and "/name" in block["content"]

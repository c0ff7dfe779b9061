"""The LangChain adapter, driven by LangChain's own fake chat model emitting tool calls (no network, no key)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from runner.function_tools import function_tool
from runner.integrations.langchain import langchain_tool, langchain_tools
from runner.pocket import Pocket
from tests.helpers import HELLO, enter_token, settings


@function_tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@function_tool
async def shout(text: str) -> str:
    """Shout the text."""
    return text.upper()


@function_tool(auth_provider="github")
def whoami(GITHUB_TOKEN: str) -> str:
    """Who the token belongs to."""
    return "octocat" if GITHUB_TOKEN == "ghp_ok" else "nobody"


@pytest.fixture
def pocket(tmp_path):
    with Pocket([add, shout, whoami], settings=settings(tmp_path)) as pocket:
        pocket.authenticator.login_with("github", {"token": "ghp_ok"}, user_id="alice")
        yield pocket


def test_tools_carry_the_pockets_specs(pocket):
    tools = langchain_tools(pocket)
    assert [t.name for t in tools] == ["add", "shout", "whoami"]
    assert tools[0].description == "Add two integers."
    assert tools[0].args == {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}}
    assert convert_to_openai_tool(tools[0]) == pocket.tool_specs("openai")[0]


def test_title_annotations_and_output_schema_are_in_the_metadata(tmp_path):
    @function_tool(title="Add", annotations={"readOnlyHint": True})
    def titled_add(a: int) -> int:
        """Add one."""
        return a + 1

    with Pocket([titled_add, shout], settings=settings(tmp_path)) as pocket:
        titled, plain = langchain_tools(pocket)
    assert titled.metadata == {
        "pocket_tool": "titled_add",
        "auth_provider": None,
        "title": "Add",
        "annotations": {"readOnlyHint": True},
        "output_schema": titled_add.tool.output_schema,
    }
    assert plain.metadata == {
        "pocket_tool": "shout",
        "auth_provider": None,
        "output_schema": {"type": "object", "properties": {"result": {"type": "string"}}, "required": ["result"]},
    }


def test_tool_calls_give_tool_messages(pocket):
    tool = langchain_tool(pocket, "add")
    message = tool.invoke({"name": "add", "args": {"a": 2, "b": 5}, "id": "call_1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    assert (message.content, message.tool_call_id, message.status) == ("7", "call_1", "success")
    assert message.artifact.value == 7
    assert tool.invoke({"a": 1}) == "2"  # plain input: the content only


def test_failures_are_error_messages_the_model_reads(pocket):
    tool = langchain_tool(pocket, "add")
    message = tool.invoke({"name": "add", "args": {"a": "x"}, "id": "call_2", "type": "tool_call"})
    assert message.status == "error"
    assert message.content == "error: invalid body: /a: 'x' is not of type 'integer'"


def test_auth_required_tells_the_url(pocket):
    tool = langchain_tool(pocket, "whoami", user_id="bob")
    message = tool.invoke({"name": "whoami", "args": {}, "id": "c", "type": "tool_call"})
    assert message.status == "error"
    url = message.content.split(" open ")[1].split(" ")[0]
    assert url.startswith(f"{pocket.authenticator.base_url()}/auth/github/form?state=")
    alice = langchain_tool(pocket, "whoami", user_id="alice")
    assert alice.invoke({}) == "octocat"
    enter_token(url, "ghp_bob")  # bob opens the URL the model was told and pastes his own token
    assert tool.invoke({}) == "nobody"  # bob's token, not alice's


def test_async_tools(pocket):
    tool = langchain_tool(pocket, "shout")
    message = asyncio.run(tool.ainvoke({"name": "shout", "args": {"text": "hi"}, "id": "c", "type": "tool_call"}))
    assert message.content == "HI"


def _tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def test_agent_loop_with_the_fake_chat_model(pocket):
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(content="", tool_calls=[_tool_call("add", {"a": 40, "b": 2}, "c1")]),
                AIMessage(content="", tool_calls=[_tool_call("shout", {"text": "done"}, "c2")]),
                AIMessage(content="The answer is 42. DONE"),
            ]
        )
    )
    tools = {t.name: t for t in langchain_tools(pocket)}
    messages: list[Any] = [HumanMessage("add 40 and 2, then shout done")]
    while True:
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        messages += [tools[call["name"]].invoke(call) for call in reply.tool_calls]
    assert reply.content == "The answer is 42. DONE"
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.content) for m in results] == [("c1", "42"), ("c2", "DONE")]


class ToolCallingFakeModel(GenericFakeChatModel):
    """The fake chat model, accepting tools as real chat models do (it ignores them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def test_langchain_create_agent(pocket):
    from langchain import agents

    model = ToolCallingFakeModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[_tool_call("add", {"a": 1, "b": 2}, "c1"), _tool_call("whoami", {}, "c2")],
                ),
                AIMessage(content="3, and I need you to authorize GitHub"),
            ]
        )
    )
    agent = agents.create_agent(model, tools=langchain_tools(pocket, user_id="bob"))
    state = agent.invoke({"messages": [HumanMessage("add 1 and 2, and who am I?")]})
    results = {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}
    assert results["c1"].content == "3" and results["c1"].status == "success"
    assert results["c2"].status == "error"
    form = f"{pocket.authenticator.base_url()}/auth/github/form?state="
    assert f"authorization is needed for user 'bob': open {form}" in results["c2"].content
    assert state["messages"][-1].content == "3, and I need you to authorize GitHub"


@pytest.mark.docker
def test_a_sandboxed_tool_through_the_adapter(tmp_path, docker_api):
    with Pocket([HELLO, add], settings=settings(tmp_path)) as pocket:
        tool = langchain_tool(pocket, "hello")
        message = tool.invoke(_tool_call("hello", {"name": "Ada"}, "c1"))
        assert message.status == "success", message.content
        assert message.content == '{"greeting": "Hello, Ada!"}'

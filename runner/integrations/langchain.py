"""LangChain adapter: every tool of a `Pocket` as a LangChain `StructuredTool` (extra: `langchain`).

    from runner import Pocket
    from runner.integrations.langchain import langchain_tools

    tools = langchain_tools(Pocket(tools=["./tools"]), user_id="alice")
    model = chat_model.bind_tools(tools)

The tool's JSON Schema is handed to LangChain as is (`args_schema` as a dict), so the model sees the
same schema as through every other integration; the body is validated by the Pocket. A call that
fails (bad body, tool failure, authorization needed) raises `ToolException` with the invocation's
text, which LangChain turns into a `ToolMessage` with `status="error"` the model can read; a call that
succeeds returns its text as content and the `Invocation` as the artifact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    from langchain_core.tools import StructuredTool, ToolException
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the LangChain adapter needs langchain-core: pip install 'pocket-runner[langchain]'") from exc

from runner.audit import Surface, called_from
from runner.invocation import Invocation  # at run time: LangGraph resolves the tool functions' type hints

if TYPE_CHECKING:
    from runner.pocket import Pocket, Tool

__all__ = ["langchain_tool", "langchain_tools"]


def _report_error(error: ToolException) -> str:
    return str(error)


def langchain_tool(
    pocket: Pocket,
    name: str,
    *,
    user_id: str = "default",
    variables: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> StructuredTool:
    """One tool of `pocket` as a `StructuredTool`; calls run as `user_id` with these options."""
    tool = pocket.tools[name]
    options: dict[str, Any] = {"user_id": user_id, "variables": variables, "timeout": timeout}

    def answer(invocation: Invocation) -> tuple[str, Invocation]:
        if not invocation.ok:
            raise ToolException(invocation.text())
        return invocation.text(), invocation

    def run(**body: Any) -> tuple[str, Invocation]:
        with called_from(Surface.LANGCHAIN):
            return answer(pocket.invoke(name, body, **options))

    async def arun(**body: Any) -> tuple[str, Invocation]:
        with called_from(Surface.LANGCHAIN):
            return answer(await pocket.ainvoke(name, body, **options))

    return StructuredTool(
        name=name,
        description=tool.tool.description,
        args_schema=dict(tool.tool.input_schema),
        func=run,
        coroutine=arun,
        response_format="content_and_artifact",
        handle_tool_error=_report_error,
        metadata=_metadata(name, tool),
    )


def _metadata(name: str, tool: Tool) -> dict[str, Any]:
    """What LangChain has no field for, where a host can read it: the auth provider, and what MCP lists beside
    the schema (the title, the annotations under MCP's names, the outputSchema) when the tool declares it."""
    spec = tool.tool
    metadata: dict[str, Any] = {"pocket_tool": name, "auth_provider": tool.auth.provider if tool.auth else None}
    if spec.title is not None:
        metadata["title"] = spec.title
    if spec.annotations is not None and spec.annotations.hints():
        metadata["annotations"] = spec.annotations.hints()
    if spec.output_schema is not None:
        metadata["output_schema"] = spec.output_schema
    return metadata


def langchain_tools(
    pocket: Pocket,
    *,
    user_id: str = "default",
    variables: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[StructuredTool]:
    """Every tool of `pocket` as a `StructuredTool`, in the Pocket's order."""
    return [
        langchain_tool(pocket, name, user_id=user_id, variables=variables, timeout=timeout) for name in pocket.tools
    ]

"""`pocket serve`: the tools over MCP, to any number of agents and users.

`mcp` (tools listed and called through the official SDK, over stdio or streamable HTTP), `resource` (HTTP as an
OAuth resource server: metadata, challenges, access tokens checked, the caller's user), `elicitation` (a call
that needs a provider's consent asks for it with URL-mode elicitation), `consent_links` (links only their own
user can follow), `progress` (build lines and heartbeats as progress notifications) and `cancel` (a call
cancelled when its HTTP client goes away).

Names are loaded on first use: importing one part does not import the MCP SDK.
"""

from __future__ import annotations

from runner.exports import lazy

__getattr__ = lazy(__name__, {name: "runner.server.mcp" for name in ("build_server", "http_app", "serve")})

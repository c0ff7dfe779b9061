// A second MCP client for the tests: the official TypeScript SDK, logging in with its own OAuth support
// (discovery from the server's 401, PKCE S256, the resource indicator) as a public client registered at the
// authorization server. Driven by tests/test_mcp_auth.py over stdin/stdout, one line each:
//   stdout "authorize URL"   open URL in a browser, log in; then write the callback's `code` on stdin
//   stdout "result JSON"     what the calls answered: the tool names, then each call's text and isError
// Environment: SERVER_URL (the MCP endpoint), CLIENT_ID, REDIRECT_URI, CALLS (JSON list of [name, arguments]).

import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const serverUrl = new URL(process.env.SERVER_URL);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

class Provider {
  constructor() {
    this.saved = {};
  }
  get redirectUrl() {
    return process.env.REDIRECT_URI;
  }
  get clientMetadata() {
    return { redirect_uris: [process.env.REDIRECT_URI], token_endpoint_auth_method: 'none', client_name: 'ts-test' };
  }
  clientInformation() {
    return { client_id: process.env.CLIENT_ID };
  }
  tokens() {
    return this.saved.tokens;
  }
  saveTokens(tokens) {
    this.saved.tokens = tokens;
  }
  redirectToAuthorization(url) {
    process.stdout.write(`authorize ${url.href}\n`);
  }
  saveCodeVerifier(verifier) {
    this.saved.verifier = verifier;
  }
  codeVerifier() {
    return this.saved.verifier;
  }
}

const provider = new Provider();
const connect = async () => {
  const client = new Client({ name: 'pocket-ts-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider });
  await client.connect(transport);
  return client;
};

let client;
try {
  client = await connect();
} catch (error) {
  if (!(error instanceof UnauthorizedError)) throw error;
  const { value: code } = await lines.next();
  const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider });
  await transport.finishAuth(code.trim());
  client = await connect();
}
const tools = (await client.listTools()).tools.map((tool) => tool.name);
const calls = [];
for (const [name, args] of JSON.parse(process.env.CALLS || '[]')) {
  const result = await client.callTool({ name, arguments: args });
  calls.push({ text: result.content[0].text, isError: Boolean(result.isError) });
}
process.stdout.write(`result ${JSON.stringify({ tools, calls })}\n`);
await client.close();
process.exit(0);

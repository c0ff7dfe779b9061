// A strict OAuth 2.0 / OpenID Connect authorization server for the auth tests (panva's oidc-provider,
// OpenID Certified). Configured from the environment by tests/fixtures_oauth.py:
//   PORT               port to listen on (127.0.0.1 only)
//   CLIENTS            JSON list of client metadata (client_id, client_secret, redirect_uris, ...)
//   ACCESS_TOKEN_TTL   access token lifetime in seconds (short, to test refresh)
//   TOKEN_DELAY_MS     how long the token endpoint takes to answer (real ones hash client secrets: 0.3-2 s)
//   SPLIT_METADATA     "1": the OpenID discovery document lacks revocation_endpoint, which only RFC 8414's
//                      /.well-known/oauth-authorization-server names (as many real servers publish them)
//   RESOURCE_FORMAT    the access tokens issued for an http(s) resource indicator (an MCP server: RFC 8707):
//                      "jwt" (default; RFC 9068, `aud` = the resource) or "opaque" (checked by introspection)
//   RESOURCE_TTL       their lifetime in seconds (default 300)
//   JWKS               JSON private key set to sign with (default: oidc-provider's development keys); the
//                      tests restart the server with another to rotate keys
// Strict on purpose: exact redirect URIs, PKCE S256 required, single-use codes, refresh tokens rotated
// on every use with reuse detection (a replayed refresh token revokes the whole grant), no clock tolerance.
// Prints one line "ready <issuer>" on stdout once it accepts connections.

import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);
const issuer = `http://127.0.0.1:${port}`;
const accessTokenTTL = Number(process.env.ACCESS_TOKEN_TTL || 60);
const clients = JSON.parse(process.env.CLIENTS || '[]');
const resource = 'urn:pocket:test-api';
const apiScopes = 'api:read api:write repo user';
// What an MCP server (a resource named by its URL) may be granted.
const mcpScopes = 'mcp:tools mcp:admin';
const resourceFormat = process.env.RESOURCE_FORMAT || 'jwt';
const resourceTTL = Number(process.env.RESOURCE_TTL || 300);
const jwks = process.env.JWKS ? JSON.parse(process.env.JWKS) : undefined;

function resourceServer(indicator) {
  if (/^https?:\/\//.test(indicator)) {
    return { scope: mcpScopes, audience: indicator, accessTokenFormat: resourceFormat, accessTokenTTL: resourceTTL };
  }
  return { scope: apiScopes, accessTokenFormat: 'opaque', accessTokenTTL };
}

const provider = new Provider(issuer, {
  clients,
  ...(jwks ? { jwks } : {}),
  clockTolerance: 0,
  scopes: ['openid', 'offline_access'],
  pkce: { methods: ['S256'], required: () => true },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? accessTokenTTL,
    AuthorizationCode: 60,
    DeviceCode: 120,
    Grant: 3600,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 3600,
    Session: 3600,
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => resourceServer(indicator),
    },
  },
  // Tokens in the token response only: never in a URL.
  responseTypes: ['code'],
});
provider.proxy = false;

const tokenDelay = Number(process.env.TOKEN_DELAY_MS || 0);
const splitMetadata = process.env.SPLIT_METADATA === '1';
provider.use(async (ctx, next) => {
  if (ctx.path === '/token' && tokenDelay > 0) {
    await new Promise((resolve) => setTimeout(resolve, tokenDelay));
  }
  if (splitMetadata && ctx.path === '/.well-known/oauth-authorization-server') {
    ctx.path = '/.well-known/openid-configuration';
    await next();
    return;
  }
  await next();
  if (splitMetadata && ctx.path === '/.well-known/openid-configuration' && ctx.body) {
    const body = typeof ctx.body === 'string' ? JSON.parse(ctx.body) : { ...ctx.body };
    delete body.revocation_endpoint;
    ctx.body = body;
  }
});

// One line per token endpoint outcome, read by the tests (e.g. to count refreshes).
provider.on('grant.success', (ctx) => {
  process.stdout.write(`event grant.success ${ctx.oidc.params.grant_type}\n`);
});
provider.on('grant.error', (ctx, error) => {
  process.stdout.write(`event grant.error ${ctx.oidc.params?.grant_type} ${error.error}\n`);
});
provider.on('grant.revoked', () => {
  process.stdout.write('event grant.revoked\n');
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});

// Stop at once on a signal: open keep-alive connections must not hold the test session up.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    process.exit(0);
  });
}

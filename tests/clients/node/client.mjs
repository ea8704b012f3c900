// The TypeScript SDK's machine-to-machine OAuth, unmodified, against an MCP URL: connects
// with `StreamableHTTPClientTransport`, lists the tools, then makes each `--call` in order,
// printing one JSON object a line, in the shape tests/clients/python/report.py documents.
//
// With `--client-secret-env VAR` it uses `ClientCredentialsProvider` (the secret read from
// that variable); with `--private-key FILE` it uses `PrivateKeyJwtProvider` (PKCS#8 PEM,
// `--alg`). The SDK does the rest: 401, protected-resource and authorization-server metadata
// discovery, the token request, the retry, and its answer to a 403 `insufficient_scope`.
// Its HTTP exchanges are seen through the transport's `fetch` option, which the SDK also
// uses for discovery and the token request.
//
// Runs from the TypeScript SDK's install (target/differential/node), where the test copies
// it, since Node resolves packages next to the script.
//
// usage: node client.mjs URL --client-id ID --issuer URL
//            (--client-secret-env VAR | --private-key FILE [--alg ALG]) [--scope S]
//            [--call NAME[=JSON]]...

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
    ClientCredentialsProvider,
    PrivateKeyJwtProvider
} from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const SECRET_FIELDS = ['client_secret', 'subject_token', 'actor_token'];

function emit(event, fields) {
    process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

function describe(error) {
    return `${error?.name ?? 'Error'}: ${error?.message ?? String(error)}`;
}

function decodeJwt(token) {
    const parts = typeof token === 'string' ? token.split('.') : [];
    if (parts.length !== 3) return null;
    try {
        const [header, claims] = parts.slice(0, 2).map(p => JSON.parse(Buffer.from(p, 'base64url').toString()));
        return { header, claims };
    } catch {
        return null;
    }
}

function describeForm(body) {
    const form = Object.fromEntries(new URLSearchParams(String(body)));
    for (const name of SECRET_FIELDS) if (name in form) form[name] = '<redacted>';
    if ('client_assertion' in form) form.client_assertion = decodeJwt(form.client_assertion);
    return form;
}

// `fetch`, printing each exchange as report.py's `http` event.
async function loggingFetch(url, init = {}) {
    const response = await fetch(url, init);
    const headers = new Headers(init.headers);
    const entry = { method: init.method ?? 'GET', url: String(url), status: response.status };
    const authorization = headers.get('authorization');
    if (authorization) entry.authorization = authorization.split(' ')[0];
    if (init.body instanceof URLSearchParams || headers.get('content-type')?.startsWith('application/x-www-form-urlencoded')) {
        entry.form = describeForm(init.body);
        if (response.headers.get('content-type')?.startsWith('application/json')) {
            const body = await response.clone().json().catch(() => null);
            if (body && typeof body === 'object') {
                const { access_token, ...rest } = body;
                entry.body = rest;
                if (typeof access_token === 'string') entry.token = decodeJwt(access_token);
            }
        }
    }
    const challenge = response.headers.get('www-authenticate');
    if (challenge) entry.www_authenticate = challenge;
    emit('http', entry);
    return response;
}

function parseCall(spec) {
    const at = spec.indexOf('=');
    return at === -1 ? [spec, {}] : [spec.slice(0, at), JSON.parse(spec.slice(at + 1))];
}

async function main() {
    const { values, positionals } = parseArgs({
        allowPositionals: true,
        options: {
            'client-id': { type: 'string' },
            issuer: { type: 'string' },
            'client-secret-env': { type: 'string' },
            'private-key': { type: 'string' },
            alg: { type: 'string', default: 'ES256' },
            scope: { type: 'string' },
            call: { type: 'string', multiple: true, default: [] }
        }
    });
    const [url] = positionals;
    if (!url || !values['client-id'] || !values.issuer || !values['client-secret-env'] === !values['private-key']) {
        process.stderr.write(
            'usage: node client.mjs URL --client-id ID --issuer URL ' +
                '(--client-secret-env VAR | --private-key FILE [--alg ALG]) [--scope S] [--call NAME[=JSON]]...\n'
        );
        process.exit(2);
    }
    const common = { clientId: values['client-id'], expectedIssuer: values.issuer, scope: values.scope };
    const authProvider = values['private-key']
        ? new PrivateKeyJwtProvider({
              ...common,
              privateKey: readFileSync(values['private-key'], 'utf8'),
              algorithm: values.alg
          })
        : new ClientCredentialsProvider({ ...common, clientSecret: process.env[values['client-secret-env']] });
    const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider, fetch: loggingFetch });
    const client = new Client({ name: 'portcullis-oauth-client-test', version: '0.0.0' });
    try {
        await client.connect(transport);
        const { tools } = await client.listTools();
        emit('tools', { names: tools.map(tool => tool.name) });
        for (const [name, args] of values.call.map(parseCall)) {
            try {
                const result = await client.callTool({ name, arguments: args });
                const text = result.content.map(part => part.text ?? '').join('');
                emit('call', { tool: name, ok: !result.isError, text });
            } catch (error) {
                // The SDK's own refusal, reported as such.
                emit('call', { tool: name, ok: false, error: describe(error) });
            }
        }
        await client.close();
    } catch (error) {
        emit('error', { error: describe(error) });
        process.exit(1);
    }
}

await main();

// partner-token, in JavaScript: authenticates `Authorization: partner-token <id>:<secret>`
// against the hashed credentials in the granted secret `credentials`.
//
// A line-for-line port of the Rust provider in `guest-providers/providers/partner-token`:
// same config, same secret format, same verdicts and denial texts. See README.md.

import { constantTimeEq, log, secret, sha256 } from 'portcullis:auth/host@0.1.0';

/** The secret that holds the credentials, one client per line. */
const CREDENTIALS_SECRET = 'credentials';

const HEX = /^[0-9a-fA-F]{64}$/;
const ZERO_HASH = new Uint8Array(32);
const encoder = new TextEncoder();

/** The configured provider of this instance; `null` until `configure` succeeds. */
let provider = null;

const deny = (status, code, reason) => ({ tag: 'deny', val: { status, code, reason } });
const invalidToken = (reason) => deny(401, 'invalid_token', reason);

// Like Rust's `eq_ignore_ascii_case`: only ASCII letters fold (`toLowerCase` would also fold
// `İ` and friends).
const asciiLower = (text) => text.replace(/[A-Z]/g, (c) => c.toLowerCase());
const eqIgnoreAsciiCase = (a, b) => a.length === b.length && asciiLower(a) === asciiLower(b);

// `\s` in a JS regex is Unicode whitespace, close to Rust's `char::is_whitespace`.
const hasWhitespace = (text) => /\s/u.test(text);

/** A configure error: componentize-js turns a thrown value into the `err` of the result. */
class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.payload = message;
  }
}

function parseConfig(text) {
  const json = text.trim() === '' ? '{}' : text;
  let config;
  try {
    config = JSON.parse(json);
  } catch (e) {
    throw new ConfigError(`invalid config: ${e.message}`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError('invalid config: expected a JSON object');
  }
  for (const key of Object.keys(config)) {
    if (key !== 'scheme') {
      throw new ConfigError(`invalid config: unknown field \`${key}\`, expected \`scheme\``);
    }
  }
  const scheme = config.scheme ?? 'partner-token';
  if (typeof scheme !== 'string') {
    throw new ConfigError('invalid config: `scheme` must be a string');
  }
  if (scheme === '' || hasWhitespace(scheme)) {
    throw new ConfigError(`invalid scheme \`${scheme}\`: must be one word`);
  }
  return scheme;
}

function hexToBytes(hex) {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

// `<id>:sha256:<64 hex digits>:<scope>,<scope>…` per line; blank lines and `#` comments are
// skipped. Errors name the line, never its content.
function parseCredentials(text) {
  const clients = new Map();
  // Split on "\n" and trim (which drops a trailing "\r"), as Rust's `str::lines` + `trim` do.
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) {
      return;
    }
    const bad = (why) =>
      new ConfigError(`secret \`${CREDENTIALS_SECRET}\`, line ${index + 1}: ${why}`);
    // Rust's `splitn(4, ':')`: the fourth field keeps any further colons.
    const parts = line.split(':');
    const [id, algorithm, digest] = parts;
    const scopes = parts.slice(3).join(':');
    if (id === '' || hasWhitespace(id)) {
      throw bad('the client id is empty or contains whitespace');
    }
    if (algorithm !== 'sha256') {
      throw bad('expected `<id>:sha256:<hex>:<scopes>`');
    }
    if (digest === undefined || !HEX.test(digest)) {
      throw bad('the hash is not 64 hex digits');
    }
    if (clients.has(id)) {
      throw bad('the client id is listed twice');
    }
    clients.set(id, {
      secretSha256: hexToBytes(digest),
      scopes: scopes
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    });
  });
  if (clients.size === 0) {
    throw new ConfigError(`secret \`${CREDENTIALS_SECRET}\` lists no clients`);
  }
  return clients;
}

/** The credential after our scheme, if the header value uses it. */
function credentialOf(scheme, headerValue) {
  const value = headerValue.trim();
  const space = value.indexOf(' ');
  const [used, credential] = space < 0 ? [value, ''] : [value.slice(0, space), value.slice(space + 1)];
  return eqIgnoreAsciiCase(used, scheme) ? credential.trim() : null;
}

function check(clients, credential) {
  const colon = credential.indexOf(':');
  const id = colon < 0 ? '' : credential.slice(0, colon);
  const presentedSecret = colon < 0 ? '' : credential.slice(colon + 1);
  if (id === '' || presentedSecret === '') {
    return invalidToken('malformed partner token: expected <id>:<secret>');
  }
  // Hash and compare even for an unknown id, so that timing does not tell which ids exist.
  const presented = sha256(encoder.encode(presentedSecret));
  const client = clients.get(id);
  const matches = constantTimeEq(presented, client ? client.secretSha256 : ZERO_HASH);
  if (client && matches) {
    return {
      tag: 'allow',
      val: { subject: id, scopes: [...client.scopes], claims: [['client_id', id]] },
    };
  }
  const why = client ? 'wrong secret' : 'unknown client id';
  log('debug', `partner \`${id}\` refused: ${why}`);
  // One reason for both, so the answer does not tell which ids exist either.
  return invalidToken('unknown partner or wrong secret');
}

export function configure(config) {
  const scheme = parseConfig(config);
  const credentials = secret(CREDENTIALS_SECRET);
  if (credentials == null) {
    throw new ConfigError(`the secret \`${CREDENTIALS_SECRET}\` is not granted to this provider`);
  }
  provider = { scheme, clients: parseCredentials(credentials) };
}

export function authenticate(req) {
  if (provider === null) {
    // Breaks the contract, so neither 401 nor 403: the host treats it as an error.
    return deny(500, 'server_error', 'provider called before configure succeeded');
  }
  for (const value of req.headerAll('authorization')) {
    const credential = credentialOf(provider.scheme, value);
    if (credential !== null) {
      return check(provider.clients, credential);
    }
  }
  return { tag: 'abstain' };
}

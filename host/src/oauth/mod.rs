//! The OAuth 2.1 authorization server for machine clients (off unless
//! `[authorization_server]` is configured): client registry, signing keys, the token
//! endpoint and its grants, RFC 8414 metadata, JWKS, revocation and introspection.

pub mod clients_file;

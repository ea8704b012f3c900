//! `[identity]` as written in config, and its validation into [`IdentitySettings`]. The CA
//! certificate and key are read when the authority is built ([`super::IdentityAuthority`]),
//! at load, never per request.
//!
//! ```toml
//! [identity]
//! ca_cert = "file://identity/ca.pem"      # `portcullis identity init` writes both
//! ca_key = "file://identity/ca.key"
//! store = "identities.jsonl"              # default; relative to the config file
//! path = "/identity"                      # register, rotate and ca.pem below it
//! route = "/mcp"                          # whose chain authenticates registrations
//! register_scope = "identity:register"    # the caller must hold it
//! scopes = ["mcp:read", "mcp:call"]       # what an identity may get (the caller's share)
//! cert_lifetime_secs = 2592000            # 30 days
//! rotation_overlap_secs = 300             # the replaced certificate's grace
//! max_per_caller = 10                     # identities one caller may hold at once
//! uri_san = "spiffe://{trust_domain}/agent/{id}"
//! trust_domain = "mcp.example.com"        # default: the public URL's host
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::SecretRef;

/// The default certificate lifetime: 30 days.
pub const DEFAULT_CERT_LIFETIME_SECS: u64 = 30 * 86_400;
/// The shortest certificate lifetime: a client must have time to rotate.
pub const CERT_LIFETIME_FLOOR_SECS: u64 = 300;
/// The longest certificate lifetime: 397 days, the CA/Browser Forum's ceiling.
pub const CERT_LIFETIME_CEILING_SECS: u64 = 397 * 86_400;
/// The default time a rotated-out certificate keeps working.
pub const DEFAULT_ROTATION_OVERLAP_SECS: u64 = 300;
/// The default URI SAN template.
pub const DEFAULT_URI_SAN: &str = "spiffe://{trust_domain}/agent/{id}";

/// `[identity]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// The CA certificate, PEM, by reference (`file://` or `env://`).
    pub ca_cert: Option<SecretRef>,
    /// The CA's PKCS#8 private key, PEM, by reference (`file://` or `env://`).
    pub ca_key: Option<SecretRef>,
    /// The issued-identities journal (default `identities.jsonl` beside the config file).
    pub store: Option<String>,
    /// The endpoints' base path (default `/identity`).
    pub path: Option<String>,
    /// The route whose chain authenticates registrations (its `path`).
    pub route: Option<String>,
    /// The scope a registering caller must hold (default `identity:register`).
    pub register_scope: Option<String>,
    /// Scopes an identity may get: each one the registering caller holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Certificate lifetime, seconds (default 30 days).
    pub cert_lifetime_secs: Option<u64>,
    /// How long a rotated-out certificate keeps working, seconds (default 300).
    pub rotation_overlap_secs: Option<u64>,
    /// Identities one caller may hold at once, revoked ones not counted (default 10).
    pub max_per_caller: Option<u32>,
    /// The URI SAN template: `{trust_domain}`, `{id}` and `{name}` are filled in.
    pub uri_san: Option<String>,
    /// The `{trust_domain}` (default: the host of `server.public_url`).
    pub trust_domain: Option<String>,
}

/// `[identity]`, validated.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// The CA certificate.
    pub ca_cert: SecretRef,
    /// The CA key.
    pub ca_key: SecretRef,
    /// The journal, absolute.
    pub store: PathBuf,
    /// The base path, without a trailing `/`.
    pub path: String,
    /// The path of the route whose chain authenticates registrations.
    pub route: String,
    /// The scope registration needs.
    pub register_scope: String,
    /// Scopes an identity may get.
    pub scopes: Vec<String>,
    /// Certificate lifetime.
    pub cert_lifetime_secs: u64,
    /// Overlap after rotation.
    pub rotation_overlap_secs: u64,
    /// Identities per caller.
    pub max_per_caller: u32,
    /// URI SAN template.
    pub uri_san: String,
    /// Trust domain.
    pub trust_domain: String,
}

/// Why `[identity]` is invalid: the key (below `identity.`) and the reason with its fix.
#[derive(Debug)]
pub struct SettingsError {
    /// The key, below `identity`.
    pub key: String,
    /// What is wrong and what to do.
    pub reason: String,
}

fn error(key: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl RawIdentity {
    /// Validates the section; `public_url` gives the default trust domain, `base_dir` the
    /// folder relative paths start from.
    pub fn validate(
        &self,
        public_url: &str,
        base_dir: &Path,
    ) -> Result<IdentitySettings, SettingsError> {
        let reference =
            |key: &str, value: &Option<SecretRef>| -> Result<SecretRef, SettingsError> {
                match value {
                    None => Err(error(
                        key,
                        "is required; `portcullis identity init --dir DIR` writes a CA, then set \
                     `ca_cert = \"file://DIR/ca.pem\"` and `ca_key = \"file://DIR/ca.key\"`",
                    )),
                    Some(r) if r.is_literal() => Err(error(
                        key,
                        "must be a reference (`file://…` or `env://…`), not the PEM itself: \
                     the CA key must not live in the config file",
                    )),
                    Some(r) => Ok(match r {
                        SecretRef::File(p) if p.is_relative() => SecretRef::File(base_dir.join(p)),
                        other => other.clone(),
                    }),
                }
            };
        let ca_cert = reference("ca_cert", &self.ca_cert)?;
        let ca_key = reference("ca_key", &self.ca_key)?;
        let store = base_dir.join(self.store.as_deref().unwrap_or("identities.jsonl"));
        let path = self.path.as_deref().unwrap_or("/identity");
        if !path.starts_with('/')
            || path.len() < 2
            || crate::normal_form::path_problem(path).is_some()
            || path.ends_with('/')
        {
            return Err(error(
                "path",
                format!(
                    "`{path}` is not a path such as `/identity` (absolute, normal form, no trailing `/`)"
                ),
            ));
        }
        let Some(route) = self.route.clone() else {
            return Err(error(
                "route",
                "is required: name the route (its `path`) whose chain authenticates \
                 registrations, e.g. `route = \"/mcp\"`",
            ));
        };
        let register_scope = self
            .register_scope
            .clone()
            .unwrap_or_else(|| "identity:register".to_owned());
        if !is_scope(&register_scope) || register_scope == "*" {
            return Err(error(
                "register_scope",
                format!("`{register_scope}` is not a scope (no spaces, not empty, not `*`)"),
            ));
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            if *scope == register_scope {
                return Err(error(
                    &format!("scopes[{i}]"),
                    format!(
                        "`{scope}` is the registration scope: an identity that could register \
                         identities would escape its caller's quota and revocation; remove it"
                    ),
                ));
            }
            if !is_scope(scope) || scope == "*" {
                return Err(error(
                    &format!("scopes[{i}]"),
                    format!("`{scope}` is not a scope (no spaces, not empty, not `*`)"),
                ));
            }
        }
        let cert_lifetime_secs = self
            .cert_lifetime_secs
            .unwrap_or(DEFAULT_CERT_LIFETIME_SECS);
        if !(CERT_LIFETIME_FLOOR_SECS..=CERT_LIFETIME_CEILING_SECS).contains(&cert_lifetime_secs) {
            return Err(error(
                "cert_lifetime_secs",
                format!(
                    "{cert_lifetime_secs} is outside {CERT_LIFETIME_FLOOR_SECS}..={CERT_LIFETIME_CEILING_SECS} \
                     (five minutes to 397 days)"
                ),
            ));
        }
        let rotation_overlap_secs = self
            .rotation_overlap_secs
            .unwrap_or(DEFAULT_ROTATION_OVERLAP_SECS);
        if rotation_overlap_secs > 86_400 {
            return Err(error(
                "rotation_overlap_secs",
                format!(
                    "{rotation_overlap_secs} is longer than a day; a replaced certificate should stop working soon"
                ),
            ));
        }
        let max_per_caller = self.max_per_caller.unwrap_or(10);
        if max_per_caller == 0 {
            return Err(error(
                "max_per_caller",
                "0 would refuse every registration; remove `[identity]` to turn registration off",
            ));
        }
        let trust_domain = match &self.trust_domain {
            Some(domain) => domain.clone(),
            None => url::Url::parse(public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "portcullis".to_owned()),
        };
        if trust_domain.is_empty()
            || !trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(error(
                "trust_domain",
                format!(
                    "`{trust_domain}` is not a trust domain (lower-case letters, digits, `-`, `.`, `_`)"
                ),
            ));
        }
        let uri_san = self
            .uri_san
            .clone()
            .unwrap_or_else(|| DEFAULT_URI_SAN.to_owned());
        check_template(&uri_san)?;
        Ok(IdentitySettings {
            ca_cert,
            ca_key,
            store,
            path: path.to_owned(),
            route,
            register_scope,
            scopes: self.scopes.clone(),
            cert_lifetime_secs,
            rotation_overlap_secs,
            max_per_caller,
            uri_san,
            trust_domain,
        })
    }
}

impl IdentitySettings {
    /// What every subject of this CA starts with (the URI SAN template filled up to its first
    /// per-identity placeholder): no certificate of another CA may authenticate as one.
    pub fn subject_prefix(&self) -> String {
        let filled = self.uri_san.replace("{trust_domain}", &self.trust_domain);
        let cut = filled.find('{').unwrap_or(filled.len());
        filled[..cut].to_owned()
    }
}

fn is_scope(scope: &str) -> bool {
    !scope.is_empty() && !scope.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The template must be a URI once filled in, and must name the identity (`{id}`), so that
/// two identities never share a subject.
fn check_template(template: &str) -> Result<(), SettingsError> {
    if !template.contains("{id}") {
        return Err(error(
            "uri_san",
            format!(
                "`{template}` must contain `{{id}}`: two identities must never share a subject"
            ),
        ));
    }
    let sample = fill(template, "example.org", "idn_0", "name");
    match url::Url::parse(&sample) {
        Ok(url) if url.scheme() == "spiffe" || url.scheme() == "urn" || url.has_host() => Ok(()),
        _ => Err(error(
            "uri_san",
            format!(
                "`{template}` does not give a URI such as `spiffe://{{trust_domain}}/agent/{{id}}`"
            ),
        )),
    }
}

/// The template with its placeholders filled in.
pub(crate) fn fill(template: &str, trust_domain: &str, id: &str, name: &str) -> String {
    template
        .replace("{trust_domain}", trust_domain)
        .replace("{id}", id)
        .replace("{name}", name)
}

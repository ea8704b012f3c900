//! The built-in mTLS validator: the caller is the client certificate the TLS listener
//! verified, named by its subject CN or a subject alternative name, with scopes mapped in
//! config. Also [`client_cert_from_der`], which the listener uses to describe a certificate.
//!
//! ```toml
//! [providers.clients]
//! type = "mtls"
//! identity = "san"                 # default "cn"
//! san_type = "uri"                 # default: the first DNS or URI SAN
//! allowed_subjects = ["spiffe://acme.test/client-a"]
//! scopes = { "spiffe://acme.test/client-a" = ["mcp:read"], "*" = [] }
//! ```
//!
//! This validator trusts [`RequestContext::client_cert`] as verified: chain and validity
//! checks belong to the listener's rustls configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::Deserialize;
use x509_parser::der_parser::asn1_rs::ToDer as _;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::x509::X509Name;

use crate::context::{ClientCert, IssuedIdentity, RequestContext};
use crate::engine::{Authenticator, BoxFuture, ProviderError};
use crate::verdict::{Denial, ErrorCode, Identity, Verdict};

/// Which part of the certificate names the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    /// The subject's common name.
    #[default]
    Cn,
    /// A subject alternative name.
    San,
}

/// A kind of subject alternative name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    /// `dNSName`.
    Dns,
    /// `uniformResourceIdentifier` (SPIFFE IDs are URIs).
    Uri,
    /// `rfc822Name`.
    Email,
    /// `iPAddress`.
    Ip,
}

impl SanType {
    /// The prefix [`client_cert_from_der`] puts before a SAN of this type.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Dns => "DNS:",
            Self::Uri => "URI:",
            Self::Email => "email:",
            Self::Ip => "IP:",
        }
    }
}

/// The `[providers.NAME]` table of an `mtls` provider (without its `type` key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSettings {
    /// `"cn"` (default) or `"san"`.
    #[serde(default)]
    pub identity: IdentityField,
    /// With `identity = "san"`: which SAN type to take (the first of it). Default: the first
    /// DNS or URI SAN.
    #[serde(default)]
    pub san_type: Option<SanType>,
    /// When set, only these identities are let in; others are refused with 403.
    #[serde(default)]
    pub allowed_subjects: Option<Vec<String>>,
    /// Scopes per identity; `"*"` applies to identities not listed. Unlisted identities
    /// with no `"*"` entry get no scopes.
    #[serde(default)]
    pub scopes: BTreeMap<String, Vec<String>>,
}

/// An `mtls` provider's settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MtlsConfigError {
    /// `san_type` without `identity = "san"`.
    #[error(
        "provider `{0}`: `san_type` applies only with `identity = \"san\"`; remove it or set `identity = \"san\"`"
    )]
    SanTypeWithoutSan(String),
    /// `allowed_subjects = []` would refuse every certificate.
    #[error(
        "provider `{0}`: `allowed_subjects` is empty, which refuses everyone; list subjects or remove it to accept every verified certificate"
    )]
    EmptyAllowList(String),
}

/// A certificate [`client_cert_from_der`] cannot read.
#[derive(Debug, thiserror::Error)]
pub enum CertParseError {
    /// Not a DER X.509 certificate.
    #[error("client certificate is not a DER X.509 certificate: {0}")]
    Der(String),
    /// Bytes follow the certificate.
    #[error("client certificate has trailing bytes after its DER encoding")]
    TrailingBytes,
    /// The subject alternative name extension is malformed or repeated.
    #[error("client certificate has a malformed subject alternative name extension")]
    BadSan,
}

/// Authenticates by verified client certificate.
#[derive(Debug)]
pub struct MtlsValidator {
    name: String,
    identity: IdentityField,
    san_type: Option<SanType>,
    allowed: Option<Vec<String>>,
    scopes: BTreeMap<String, Vec<String>>,
    /// Subjects only the identity CA's certificates may have: another CA's certificate
    /// naming one is refused.
    reserved: Option<Reserved>,
}

/// The identity CA's subjects: those its template gives now (a prefix, case-blind), and
/// every subject its store has ever given (a template or trust domain changed since).
#[derive(Debug)]
struct Reserved {
    prefix: String,
    store: Arc<crate::identity::Registry>,
}

impl Reserved {
    fn holds(&self, subject: &str) -> bool {
        (!self.prefix.is_empty() && subject.to_ascii_lowercase().starts_with(&self.prefix))
            || self.store.read(|book| book.has_subject(subject))
    }
}

impl MtlsValidator {
    /// Builds the validator of provider `name`.
    pub fn new(name: impl Into<String>, settings: MtlsSettings) -> Result<Self, MtlsConfigError> {
        let name = name.into();
        if settings.san_type.is_some() && settings.identity != IdentityField::San {
            return Err(MtlsConfigError::SanTypeWithoutSan(name));
        }
        if settings
            .allowed_subjects
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return Err(MtlsConfigError::EmptyAllowList(name));
        }
        Ok(Self {
            name,
            identity: settings.identity,
            san_type: settings.san_type,
            allowed: settings.allowed_subjects,
            scopes: settings.scopes,
            reserved: None,
        })
    }

    /// Refuses certificates of other CAs that name a subject of the identity CA: one
    /// starting with `prefix` ([`crate::identity::IdentitySettings::subject_prefix`]) or
    /// one its `store` has given.
    #[must_use]
    pub fn reserving(mut self, prefix: &str, store: Arc<crate::identity::Registry>) -> Self {
        self.reserved = Some(Reserved {
            prefix: prefix.to_ascii_lowercase(),
            store,
        });
        self
    }

    /// The decision for a request that presented `cert` (or none).
    pub fn check(&self, cert: Option<&ClientCert>) -> Verdict {
        let Some(cert) = cert else {
            return Verdict::Abstain;
        };
        if let Some(issued) = &cert.issued {
            return self.issued(cert, issued);
        }
        let subject = match self.identity {
            IdentityField::Cn => cert.common_name.as_deref().filter(|cn| !cn.is_empty()),
            IdentityField::San => self.san(cert),
        };
        let Some(subject) = subject else {
            let reason = match self.identity {
                IdentityField::Cn => "client certificate has no common name",
                IdentityField::San => {
                    "client certificate has no subject alternative name of the configured type"
                }
            };
            return Verdict::Deny(Denial::invalid_token(reason));
        };
        // Leading or trailing whitespace disappears in an HTTP header value (and in many
        // comparisons): ` spiffe://…` would reach the upstream as `spiffe://…`.
        if subject.trim() != subject || subject.chars().any(char::is_control) {
            return Verdict::Deny(Denial::invalid_token(
                "client certificate names its subject with surrounding whitespace or control \
                 characters",
            ));
        }
        if self.reserved.as_ref().is_some_and(|r| r.holds(subject)) {
            return Verdict::Deny(Denial::forbidden(
                ErrorCode::AccessDenied,
                "client certificate names a subject of the gateway's identity CA but was not \
                 issued by it",
            ));
        }
        if self
            .allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|a| a == subject))
        {
            return Verdict::Deny(Denial::forbidden(
                ErrorCode::AccessDenied,
                "client certificate identity is not allowed",
            ));
        }
        let scopes = self
            .scopes
            .get(subject)
            .or_else(|| self.scopes.get("*"))
            .cloned()
            .unwrap_or_default();
        Verdict::Allow(Identity {
            subject: subject.to_owned(),
            scopes,
            claims: vec![
                ("cert_subject".to_owned(), cert.subject.clone()),
                ("cert_sha256".to_owned(), cert.sha256_fingerprint.clone()),
            ],
        })
    }

    /// A certificate of this gateway's identity CA, vouched for by admission: the caller is
    /// its URI SAN, with the identity's recorded scopes (the `scopes` map is for other CAs).
    fn issued(&self, cert: &ClientCert, issued: &IssuedIdentity) -> Verdict {
        if self
            .allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&issued.subject))
        {
            return Verdict::Deny(Denial::forbidden(
                ErrorCode::AccessDenied,
                "client certificate identity is not allowed",
            ));
        }
        Verdict::Allow(Identity {
            subject: issued.subject.clone(),
            scopes: issued.scopes.clone(),
            claims: vec![
                ("cert_subject".to_owned(), cert.subject.clone()),
                ("cert_sha256".to_owned(), cert.sha256_fingerprint.clone()),
                ("identity_id".to_owned(), issued.id.clone()),
                ("identity_name".to_owned(), issued.name.clone()),
                ("identity_owner".to_owned(), issued.owner.clone()),
            ],
        })
    }

    fn san<'c>(&self, cert: &'c ClientCert) -> Option<&'c str> {
        let types: &[SanType] = match &self.san_type {
            Some(t) => std::slice::from_ref(t),
            None => &[SanType::Dns, SanType::Uri],
        };
        cert.sans.iter().find_map(|san| {
            types
                .iter()
                .find_map(|t| san.strip_prefix(t.prefix()))
                .filter(|value| !value.is_empty())
        })
    }
}

impl Authenticator for MtlsValidator {
    fn grants_wildcard(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a Arc<RequestContext>,
    ) -> BoxFuture<'a, Result<Verdict, ProviderError>> {
        let verdict = self.check(request.client_cert.as_ref());
        Box::pin(std::future::ready(Ok(verdict)))
    }
}

/// Describes a DER certificate: RFC 4514 subject, first CN, SANs as `DNS:…`, `URI:…`,
/// `email:…` and `IP:…` (other SAN kinds are left out), and the SHA-256 fingerprint.
pub fn client_cert_from_der(der: &[u8]) -> Result<ClientCert, CertParseError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertParseError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertParseError::TrailingBytes);
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut sans = Vec::new();
    let extension = cert
        .subject_alternative_name()
        .map_err(|_| CertParseError::BadSan)?;
    for name in extension.iter().flat_map(|ext| &ext.value.general_names) {
        match name {
            GeneralName::DNSName(v) => sans.push(format!("DNS:{v}")),
            GeneralName::URI(v) => sans.push(format!("URI:{v}")),
            GeneralName::RFC822Name(v) => sans.push(format!("email:{v}")),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_text(bytes) {
                    sans.push(format!("IP:{ip}"));
                }
            }
            _ => {}
        }
    }
    Ok(ClientCert {
        subject: rfc4514(cert.subject()),
        common_name,
        sans,
        sha256_fingerprint: hex::encode(crate::crypto::sha256(der)),
        issuer: rfc4514(cert.issuer()),
        not_after: cert.validity().not_after.timestamp(),
        issued: None,
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// RFC 4514: RDNs last to first, joined by `,`; attributes of one RDN joined by `+`.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            let short = short_name(&oid);
            match (short, attr.as_str()) {
                (Some(short), Ok(value)) => {
                    out.push_str(short);
                    out.push('=');
                    escape_value(value, &mut out);
                }
                _ => {
                    // Dotted types and non-string values: `#` and the value's DER in hex.
                    out.push_str(short.unwrap_or(&oid));
                    out.push_str("=#");
                    let der = attr.attr_value().to_der_vec().unwrap_or_default();
                    out.push_str(&hex::encode(der));
                }
            }
        }
    }
    out
}

/// The RFC 4514 names for attribute types; anything else is written as its OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 4514 section 2.4 escaping.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;

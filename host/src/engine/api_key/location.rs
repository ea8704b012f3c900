//! Where a bearer-style credential sits in a request: a header, optionally behind an auth
//! scheme (`Authorization: Bearer …`, `X-API-Key: …`, `Authorization: partner-token …`).
//!
//! Shared by the API-key and JWT validators so both read credentials by the same rules:
//! the scheme matches case-insensitively and is followed by exactly one space; the
//! credential is one run of visible ASCII; a header given twice is refused rather than
//! guessed at, because two parties picking different copies is how requests get smuggled.

use std::fmt;

use http::{HeaderMap, HeaderName};

use crate::verdict::{Denial, DenialKind, ErrorCode};

/// The header (and scheme) a validator reads its credential from.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialLocation {
    header: HeaderName,
    scheme: Option<Box<str>>,
}

/// What a request carries at a [`CredentialLocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No credential of this kind: the header is absent or carries another scheme.
    Absent,
    /// The credential, without the scheme.
    Credential(&'a str),
    /// The header is there for this scheme but unusable; the reason names no credential.
    Malformed(&'static str),
}

/// A `header` or `scheme` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The header name is not a valid HTTP field name.
    #[error("`header = \"{0}\"` is not a valid HTTP header name")]
    BadHeader(String),
    /// The scheme is not an HTTP auth-scheme token.
    #[error(
        "`scheme = \"{0}\"` is not an auth scheme: use letters, digits and `-._~+!#$%&'*^`|` \
         only (for example `Bearer`), or `\"\"` for a header that holds only the credential"
    )]
    BadScheme(String),
}

impl CredentialLocation {
    /// `Authorization: Bearer <credential>`.
    pub fn bearer() -> Self {
        Self {
            header: http::header::AUTHORIZATION,
            scheme: Some("Bearer".into()),
        }
    }

    /// Builds a location from the `header` and `scheme` settings.
    ///
    /// `header` defaults to `authorization`. `scheme` defaults to `Bearer` on
    /// `authorization` and to none on any other header; `""` asks for no scheme.
    pub fn from_settings(
        header: Option<&str>,
        scheme: Option<&str>,
    ) -> Result<Self, LocationError> {
        let header = match header {
            None => http::header::AUTHORIZATION,
            Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| LocationError::BadHeader(name.to_owned()))?,
        };
        let scheme = match scheme {
            Some("") => None,
            Some(scheme) if is_token(scheme) => Some(scheme.into()),
            Some(scheme) => return Err(LocationError::BadScheme(scheme.to_owned())),
            None if header == http::header::AUTHORIZATION => Some("Bearer".into()),
            None => None,
        };
        Ok(Self { header, scheme })
    }

    /// The header name (lower case).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The auth scheme, if the header carries one.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// Finds the credential in `headers`.
    pub fn find<'a>(&self, headers: &'a HeaderMap) -> Presented<'a> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(first) = values.next() else {
            return Presented::Absent;
        };
        let found = self.read(first.as_bytes());
        let mut ours = !matches!(found, Presented::Absent);
        let mut repeated = false;
        for value in values {
            repeated = true;
            ours |= !matches!(self.read(value.as_bytes()), Presented::Absent);
        }
        match (repeated, ours) {
            (true, true) => Presented::Malformed("the credential header appears more than once"),
            (true, false) => Presented::Absent,
            (false, _) => found,
        }
    }

    fn read<'a>(&self, value: &'a [u8]) -> Presented<'a> {
        let credential = match &self.scheme {
            None => value,
            Some(scheme) => {
                let scheme = scheme.as_bytes();
                let Some(head) = value.get(..scheme.len()) else {
                    return Presented::Absent;
                };
                if !head.eq_ignore_ascii_case(scheme) {
                    return Presented::Absent;
                }
                match value.get(scheme.len()) {
                    None => return Presented::Malformed("the auth scheme has no credential"),
                    Some(b' ') => &value[scheme.len() + 1..],
                    // `Bearerx …` is a different scheme, not a bad `Bearer`.
                    Some(_) => return Presented::Absent,
                }
            }
        };
        if credential.is_empty() {
            return Presented::Malformed("the credential is empty");
        }
        if !credential.iter().all(|b| b.is_ascii_graphic()) {
            return Presented::Malformed("the credential has spaces or non-ASCII characters");
        }
        match std::str::from_utf8(credential) {
            Ok(credential) => Presented::Credential(credential),
            Err(_) => Presented::Malformed("the credential is not ASCII"),
        }
    }
}

impl Default for CredentialLocation {
    fn default() -> Self {
        Self::bearer()
    }
}

impl fmt::Debug for CredentialLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Some(scheme) => write!(f, "{}: {scheme} <credential>", self.header),
            None => write!(f, "{}: <credential>", self.header),
        }
    }
}

/// The 400 `invalid_request` denial for a [`Presented::Malformed`] credential.
pub fn invalid_request(reason: &'static str) -> Denial {
    Denial {
        kind: DenialKind::BadRequest,
        code: Some(ErrorCode::InvalidRequest),
        reason: reason.into(),
    }
}

/// RFC 9110 `token`: what an auth scheme is made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn bearer_scheme_matches_case_insensitively() {
        let loc = CredentialLocation::bearer();
        for value in ["Bearer abc", "bearer abc", "BEARER abc"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(loc.find(&h), Presented::Credential("abc"), "{value}");
        }
    }

    #[test]
    fn other_schemes_and_missing_header_are_absent() {
        let loc = CredentialLocation::bearer();
        assert_eq!(loc.find(&HeaderMap::new()), Presented::Absent);
        for value in ["Basic dXNlcjpwdw==", "Bearerx abc", "Bear abc"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(loc.find(&h), Presented::Absent, "{value}");
        }
    }

    #[test]
    fn scheme_needs_exactly_one_space_and_a_credential() {
        let loc = CredentialLocation::bearer();
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer  abc",
            "Bearer a b",
            "Bearer\tabc",
        ] {
            let h = headers(&[("authorization", value)]);
            let found = loc.find(&h);
            assert!(
                matches!(found, Presented::Malformed(_) | Presented::Absent),
                "{value}: {found:?}"
            );
            assert!(!matches!(found, Presented::Credential(_)), "{value}");
        }
    }

    #[test]
    fn repeated_header_for_our_scheme_is_malformed() {
        let loc = CredentialLocation::bearer();
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(matches!(loc.find(&h), Presented::Malformed(_)));
        let h = headers(&[("authorization", "Basic x"), ("authorization", "Bearer b")]);
        assert!(matches!(loc.find(&h), Presented::Malformed(_)));
        let h = headers(&[("authorization", "Basic x"), ("authorization", "Basic y")]);
        assert_eq!(loc.find(&h), Presented::Absent);
    }

    #[test]
    fn header_without_scheme_takes_the_whole_value() {
        let loc = CredentialLocation::from_settings(Some("X-API-Key"), None).expect("valid");
        assert_eq!(loc.scheme(), None);
        let h = headers(&[("x-api-key", "k-123")]);
        assert_eq!(loc.find(&h), Presented::Credential("k-123"));
        let h = headers(&[("x-api-key", "")]);
        assert!(matches!(loc.find(&h), Presented::Malformed(_)));
    }

    #[test]
    fn custom_scheme_reads_its_credential() {
        let loc = CredentialLocation::from_settings(None, Some("partner-token")).expect("valid");
        let h = headers(&[("authorization", "Partner-Token id:secret")]);
        assert_eq!(loc.find(&h), Presented::Credential("id:secret"));
        let h = headers(&[("authorization", "Bearer id:secret")]);
        assert_eq!(loc.find(&h), Presented::Absent);
    }

    #[test]
    fn empty_scheme_on_authorization_means_none() {
        let loc = CredentialLocation::from_settings(Some("authorization"), Some("")).expect("ok");
        let h = headers(&[("authorization", "raw-key")]);
        assert_eq!(loc.find(&h), Presented::Credential("raw-key"));
    }

    #[test]
    fn bad_header_and_scheme_settings_name_the_value() {
        let err = CredentialLocation::from_settings(Some("x api key"), None).expect_err("bad");
        assert!(
            err.to_string().contains("`header = \"x api key\"`"),
            "{err}"
        );
        let err = CredentialLocation::from_settings(None, Some("Bea rer")).expect_err("bad");
        assert!(err.to_string().contains("`scheme = \"Bea rer\"`"), "{err}");
    }
}

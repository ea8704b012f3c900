//! One compact JWS, before and after its signature is checked: the shape test that decides
//! whether a credential is a JWT at all, the refusal reasons, and the rules that need no key
//! (`exp`, `nbf`, `aud`, scopes, subject). Parsing is in [`super::parse`].
//!
//! Every error is a fixed sentence: nothing from the token (which an attacker writes) is ever
//! echoed into a denial reason or a log line.

use std::fmt;

use serde_json::Value;

use super::parse::Claims;

/// Larger credentials are refused before any decoding.
pub(super) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The three segments of a compact JWS.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parts<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
    /// `header.payload`: the bytes the signature covers.
    pub signing_input: &'a str,
}

/// Splits `token` if it has the shape of a JWS: three dot-separated base64url segments, the
/// first two non-empty. An empty signature is kept (it is what `alg: none` looks like) so
/// that such a token is denied by name instead of passed over.
pub(super) fn split(token: &str) -> Option<Parts<'_>> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, payload) = signing_input.split_once('.')?;
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (!header.is_empty()
        && !payload.is_empty()
        && b64url(header)
        && b64url(payload)
        && b64url(signature))
    .then_some(Parts {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// Why a token is refused. `Display` is the denial reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// A segment is not base64url, not JSON, not an object, or has duplicate members.
    Malformed(&'static str),
    /// `alg` is `none` in any casing.
    Unsigned,
    /// `alg` names an algorithm this issuer does not accept.
    AlgorithmNotAllowed,
    /// The header has `crit`.
    CriticalHeader,
    /// No key fits the token's `kid` and `alg`.
    UnknownKey,
    /// No `kid`, and several keys fit the algorithm.
    AmbiguousKey,
    /// The signature does not verify.
    BadSignature,
    /// No `iss` claim.
    MissingIssuer,
    /// No `exp` claim.
    MissingExpiry,
    /// `exp` (plus leeway) is past.
    Expired,
    /// `nbf` (minus leeway) is in the future.
    NotYetValid,
    /// No `aud` claim.
    MissingAudience,
    /// `aud` names none of the configured audiences.
    WrongAudience,
    /// The subject claim is missing or not a string.
    MissingSubject,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLarge => "token is larger than 16 KiB",
            Self::Malformed(what) => what,
            Self::Unsigned => "unsigned tokens (alg `none`) are not accepted",
            Self::AlgorithmNotAllowed => "token algorithm is not allowed for this issuer",
            Self::CriticalHeader => "token has a `crit` header; no JWS extensions are supported",
            Self::UnknownKey => "token signing key is not in the issuer's key set",
            Self::AmbiguousKey => "token has no `kid` and several of the issuer's keys fit",
            Self::BadSignature => "token signature does not verify",
            Self::MissingIssuer => "token has no `iss` claim",
            Self::MissingExpiry => "token has no `exp` claim",
            Self::Expired => "token has expired",
            Self::NotYetValid => "token is not valid yet (`nbf` is in the future)",
            Self::MissingAudience => "token has no `aud` claim",
            Self::WrongAudience => "token audience does not include this resource",
            Self::MissingSubject => "token has no subject claim",
        })
    }
}

/// The `iss` claim, if it is a string.
pub(super) fn issuer<'c>(claims: &'c Claims<'_>) -> Option<&'c str> {
    claims.get("iss").and_then(Value::as_str)
}

/// A token's validity window: `exp` and, when present, `nbf` (NumericDates: seconds,
/// possibly fractional). Kept with a verified token so that every later use is checked
/// against the clock again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Validity {
    exp: f64,
    nbf: Option<f64>,
}

impl Validity {
    /// `exp` must be after `now - leeway`; `nbf`, when present, before `now + leeway`.
    pub(super) fn check(&self, now: u64, leeway: u64) -> Result<(), TokenError> {
        let (now, leeway) = (now as f64, leeway as f64);
        if now >= self.exp + leeway {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = self.nbf
            && now + leeway < nbf
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// `exp` is required and must be after `now - leeway`; `nbf`, when present, must be before
/// `now + leeway`. Returns the window for later checks of the same token.
pub(super) fn check_times(
    claims: &Claims<'_>,
    now: u64,
    leeway: u64,
) -> Result<Validity, TokenError> {
    let number = |name: &'static str, malformed: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or(TokenError::Malformed(malformed)),
    };
    let exp = number("exp", "token `exp` is not a number")?.ok_or(TokenError::MissingExpiry)?;
    // `exp` is judged before `nbf` is read: an expired token is reported as expired.
    Validity { exp, nbf: None }.check(now, leeway)?;
    let validity = Validity {
        exp,
        nbf: number("nbf", "token `nbf` is not a number")?,
    };
    validity.check(now, leeway)?;
    Ok(validity)
}

/// `aud` (a string or an array of strings) must name one of `accepted`.
pub(super) fn check_audience(claims: &Claims<'_>, accepted: &[String]) -> Result<(), TokenError> {
    let matches = |aud: &str| accepted.iter().any(|a| a == aud);
    match claims.get("aud") {
        None => Err(TokenError::MissingAudience),
        Some(Value::String(aud)) if matches(aud) => Ok(()),
        Some(Value::Array(auds)) if auds.iter().filter_map(Value::as_str).any(matches) => Ok(()),
        Some(Value::String(_) | Value::Array(_)) => Err(TokenError::WrongAudience),
        Some(_) => Err(TokenError::Malformed(
            "token `aud` is not a string or an array",
        )),
    }
}

/// Which claim carries the scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ScopeClaim {
    /// `scope`, else `scp`.
    Standard,
    /// This claim only.
    Named(String),
}

/// The scopes granted by the token. A string is split on whitespace (`scope`, Azure's
/// `scp`); an array contributes its string members (Okta's `scp`).
pub(super) fn scopes(claims: &Claims<'_>, rule: &ScopeClaim) -> Vec<String> {
    let value = match rule {
        ScopeClaim::Standard => claims.get("scope").or_else(|| claims.get("scp")),
        ScopeClaim::Named(name) => claims.get(name),
    };
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The subject: a non-empty string claim (numbers are accepted and printed).
pub(super) fn subject(claims: &Claims<'_>, claim: &str) -> Result<String, TokenError> {
    match claims.get(claim) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(TokenError::MissingSubject),
    }
}

/// A claim's value as an identity claim: strings as they are, anything else as JSON.
pub(super) fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims<'static> {
        Claims::from_json(value)
    }

    #[test]
    fn non_jwt_credentials_do_not_split() {
        for token in [
            "opaque-api-key",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b+.c",
            "a.b.c=",
            "",
        ] {
            assert!(split(token).is_none(), "{token}");
        }
    }

    #[test]
    fn jwt_shape_splits_and_keeps_empty_signature() {
        let parts = split("aGVhZA.Ym9keQ.c2ln").expect("splits");
        assert_eq!(
            (
                parts.header,
                parts.payload,
                parts.signature,
                parts.signing_input
            ),
            ("aGVhZA", "Ym9keQ", "c2ln", "aGVhZA.Ym9keQ")
        );
        assert_eq!(split("aGVhZA.Ym9keQ.").expect("splits").signature, "");
    }

    #[test]
    fn exp_is_required_and_leeway_applies() {
        let now = 1_000_000;
        assert_eq!(
            check_times(&claims(json!({})), now, 30),
            Err(TokenError::MissingExpiry)
        );
        let c = claims(json!({ "exp": now - 10 }));
        assert_eq!(check_times(&c, now, 30).map(drop), Ok(()));
        assert_eq!(check_times(&c, now, 0), Err(TokenError::Expired));
        let c = claims(json!({ "exp": now - 30 }));
        assert_eq!(check_times(&c, now, 30), Err(TokenError::Expired));
        let c = claims(json!({ "exp": "tomorrow" }));
        assert!(matches!(
            check_times(&c, now, 30),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn nbf_in_the_future_beyond_leeway_is_refused() {
        let now = 1_000_000;
        let c = claims(json!({ "exp": now + 600, "nbf": now + 20 }));
        assert_eq!(check_times(&c, now, 30).map(drop), Ok(()));
        let c = claims(json!({ "exp": now + 600, "nbf": now + 31 }));
        assert_eq!(check_times(&c, now, 30), Err(TokenError::NotYetValid));
        let c = claims(json!({ "exp": now as f64 + 600.5, "nbf": now as f64 - 0.5 }));
        assert_eq!(check_times(&c, now, 0).map(drop), Ok(()));
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let accepted = vec!["https://mcp.example.com/mcp".to_owned()];
        let ok = ["https://mcp.example.com/mcp"];
        assert_eq!(
            check_audience(&claims(json!({ "aud": ok[0] })), &accepted),
            Ok(())
        );
        let c = claims(json!({ "aud": ["other", ok[0]] }));
        assert_eq!(check_audience(&c, &accepted), Ok(()));
        let c = claims(json!({ "aud": ["other"] }));
        assert_eq!(
            check_audience(&c, &accepted),
            Err(TokenError::WrongAudience)
        );
        let c = claims(json!({}));
        assert_eq!(
            check_audience(&c, &accepted),
            Err(TokenError::MissingAudience)
        );
    }

    #[test]
    fn scope_string_splits_and_scp_array_is_read() {
        let c = claims(json!({ "scope": "mcp:read  mcp:write" }));
        assert_eq!(scopes(&c, &ScopeClaim::Standard), ["mcp:read", "mcp:write"]);
        let c = claims(json!({ "scp": ["a", "b", 3] }));
        assert_eq!(scopes(&c, &ScopeClaim::Standard), ["a", "b"]);
        let c = claims(json!({ "scp": "x y" }));
        assert_eq!(scopes(&c, &ScopeClaim::Standard), ["x", "y"]);
        let c = claims(json!({ "scope": "a", "roles": ["admin"] }));
        assert_eq!(scopes(&c, &ScopeClaim::Named("roles".into())), ["admin"]);
        assert!(scopes(&claims(json!({})), &ScopeClaim::Standard).is_empty());
    }

    #[test]
    fn subject_must_be_a_non_empty_string_or_number() {
        assert_eq!(
            subject(&claims(json!({ "sub": "u1" })), "sub"),
            Ok("u1".into())
        );
        assert_eq!(
            subject(&claims(json!({ "uid": 42 })), "uid"),
            Ok("42".into())
        );
        assert!(subject(&claims(json!({ "sub": "" })), "sub").is_err());
        assert!(subject(&claims(json!({ "sub": ["a"] })), "sub").is_err());
    }
}

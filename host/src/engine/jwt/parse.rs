//! Strict, allocation-light parsing of a JWS header and claims set.
//!
//! The header is read into a borrowed struct; the claims set in one pass that keeps only the
//! claims the validator acts on and skips the rest without building them. Any claim that
//! is kept must appear once: `serde_json` keeps the last of two equal names, another parser
//! may keep the first, and that difference is how a second `sub` slips past a check. Errors
//! are fixed sentences; nothing the token says is echoed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::token::TokenError;

const DUPLICATE: TokenError = TokenError::Malformed("token has a duplicate header member or claim");
const BAD_HEADER: TokenError = TokenError::Malformed("token header is not a base64url JSON object");
const BAD_PAYLOAD: TokenError =
    TokenError::Malformed("token payload is not a base64url JSON object");

/// The header's `alg`, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    /// `none` in any casing: an unsigned token.
    None,
    /// An algorithm `jsonwebtoken` implements.
    Known(Algorithm),
    /// Anything else.
    Unknown,
}

/// The header members the validator acts on. `jku`, `x5u`, `x5c` and `jwk` are ignored on
/// purpose: keys come only from the configured source, never from the token.
#[derive(Debug)]
pub(super) struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<Text<'a>>,
    #[serde(borrow, default)]
    kid: Option<Text<'a>>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// Parses the header segment: an object with a string `alg`, a string `kid` if any, and no
/// `crit` (no JWS extension is understood, so none may be required).
pub(super) fn parse_header(segment: &str) -> Result<Header, TokenError> {
    let bytes = decode_object(segment, BAD_HEADER)?;
    let raw: RawHeader<'_> =
        serde_json::from_slice(&bytes).map_err(|e| classify(&e, BAD_HEADER))?;
    if raw.crit {
        return Err(TokenError::CriticalHeader);
    }
    let alg = raw
        .alg
        .ok_or(TokenError::Malformed("token header has no `alg`"))?;
    let alg = if alg.as_str().eq_ignore_ascii_case("none") {
        Alg::None
    } else {
        alg.as_str().parse().map_or(Alg::Unknown, Alg::Known)
    };
    Ok(Header {
        alg,
        kid: raw.kid.map(|kid| kid.as_str().to_owned()),
    })
}

/// The claims the validator asked for, each present at most once.
#[derive(Debug, Default)]
pub(super) struct Claims<'w> {
    entries: Vec<(&'w str, Value)>,
}

impl Claims<'_> {
    /// The value of claim `name`, if the token has it and it was asked for.
    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
impl Claims<'static> {
    /// Every member of a JSON object as a claim (test helper).
    pub(super) fn from_json(value: Value) -> Self {
        let Value::Object(map) = value else {
            panic!("claims must be an object");
        };
        let entries = map
            .into_iter()
            .map(|(k, v)| (&*Box::leak(k.into_boxed_str()), v))
            .collect();
        Self { entries }
    }
}

/// Parses the payload segment, keeping the claims named in `wanted`.
pub(super) fn parse_claims<'w>(
    segment: &str,
    wanted: &'w [String],
) -> Result<Claims<'w>, TokenError> {
    let bytes = decode_object(segment, BAD_PAYLOAD)?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let claims = ClaimsSeed { wanted }
        .deserialize(&mut deserializer)
        .and_then(|claims| deserializer.end().map(|()| claims))
        .map_err(|e| classify(&e, BAD_PAYLOAD))?;
    Ok(claims)
}

/// Base64url-decodes a segment that must hold a JSON object (a derived struct would also
/// accept an array).
fn decode_object(segment: &str, malformed: TokenError) -> Result<Vec<u8>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| malformed)?;
    match bytes.trim_ascii_start().first() {
        Some(b'{') => Ok(bytes),
        _ => Err(malformed),
    }
}

fn classify(error: &serde_json::Error, otherwise: TokenError) -> TokenError {
    if error.to_string().starts_with("duplicate") {
        DUPLICATE
    } else {
        otherwise
    }
}

struct ClaimsSeed<'w> {
    wanted: &'w [String],
}

impl<'de, 'w> DeserializeSeed<'de> for ClaimsSeed<'w> {
    type Value = Claims<'w>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Claims<'w>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 'w> Visitor<'de> for ClaimsSeed<'w> {
    type Value = Claims<'w>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Claims<'w>, A::Error> {
        let mut claims = Claims::default();
        while let Some(name) = access.next_key::<Text<'de>>()? {
            let Some(wanted) = self.wanted.iter().find(|w| **w == name.as_str()) else {
                access.next_value::<IgnoredAny>()?;
                continue;
            };
            if claims.get(wanted).is_some() {
                return Err(de::Error::custom("duplicate claim"));
            }
            claims
                .entries
                .push((wanted.as_str(), access.next_value::<Value>()?));
        }
        Ok(claims)
    }
}

/// A JSON string, borrowed from the input unless it has escapes.
enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Owned(s) => s,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text::Owned(v.to_owned()))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `true` when the member is there, whatever its value (`"crit": null` counts).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(value: &str) -> String {
        URL_SAFE_NO_PAD.encode(value)
    }

    fn wanted() -> Vec<String> {
        ["iss", "sub", "exp"].map(String::from).to_vec()
    }

    #[test]
    fn crit_header_is_refused_whatever_its_value() {
        for h in [
            r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"RS256","crit":null}"#,
        ] {
            assert_eq!(
                parse_header(&b64(h)).expect_err("crit"),
                TokenError::CriticalHeader
            );
        }
    }

    #[test]
    fn header_alg_is_classified() {
        let alg = |h: &str| parse_header(&b64(h)).map(|h| h.alg);
        assert_eq!(alg(r#"{"alg":"ES256"}"#), Ok(Alg::Known(Algorithm::ES256)));
        assert_eq!(alg(r#"{"alg":"nOnE"}"#), Ok(Alg::None));
        assert_eq!(alg(r#"{"alg":"none "}"#), Ok(Alg::Unknown));
        assert_eq!(alg(r#"{"alg":"rs256"}"#), Ok(Alg::Unknown));
        assert_eq!(
            alg(r#"{"alg":"\u0045S256"}"#),
            Ok(Alg::Known(Algorithm::ES256))
        );
    }

    #[test]
    fn header_needs_string_alg_and_kid_in_an_object() {
        for h in [
            r#"{"kid":"a"}"#,
            r#"{"alg":"RS256","kid":7}"#,
            r#"{"alg":7}"#,
            r#"["RS256"]"#,
            "null",
        ] {
            assert!(parse_header(&b64(h)).is_err(), "{h}");
        }
        assert!(parse_header("!!").is_err());
        let h = parse_header(&b64(r#"{"alg":"ES256","kid":"k1","jku":"https://evil"}"#))
            .expect("parses");
        assert_eq!(h.kid.as_deref(), Some("k1"));
    }

    #[test]
    fn duplicate_header_members_and_wanted_claims_are_refused() {
        let h = b64(r#"{"alg":"none","alg":"RS256"}"#);
        assert_eq!(parse_header(&h).expect_err("duplicate"), DUPLICATE);
        let w = wanted();
        let p = b64(r#"{"sub":"a","sub":"admin"}"#);
        assert_eq!(parse_claims(&p, &w).expect_err("duplicate"), DUPLICATE);
        let p = b64(r#"{"sub":"a","s\u0075b":"admin"}"#);
        assert_eq!(
            parse_claims(&p, &w).expect_err("escaped duplicate"),
            DUPLICATE
        );
    }

    #[test]
    fn only_wanted_claims_are_kept() {
        let w = wanted();
        let p = b64(r#"{"sub":"a","groups":[1,{"x":2}],"exp":5,"n":null}"#);
        let c = parse_claims(&p, &w).expect("parses");
        assert_eq!(c.get("sub"), Some(&Value::from("a")));
        assert_eq!(c.get("exp"), Some(&Value::from(5)));
        assert_eq!((c.get("groups"), c.get("iss")), (None, None));
    }

    #[test]
    fn padded_non_json_or_non_object_payload_is_malformed() {
        let w = wanted();
        for p in [
            "e30=".to_owned(),
            b64("not json"),
            b64("[1]"),
            b64("{} x"),
            b64("{\"sub\":"),
        ] {
            assert_eq!(
                parse_claims(&p, &w).expect_err("malformed"),
                BAD_PAYLOAD,
                "{p}"
            );
        }
        assert!(parse_claims(&b64(" {}"), &w).is_ok());
    }
}

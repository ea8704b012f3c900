//! `partner-token`: authenticates `Authorization: partner-token <id>:<secret>` against the
//! hashed credentials in the granted secret `credentials`. See README.md for the contract.

use std::collections::HashMap;

use portcullis_sdk::{
    Authenticator, Denial, Host, Identity, LogLevel, Request, Verdict, hex_decode,
};
use serde::Deserialize;

/// The secret that holds the credentials, one client per line.
pub const CREDENTIALS_SECRET: &str = "credentials";

/// The operator's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `Authorization` scheme, matched case-insensitively.
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

fn default_scheme() -> String {
    "partner-token".into()
}

/// A configured provider: the clients, by id.
#[derive(Debug)]
pub struct PartnerToken {
    scheme: String,
    clients: HashMap<String, Client>,
}

#[derive(Debug)]
struct Client {
    secret_sha256: Vec<u8>,
    scopes: Vec<String>,
}

impl Authenticator for PartnerToken {
    type Config = Config;

    fn new(config: Config, host: &dyn Host) -> Result<Self, String> {
        if config.scheme.is_empty() || config.scheme.contains(char::is_whitespace) {
            return Err(format!(
                "invalid scheme `{}`: must be one word",
                config.scheme
            ));
        }
        let credentials = host.secret(CREDENTIALS_SECRET).ok_or_else(|| {
            format!("the secret `{CREDENTIALS_SECRET}` is not granted to this provider")
        })?;
        Ok(Self {
            scheme: config.scheme,
            clients: parse_credentials(&credentials)?,
        })
    }

    fn authenticate(&self, req: &dyn Request, host: &dyn Host) -> Verdict {
        let Some(credential) = req
            .header_all("authorization")
            .into_iter()
            .find_map(|value| self.credential_of(&value))
        else {
            return Verdict::Abstain;
        };
        self.check(&credential, host).into()
    }
}

impl PartnerToken {
    /// The credential after our scheme, if the header value uses it.
    fn credential_of(&self, header_value: &str) -> Option<String> {
        let value = header_value.trim();
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        scheme
            .eq_ignore_ascii_case(&self.scheme)
            .then(|| credential.trim().to_owned())
    }

    fn check(&self, credential: &str, host: &dyn Host) -> Result<Identity, Denial> {
        let (id, secret) = credential
            .split_once(':')
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or_else(|| {
                Denial::invalid_token("malformed partner token: expected <id>:<secret>")
            })?;
        // Hash even for an unknown id, so that timing does not tell which ids exist.
        let presented = host.sha256(secret.as_bytes());
        let client = self.clients.get(id);
        let expected = client.map_or(&[0u8; 32][..], |c| &c.secret_sha256);
        match client {
            Some(client) if host.constant_time_eq(&presented, expected) => Ok(Identity::new(id)
                .with_scopes(client.scopes.iter().cloned())
                .with_claim("client_id", id)),
            found => {
                let why = if found.is_some() {
                    "wrong secret"
                } else {
                    "unknown client id"
                };
                host.log(LogLevel::Debug, &format!("partner `{id}` refused: {why}"));
                // One reason for both, so the answer does not tell which ids exist either.
                Err(Denial::invalid_token("unknown partner or wrong secret"))
            }
        }
    }
}

/// Parses the `credentials` secret: `<id>:sha256:<64 hex digits>:<scope>,<scope>…` per line;
/// blank lines and `#` comments are skipped. Errors name the line, never its content.
fn parse_credentials(text: &str) -> Result<HashMap<String, Client>, String> {
    let mut clients = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line_no = index + 1;
        let bad = |why: &str| format!("secret `{CREDENTIALS_SECRET}`, line {line_no}: {why}");
        let mut fields = line.splitn(4, ':');
        let (id, algorithm, hash, scopes) = (
            fields.next().unwrap_or_default(),
            fields.next(),
            fields.next(),
            fields.next().unwrap_or_default(),
        );
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(bad("the client id is empty or contains whitespace"));
        }
        if algorithm != Some("sha256") {
            return Err(bad("expected `<id>:sha256:<hex>:<scopes>`"));
        }
        let secret_sha256 = hash
            .and_then(hex_decode)
            .filter(|hash| hash.len() == 32)
            .ok_or_else(|| bad("the hash is not 64 hex digits"))?;
        let scopes = scopes
            .split(',')
            .map(str::trim)
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect();
        let client = Client {
            secret_sha256,
            scopes,
        };
        if clients.insert(id.to_owned(), client).is_some() {
            return Err(bad("the client id is listed twice"));
        }
    }
    if clients.is_empty() {
        return Err(format!("secret `{CREDENTIALS_SECRET}` lists no clients"));
    }
    Ok(clients)
}

portcullis_sdk::export_authenticator!(PartnerToken);

#[cfg(test)]
mod tests {
    use portcullis_sdk::configure_authenticator;
    use portcullis_sdk::testing::{FakeHost, FakeRequest};

    use super::*;

    /// sha256("s3cret") and sha256("o:ther").
    const CREDENTIALS: &str = "\
# partners
acme:sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0:mcp:read,mcp:write

globex:sha256:873A8C46ADFE0675C6882947888021C6CD3049D71E2715D70634D599C4854E62:
";

    fn host() -> FakeHost {
        FakeHost::new().with_secret(CREDENTIALS_SECRET, CREDENTIALS)
    }

    fn provider(config: &str, host: &FakeHost) -> PartnerToken {
        configure_authenticator(config, host).unwrap()
    }

    fn authenticate(req: FakeRequest) -> Verdict {
        let host = host();
        provider("{}", &host).authenticate(&req, &host)
    }

    #[test]
    fn valid_token_is_allowed_with_scopes_and_client_id() {
        let verdict = authenticate(
            FakeRequest::post("/mcp").header("Authorization", "partner-token acme:s3cret"),
        );
        let expected = Identity::new("acme")
            .with_scopes(["mcp:read", "mcp:write"])
            .with_claim("client_id", "acme");
        assert_eq!(verdict, Verdict::Allow(expected));
    }

    #[test]
    fn secret_may_contain_colons_and_hash_may_be_upper_case() {
        let verdict =
            authenticate(FakeRequest::new().header("authorization", "partner-token globex:o:ther"));
        assert_eq!(verdict.identity().map(|id| id.scopes.len()), Some(0));
    }

    #[test]
    fn scheme_is_case_insensitive_and_configurable() {
        let verdict =
            authenticate(FakeRequest::new().header("authorization", "Partner-Token acme:s3cret"));
        assert!(verdict.identity().is_some(), "{verdict:?}");

        let host = host();
        let custom = provider(r#"{"scheme": "Acme"}"#, &host);
        let req = FakeRequest::new().header("authorization", "acme acme:s3cret");
        assert!(custom.authenticate(&req, &host).identity().is_some());
        let req = FakeRequest::new().header("authorization", "partner-token acme:s3cret");
        assert_eq!(custom.authenticate(&req, &host), Verdict::Abstain);
    }

    #[test]
    fn missing_header_or_other_scheme_abstains() {
        assert_eq!(authenticate(FakeRequest::new()), Verdict::Abstain);
        let bearer = FakeRequest::new().header("authorization", "Bearer abc");
        assert_eq!(authenticate(bearer), Verdict::Abstain);
    }

    #[test]
    fn our_scheme_in_a_later_authorization_header_is_used() {
        let req = FakeRequest::new()
            .header("authorization", "Bearer abc")
            .header("authorization", "partner-token acme:s3cret");
        assert!(authenticate(req).identity().is_some());
    }

    #[test]
    fn wrong_secret_and_unknown_id_are_denied_alike() {
        let wrong =
            authenticate(FakeRequest::new().header("authorization", "partner-token acme:nope"));
        let unknown =
            authenticate(FakeRequest::new().header("authorization", "partner-token who:s3cret"));
        let expected = Verdict::Deny(Denial::invalid_token("unknown partner or wrong secret"));
        assert_eq!(wrong, expected);
        assert_eq!(unknown, expected);
    }

    #[test]
    fn malformed_token_is_denied() {
        for value in [
            "partner-token",
            "partner-token acme",
            "partner-token :x",
            "partner-token acme:",
        ] {
            let verdict = authenticate(FakeRequest::new().header("authorization", value));
            assert_eq!(verdict.denial().map(|d| d.status), Some(401), "{value}");
            assert_eq!(
                verdict.denial().map(|d| d.code.as_str()),
                Some("invalid_token")
            );
        }
    }

    #[test]
    fn refusal_is_logged_without_the_secret() {
        let host = host();
        let req = FakeRequest::new().header("authorization", "partner-token acme:guess");
        provider("{}", &host).authenticate(&req, &host);
        assert!(host.logged("partner `acme` refused: wrong secret"));
        assert!(!host.logs().iter().any(|(_, line)| line.contains("guess")));
    }

    #[test]
    fn ungranted_secret_is_a_config_error() {
        let err = configure_authenticator::<PartnerToken>("{}", &FakeHost::new()).unwrap_err();
        assert_eq!(
            err,
            "the secret `credentials` is not granted to this provider"
        );
    }

    #[test]
    fn malformed_credentials_name_the_line_but_not_the_secret() {
        for (text, expected) in [
            ("a:sha256:abcd:x", "line 1: the hash is not 64 hex digits"),
            (
                "# c\n\nb:md5:00:x",
                "line 3: expected `<id>:sha256:<hex>:<scopes>`",
            ),
            (
                ":sha256:00",
                "line 1: the client id is empty or contains whitespace",
            ),
        ] {
            let host = FakeHost::new().with_secret(CREDENTIALS_SECRET, text);
            let err = configure_authenticator::<PartnerToken>("{}", &host).unwrap_err();
            assert!(err.ends_with(expected), "expected: {expected}\ngot: {err}");
            assert!(!err.contains("abcd"), "the error leaks the line: {err}");
        }
    }

    #[test]
    fn duplicate_ids_and_empty_lists_are_config_errors() {
        let line = CREDENTIALS.lines().nth(1).unwrap();
        let host = FakeHost::new().with_secret(CREDENTIALS_SECRET, &format!("{line}\n{line}"));
        let err = configure_authenticator::<PartnerToken>("{}", &host).unwrap_err();
        assert!(
            err.ends_with("line 2: the client id is listed twice"),
            "got: {err}"
        );
        let host = FakeHost::new().with_secret(CREDENTIALS_SECRET, "# nobody\n");
        assert!(configure_authenticator::<PartnerToken>("{}", &host).is_err());
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err =
            configure_authenticator::<PartnerToken>(r#"{"schema": "x"}"#, &host()).unwrap_err();
        assert!(err.contains("unknown field `schema`"), "got: {err}");
    }
}

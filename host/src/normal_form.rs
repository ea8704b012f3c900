//! Normal forms for the strings that rules match and upstreams act on: request paths and MCP
//! resource URIs.
//!
//! The gateway's rules match these strings byte for byte; an upstream may decode, case-fold
//! or resolve them first. Whenever two readings could differ (`/a/../b`, `%2e%2e`, `%252e`,
//! `FILE:///x`, `file://localhost/x`), the string is refused rather than normalised: a
//! normalised copy would be judged while the original bytes run (DESIGN.md §13). What is
//! left — one spelling per resource — is what both sides read alike.

/// Why `path` (a URL path, or the path part of a hierarchical URI) is not in normal form, or
/// `None` when it is.
///
/// Refused: not starting with `/`; an empty (`//`), `.` or `..` segment; a backslash; a `;`
/// path parameter; a `#` fragment; a percent-encoded `/`, `.`, `\` or NUL; a percent-encoded
/// unreserved character (RFC 3986 §6.2.2.2); and an encoded `%` followed by two hex digits
/// (`%252e`), which an upstream that decodes twice reads as `.`.
pub(crate) fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("it must start with `/`");
    }
    if path.contains('\\') {
        return Some("backslash");
    }
    // Tomcat, Jetty and Spring drop `;…` from each segment before routing, so `/admin;x`
    // is their `/admin` but not under this gateway's `/admin` rules, and `/public/..;/admin`
    // climbs out of a public route. Matrix parameters are rare enough to refuse outright.
    if path.contains(';') {
        return Some("`;` path parameter");
    }
    // hyper drops a fragment from the request line; one can only arrive in a forwarded URI
    // (forward-auth) or a resource URI, where the reader would act without it.
    if path.contains('#') {
        return Some("`#` fragment");
    }
    if let Some(problem) = escape_problem(path) {
        return Some(problem);
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Some("`.` or `..` segment"),
            // A trailing `/` is an empty last segment and is fine; `//` anywhere else is not.
            "" if segments.peek().is_some() => return Some("empty segment `//`"),
            _ => {}
        }
    }
    None
}

/// The percent-escape checks of [`path_problem`], byte-wise: this runs on every request.
fn escape_problem(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    for (i, w) in bytes.windows(3).enumerate() {
        if w[0] != b'%' {
            continue;
        }
        let Some(decoded) = hex_pair(w[1], w[2]) else {
            continue;
        };
        if matches!(decoded, b'/' | b'.' | b'\\' | 0) {
            return Some("percent-encoded `/`, `.`, `\\` or NUL");
        }
        // RFC 3986 §6.2.2.2: unreserved characters are never percent-encoded in normal form.
        // An upstream that decodes `/%61dmin` to `/admin` would otherwise dodge a rule.
        if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'_' | b'~') {
            return Some("percent-encoded letter, digit, `-`, `_` or `~`");
        }
        // `%25` is an encoded `%`; followed by two hex digits it spells an escape that a
        // second decoding pass (some frameworks, some proxies) turns into a character.
        if decoded == b'%'
            && let (Some(a), Some(b)) = (bytes.get(i + 3), bytes.get(i + 4))
            && hex_pair(*a, *b).is_some()
        {
            return Some("double percent-encoding (`%25` followed by an escape)");
        }
    }
    None
}

fn hex_pair(a: u8, b: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(a)? * 16 + digit(b)?) as u8)
}

/// Why an MCP resource URI is not in normal form, or `None` when it is.
///
/// A resource rule (`resource = "file:///secret/*"`) is a glob over the URI as sent, while
/// the server resolves it: `FILE:///secret/x`, `file:///public/../secret/x`,
/// `file:///%73ecret/x` and `file://localhost/secret/x` all name `/secret/x` to a file
/// server. So: the scheme and the authority must be lower-case, a `file:` URI has an empty
/// authority, the path of a hierarchical URI must pass [`path_problem`], and no part may hold
/// control characters, whitespace or a backslash, and the URI must be its own WHATWG
/// serialisation. Opaque URIs (`urn:…`, `app:thing`) are checked for scheme, escapes and
/// characters only.
pub(crate) fn resource_uri_problem(uri: &str) -> Option<&'static str> {
    if uri
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Some("control characters, whitespace or a backslash");
    }
    // The TypeScript SDK (`new URL`) and the Python SDK (pydantic's `AnyUrl`, on the WHATWG
    // `url` crate) look resources up by the WHATWG serialisation, which turns `file:/x` and
    // `file:x` into `file:///x`, drops `:443` from `https`, reads `0x7f.1` as `127.0.0.1`
    // and maps full-width letters: only the spelling that is already its own serialisation
    // names one resource for the rule and the server alike.
    match url::Url::parse(uri) {
        // User info names no part of a resource to a rule; some servers drop it.
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            return Some("user info (`user@`) in the authority");
        }
        Ok(parsed) if parsed.as_str() == uri => {}
        Ok(_) => return Some("it is not in its WHATWG serialisation (how SDKs read it)"),
        Err(_) => return Some("it is not a URL"),
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("no scheme");
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if !scheme_ok {
        return Some("the scheme must be lower-case letters, digits, `+`, `-` or `.`");
    }
    let without_fragment = match rest.split_once('#') {
        Some(_) => return Some("`#` fragment"),
        None => rest,
    };
    let before_query = without_fragment
        .split_once('?')
        .map_or(without_fragment, |(p, _)| p);
    let Some(hierarchical) = before_query.strip_prefix("//") else {
        return escape_problem(before_query);
    };
    let (authority, path) = match hierarchical.find('/') {
        Some(i) => hierarchical.split_at(i),
        None => (hierarchical, ""),
    };
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("the authority must be lower-case");
    }
    if let Some(problem) = escape_problem(authority) {
        return Some(problem);
    }
    if scheme == "file" && !authority.is_empty() {
        return Some("a `file:` URI must have an empty authority (`file:///path`)");
    }
    if path.is_empty() {
        return None;
    }
    path_problem(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_normal_paths_are_refused() {
        for path in [
            "/mcp/../admin",
            "/mcp/./x",
            "/mcp//x",
            "//mcp",
            "/mcp%2fadmin",
            "/%61dmin",
            "/mcp/%7Euser",
            "/mcp/%2E%2E/x",
            "/mcp\\x",
            "mcp",
            "/mcp/..",
            "/mcp;x",
            "/public/..;/admin",
            "/mcp#x",
            "/public/%252e%252e/admin",
            "/public/%252E%252e/admin",
            "/a%252fb",
        ] {
            assert!(path_problem(path).is_some(), "{path} should be refused");
        }
        for path in [
            "/",
            "/mcp",
            "/mcp/",
            "/mcp/a%20b",
            "/a.b/..c",
            "/100%25",
            "/a%25zz",
        ] {
            assert_eq!(path_problem(path), None, "{path} should pass");
        }
    }

    #[test]
    fn resource_uris_have_one_spelling() {
        for uri in [
            "FILE:///secret/x",
            "File:///secret/x",
            "file:///public/../secret/x",
            "file:///public/./x",
            "file:///secret%2Fx",
            "file:///%73ecret/x",
            "file:///secret/%252e",
            "file://localhost/secret/x",
            "file://LOCALHOST/secret/x",
            "https://Example.com/x",
            "file:///secret/x#frag",
            "file:////secret/x",
            "file:///secret\\x",
            "file:///secret/x\n",
            "urn:%61",
            "no-scheme",
            ":empty-scheme",
            "file:/secret/x",
            "file:secret/x",
            "https://example.com:443/secret/report",
            "https:example.com/secret/report",
            "https:///example.com/secret",
            "https://\u{ff45}xample.com/secret",
            "https://0x7f.1/secret",
            "https://example.com",
            "https://user@example.com/x",
        ] {
            assert!(
                resource_uri_problem(uri).is_some(),
                "{uri} should be refused"
            );
        }
        for uri in [
            "file:///secret/x",
            "file:///public/a%20b.txt",
            "https://example.com/docs/x?page=2",
            "https://example.com/",
            "https://127.0.0.1:8443/x",
            "urn:isbn:0451450523",
            "app:thing",
            "db://main/users/",
        ] {
            assert_eq!(resource_uri_problem(uri), None, "{uri} should pass");
        }
    }
}

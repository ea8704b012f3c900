//! OAuth 2.0 Protected Resource Metadata (RFC 9728), served without authentication and with
//! CORS so browser-based MCP clients can discover where to get tokens.
//!
//! `/.well-known/oauth-protected-resource` describes the public URL itself;
//! `/.well-known/oauth-protected-resource/<route path>` describes one route, whose resource
//! identifier is the public URL followed by the route's path. Both are built once from
//! config — never from the request's `Host`, which a client controls.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE,
};
use http::{HeaderValue, Method, Response, StatusCode};
use serde::Serialize;

use super::body::{Body, empty, full};
use super::rejection::Rejection;
use crate::config::model::Resource;

pub(crate) use crate::config::model::WELL_KNOWN;

/// The metadata document, fields in RFC 9728 order.
#[derive(Debug, Serialize)]
struct Document<'a> {
    resource: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes_supported: &'a [String],
    bearer_methods_supported: [&'static str; 1],
}

/// The serialized document for `resource_url`.
pub(crate) fn document(resource_url: &str, resource: &Resource) -> Bytes {
    let doc = Document {
        resource: resource_url,
        authorization_servers: &resource.authorization_servers,
        scopes_supported: &resource.scopes_supported,
        bearer_methods_supported: ["header"],
    };
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

/// The metadata URL for a route path (`""` for the root).
pub(crate) fn metadata_url(public_url: &str, route_path: &str) -> String {
    format!("{public_url}{WELL_KNOWN}{route_path}")
}

/// Answers a request for a metadata document `doc`.
pub(crate) fn respond(method: &Method, doc: &Bytes) -> Response<Body> {
    let mut response = match *method {
        Method::GET => Response::new(full(doc.clone())),
        Method::HEAD => Response::new(empty()),
        Method::OPTIONS => {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
            h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            r
        }
        _ => {
            let mut r = Rejection::MethodNotAllowed {
                allow: "GET, HEAD, OPTIONS",
            }
            .into_response();
            r.headers_mut()
                .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            return r;
        }
    };
    let h = response.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if *method != Method::OPTIONS {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_fields_follow_rfc_9728_order() {
        let resource = Resource {
            authorization_servers: vec!["https://auth.example.com".into()],
            scopes_supported: vec!["mcp:read".into(), "admin".into()],
        };
        let doc = document("https://mcp.example.com/mcp", &resource);
        assert_eq!(
            std::str::from_utf8(&doc).expect("utf8"),
            r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"],"scopes_supported":["mcp:read","admin"],"bearer_methods_supported":["header"]}"#
        );
    }
}

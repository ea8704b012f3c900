//! TLS and mTLS on the listener: certificates from a throw-away CA (rcgen), a verified
//! client certificate reaching the `mtls` provider, optional versus required client
//! authentication, and HTTP/2 by ALPN.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::gateway_harness::{Harness, RecordingUpstream, TestConfig, start, start_with_upstream};

pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
}

pub(crate) fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis Test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(vec![]).expect("params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "agent-1");
    let client = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.path().join("cert.pem"), server.pem()).expect("write");
    std::fs::write(dir.path().join("key.pem"), server_key.serialize_pem()).expect("write");
    Pki {
        ca_der: ca.der().clone(),
        client_chain: vec![client.der().clone()],
        client_key: PrivateKeyDer::try_from(client_key.serialize_der()).expect("key der"),
        dir,
    }
}

/// `/mcp` through client certificates (`agent-1` has `mcp:read`), then API keys, on a TLS
/// listener asking for client certificates as `client_auth` says.
pub(crate) fn config(pki: &Pki, client_auth: &str) -> TestConfig {
    let dir = pki.dir.path().display();
    TestConfig::new()
        .server(r#"public_url = "https://localhost""#)
        .route("/mcp", &["clients", "keys"])
        .provider("clients", "mtls")
        .with(r#"scopes = { "agent-1" = ["mcp:read"] }"#)
        .api_keys(&["reader"])
        .toml(&format!(
            r#"[server.tls]
cert = "{dir}/cert.pem"
key = "{dir}/key.pem"
client_ca = "{dir}/ca.pem"
client_auth = "{client_auth}"
"#
        ))
}

pub(crate) async fn connect(
    h: &Harness,
    pki: &Pki,
    with_cert: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = if with_cert {
        builder
            .with_client_auth_cert(pki.client_chain.clone(), pki.client_key.clone_key())
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(h.addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    // With TLS 1.3 a refused client certificate surfaces on the first read, not in connect.
    use tokio::io::AsyncWriteExt as _;
    stream.flush().await?;
    Ok(stream)
}

/// GET `path` over an established TLS stream, with HTTP/2 when ALPN chose it.
async fn get(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> Result<(http::Version, u16, http::HeaderMap), hyper::Error> {
    get_with(stream, path, &[]).await
}

/// [`get`] with extra request headers.
pub(crate) async fn get_with(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(http::Version, u16, http::HeaderMap), hyper::Error> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut request = http::Request::builder()
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    };
    let version = response.version();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let _ = response.into_body().collect().await;
    Ok((version, status, headers))
}

#[tokio::test]
async fn verified_client_certificate_authenticates_over_http2() {
    let pki = pki();
    let upstream = RecordingUpstream::start().await;
    let h = start_with_upstream(config(&pki, "optional"), &upstream.url).await;
    let stream = connect(&h, &pki, true).await.expect("mTLS handshake");
    let (version, status, _) = get(stream, "/mcp").await.expect("request");
    assert_eq!(version, http::Version::HTTP_2, "ALPN negotiates h2");
    assert_eq!(status, 200);
    let seen = upstream.seen();
    let headers = &seen
        .last()
        .expect("the request reached the upstream")
        .headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-portcullis-subject"), Some("agent-1"));
    assert_eq!(header("x-portcullis-provider"), Some("clients"));
}

#[tokio::test]
async fn forward_auth_never_takes_the_proxys_certificate_for_the_clients() {
    // The TLS peer of a forward-auth check is the proxy: its certificate says nothing about
    // the client whose request is being judged.
    let pki = pki();
    let h = start(config(&pki, "optional").behind("envoy")).await;
    let stream = connect(&h, &pki, true).await.expect("mTLS handshake");
    let (_, status, headers) = get_with(stream, "/check/mcp", &[("x-forwarded-for", "127.0.0.1")])
        .await
        .expect("request");
    assert_eq!(status, 401, "expected: the certificate is not the client's");
    assert!(headers.get("x-portcullis-subject").is_none());
}

#[tokio::test]
async fn optional_client_auth_lets_certificate_less_clients_reach_the_chain() {
    let pki = pki();
    let h = start(config(&pki, "optional")).await;
    let stream = connect(&h, &pki, false).await.expect("TLS handshake");
    let (_, status, headers) = get(stream, "/mcp").await.expect("request");
    assert_eq!(status, 401, "no certificate and no key");
    assert!(headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn required_client_auth_refuses_certificate_less_clients() {
    let pki = pki();
    let h = start(config(&pki, "required")).await;
    let refused = match connect(&h, &pki, false).await {
        Err(_) => true,
        Ok(stream) => get(stream, "/healthz").await.is_err(),
    };
    assert!(
        refused,
        "a client without a certificate must not get a response"
    );
    let stream = connect(&h, &pki, true).await.expect("mTLS handshake");
    let (_, status, _) = get(stream, "/healthz").await.expect("request");
    assert_eq!(status, 200);
}

//! Health, readiness, metrics, request ids, security headers and TLS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::TestApp;

#[test]
fn health_readiness_and_metrics() {
    let app = TestApp::spawn();
    let health = app.request("GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    let ready = app.request("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.body["status"], "ready");

    let admin = app.admin_token();
    let me = app.get("/api/v1/me", &admin);
    let request_id = me.header("x-request-id").expect("request id header");
    assert_eq!(
        uuid::Uuid::parse_str(request_id).unwrap().to_string(),
        request_id
    );
    assert_eq!(me.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(me.header("cache-control"), Some("no-store"));
    app.get("/api/v1/users/some-id", &admin);

    let metrics = app.request("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text;
    assert!(
        text.contains(
            r#"casesync_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"casesync_http_request_duration_seconds_bucket{method="POST",route="/api/v1/sessions",status="201""#));
    // Route patterns, never raw paths with ids in them.
    assert!(
        text.contains(r#"route="/api/v1/users/{id}",status="404""#),
        "{text}"
    );
    assert!(!text.contains("some-id"));
}

#[test]
fn readiness_fails_when_migrations_are_missing() {
    use diesel::connection::SimpleConnection;
    let app = TestApp::spawn();
    // Forget the newest migration, as a database of an older build would be.
    app.conn()
        .batch_execute(
            "DELETE FROM __diesel_schema_migrations \
             WHERE version = (SELECT MAX(version) FROM __diesel_schema_migrations)",
        )
        .unwrap();
    app.request("GET", "/readyz", None, None)
        .assert_problem(503, "unavailable");
    // Liveness does not depend on the database.
    assert_eq!(app.request("GET", "/healthz", None, None).status, 200);
}

fn https_get(
    addr: std::net::SocketAddr,
    root: rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    out
}

#[test]
fn tls_is_served_when_a_certificate_and_key_are_configured() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let app = TestApp::spawn_with(|s| {
        s.tls = Some(casesync::config::TlsSettings {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })
    });
    let answer = https_get(app.addr, cert.cert.der().clone(), "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
    assert!(answer.contains(r#"{"status":"ok"}"#));

    // Plain HTTP to the TLS port gets no answer.
    let mut plain = TcpStream::connect(app.addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = plain.read_to_string(&mut buf);
    assert!(!buf.contains("200 OK"));
}

//! Health, readiness, metrics, request ids, security headers and TLS.

use crate::common;

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

// --- Data at rest (#14 item 8) ---

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &std::path::Path, bits: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap();
}

#[test]
fn the_data_directory_is_private_and_an_open_one_is_refused() {
    let app = TestApp::spawn();
    app.admin_token();
    let dir = app.data_dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700);
    let mut files = vec!["master.key", "audit.key"];
    if !app.shared.db.is_postgres() {
        files.extend(["casesync.db", "casesync.db-wal", "casesync.db-shm"]);
    }
    for name in &files {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    let settings = app.settings.clone();
    let shared = app.stop();

    chmod(&dir, 0o755);
    let err = casesync::server::prepare(settings.clone())
        .err()
        .expect("a data directory others can read is refused")
        .to_string();
    assert!(
        err.contains(&format!("Fix: chmod 700 {}", dir.display())),
        "{err}"
    );
    chmod(&dir, 0o700);

    let key = dir.join("master.key");
    chmod(&key, 0o644);
    let err = casesync::server::prepare(settings.clone())
        .err()
        .expect("a key file others can read is refused")
        .to_string();
    assert!(
        err.contains(&format!("Fix: chmod 600 {}", key.display())),
        "{err}"
    );
    chmod(&key, 0o600);
    // Fixed as the message says, it starts.
    TestApp::start(shared, settings).token_for("admin", common::ADMIN_PASSWORD);
}

#[test]
fn the_embedded_database_is_encrypted_and_opens_only_with_its_key() {
    use casesync::config::DatabaseTarget;
    use common::phone::{envelope, fixture, phone};
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let mut data = fixture("kz.referral");
    data["child"]["child_name"] = serde_json::json!("Zhansaya Unmistakable");
    let sent = phone(&app, &worker).send(&envelope(&uuid::Uuid::new_v4().to_string(), data));
    assert_eq!(sent.status, 201, "{}", sent.text);
    if app.shared.db.is_postgres() {
        // PostgreSQL's storage is encrypted by its own means
        // (docs/operations.md); the keys in the data directory are sealed.
        let master = std::fs::read(app.data_dir().join("master.key")).unwrap();
        let audit_key = std::fs::read_to_string(app.data_dir().join("audit.key")).unwrap();
        assert!(audit_key.contains("sealed_key"));
        assert!(!audit_key.contains(std::str::from_utf8(&master).unwrap().trim()));
        return;
    }
    let settings = app.settings.clone();
    let shared = app.stop();
    let file = shared.data_dir.path().join("casesync.db");
    // Nothing readable on disk: no SQLite header, no child's name.
    let mut bytes = std::fs::read(&file).unwrap();
    if let Ok(wal) = std::fs::read(shared.data_dir.path().join("casesync.db-wal")) {
        bytes.extend(wal);
    }
    assert_ne!(&bytes[..16], b"SQLite format 3\0");
    assert!(!bytes.windows(11).any(|w| w == b"Unmistakabl"));
    // Plain SQLite cannot read it; neither can another key.
    let plain = casesync::db::open_one(&DatabaseTarget::Sqlite(file.clone()));
    let unreadable = match plain {
        Err(_) => true,
        Ok(mut conn) => {
            use diesel::connection::SimpleConnection;
            conn.batch_execute("SELECT * FROM submissions").is_err()
        }
    };
    assert!(unreadable);
    let master = shared.data_dir.path().join("master.key");
    let kept = std::fs::read(&master).unwrap();
    std::fs::remove_file(&master).unwrap();
    let err = casesync::server::prepare(settings.clone())
        .err()
        .expect("without its master.key the database is not opened")
        .to_string();
    assert!(err.contains("master.key is missing"), "{err}");
    assert!(
        !master.exists(),
        "no new master.key is made beside a database"
    );
    std::fs::write(&master, &kept).unwrap();
    chmod(&master, 0o600);
    TestApp::start(shared, settings).token_for("admin", common::ADMIN_PASSWORD);
}

#[test]
fn a_plaintext_database_from_before_is_encrypted_in_place_at_start() {
    use casesync::config::DatabaseTarget;
    use diesel::connection::SimpleConnection;
    let shared = Arc::new(common::Shared {
        data_dir: common::private_tempdir(),
        db: common::TestDb::new(),
    });
    if shared.db.is_postgres() {
        return; // Nothing embedded to encrypt.
    }
    let file = shared.data_dir.path().join("casesync.db");
    {
        // As an older build left it: plaintext, WAL, with rows.
        let mut conn = casesync::db::open_one(&DatabaseTarget::Sqlite(file.clone())).unwrap();
        casesync::server::prepare_database(&mut conn).unwrap();
        conn.batch_execute("INSERT INTO sites (id, code, name, programme, created_at, updated_at) VALUES ('legacy-site', 'KZ-LEGACY', 'Legacy', 'kz', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
            .unwrap();
    }
    assert!(casesync::db::encryption::is_plaintext(&file).unwrap());
    let settings = common::test_settings(&shared);
    let app = TestApp::start(shared, settings);
    assert!(!casesync::db::encryption::is_plaintext(&file).unwrap());
    let admin = app.admin_token();
    let sites = app.get("/api/v1/sites", &admin);
    assert!(sites.text.contains("KZ-LEGACY"), "{}", sites.text);
    assert!(!app.data_dir().join("casesync.db.encrypting").exists());
}

#[test]
fn rekey_rotates_the_key_encryption_key_and_everything_under_it() {
    use casesync::crypto::kek::Kek;
    use common::phone::{envelope, fixture, phone};
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let first = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
    assert_eq!(phone(&app, &worker).send(&first).status, 201);
    let settings = app.settings.clone();
    let old_kek = Kek::load(&settings).unwrap();
    let old_master = std::fs::read(app.data_dir().join("master.key")).unwrap();
    let old_audit_key = std::fs::read(app.data_dir().join("audit.key")).unwrap();
    let shared = app.stop();
    let dir = shared.data_dir.path();

    let out = common::bin::command(dir, &shared.db)
        .env("CASESYNC_DATA_DIR", dir)
        .arg("rekey")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("private key(s) re-sealed"), "{text}");
    assert_ne!(std::fs::read(dir.join("master.key")).unwrap(), old_master);
    assert_ne!(std::fs::read(dir.join("audit.key")).unwrap(), old_audit_key);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert!(std::fs::read_dir(dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".next")));

    // The old KEK opens nothing any more; the new one opens everything,
    // and the audit chain (its own key unchanged) still verifies.
    let again = TestApp::start(shared.clone(), settings.clone());
    let mut conn = again.conn();
    assert!(!casesync::crypto::keys::all_open_with(&mut conn, &old_kek).unwrap());
    if !shared.db.is_postgres() {
        let old_db = casesync::db::Database::new(
            settings.database_target().unwrap(),
            Some(casesync::db::DatabaseKey::derived_from(&old_kek)),
        );
        let err = casesync::db::open_as_is(&old_db)
            .err()
            .expect("old key refused");
        assert!(err.to_string().contains("does not open"), "{err}");
    }
    let worker = again.token_for("aigerim", common::USER_PASSWORD);
    let second = envelope(&uuid::Uuid::new_v4().to_string(), fixture("kz.referral"));
    assert_eq!(phone(&again, &worker).send(&second).status, 201);
    let key = casesync::server::audit_key(&again.settings).unwrap();
    let verified = casesync::audit::verify(&mut conn, key.as_ref(), None).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);
    drop(conn);
    drop(again.stop());

    // Refused while a server runs on the directory.
    let work = common::private_tempdir();
    let db = common::TestDb::new();
    let served = common::bin::serve(work.path(), &db, &[]);
    let out = common::bin::command(work.path(), &db)
        .arg("rekey")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("a casesync server (or backup) is running"),
        "{text}"
    );
    served.terminate();
    served.wait(std::time::Duration::from_secs(20));
}

//! Test harness: each test gets its own real server on a loopback port and
//! its own database — a SQLite file in a temporary data directory, or, when
//! `CASESYNC_TEST_DATABASE_URL` is set, a fresh PostgreSQL database that is
//! dropped afterwards.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use casesync::config::{DatabaseTarget, Secret, Settings};
use casesync::db::{self, DbConnection};
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};

pub mod bin;
pub mod build;
pub mod gate;
pub mod odk;
pub mod phone;

pub const TEST_DB_ENV: &str = "CASESYNC_TEST_DATABASE_URL";

/// A database of the suite's dialect, private to one test.
pub struct TestDb {
    pub url: Option<String>,
    admin_url: Option<String>,
    name: Option<String>,
}

impl TestDb {
    pub fn new() -> TestDb {
        match std::env::var(TEST_DB_ENV).ok().filter(|u| !u.is_empty()) {
            None => TestDb {
                url: None,
                admin_url: None,
                name: None,
            },
            Some(admin_url) => {
                let name = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = db::open_one(&DatabaseTarget::Postgres(Secret::new(&admin_url)))
                    .expect("connect to the PostgreSQL test server");
                conn.batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create a test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .expect("database URL with a path");
                TestDb {
                    url: Some(format!("{base}/{name}")),
                    admin_url: Some(admin_url),
                    name: Some(name),
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(admin), Some(name)) = (&self.admin_url, &self.name) {
            if let Ok(mut conn) = db::open_one(&DatabaseTarget::Postgres(Secret::new(admin))) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// What a test shares between the servers it starts: data directory and
/// database. Dropped (directory removed, database dropped) with the last one.
pub struct Shared {
    pub data_dir: tempfile::TempDir,
    pub db: TestDb,
}

pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub settings: Settings,
    pub shared: Arc<Shared>,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
    agent: ureq::Agent,
    /// Keeps a timed test from running beside this server.
    _running: gate::Shared,
}

/// A temporary directory only its owner may use, as a server's data
/// directory must be (the server refuses one open to others).
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("temporary data directory")
}

/// A direct connection to the database of the server whose data
/// directory is `data_dir`: the embedded one is keyed from its master.key.
pub fn open_db(data_dir: &Path, db: &TestDb) -> DbConnection {
    let settings = Settings {
        data_dir: data_dir.to_path_buf(),
        database_url: db.url.as_ref().map(Secret::new),
        ..Settings::default()
    };
    let storage = casesync::server::open_storage(&settings).expect("data directory and keys");
    db::open_one(&storage.database).expect("database connection")
}

/// Runs `casesync seed` (README, "A database of realistic cases") into
/// the data directory `root/data` and the suite's database `db` (its URL
/// in `root/casesync.toml`): `cases` more cases of both programmes, about
/// `forms_per_case` forms each, one field worker per site.
pub fn seed(root: &Path, db: &TestDb, cases: usize, forms_per_case: usize) {
    let config = root.join("casesync.toml");
    let url = db
        .url
        .as_ref()
        .map(|u| format!("database_url = {u:?}\n"))
        .unwrap_or_default();
    std::fs::write(&config, url).unwrap();
    let data = root.join("data");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/forms");
    let (cases, forms_per_case) = (cases.to_string(), forms_per_case.to_string());
    let args = [
        "casesync",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "seed",
        "--cases",
        &cases,
        "--forms-per-case",
        &forms_per_case,
        "--workers-per-site",
        "1",
        "--fixtures",
        fixtures,
    ];
    let cli = <casesync::cli::Cli as clap::Parser>::try_parse_from(args).unwrap();
    casesync::cli::run(cli).expect("seed runs");
}

/// Settings for tests: loopback, small pools, fast throttling.
pub fn test_settings(shared: &Shared) -> Settings {
    let mut s = Settings {
        bind: "127.0.0.1:0".into(),
        data_dir: shared.data_dir.path().to_path_buf(),
        database_url: shared.db.url.as_ref().map(Secret::new),
        db_pool_size: 4,
        workers: 2,
        shutdown_timeout_secs: 2,
        // Where ODK Collect's settings QR codes point (tests/it/collect_qr.rs).
        public_url: Some("https://casesync.test".into()),
        ..Settings::default()
    };
    s.login.delay_ms = 20;
    s.login.max_delay_ms = 100;
    // Pages show the count they asked for, however busy the machine is
    // (console_indicators tests the page that does not wait).
    s.indicator_page_wait_ms = 60_000;
    s
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A hung exchange fails its test instead of stalling the suite.
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .into()
}

impl TestApp {
    pub fn spawn() -> TestApp {
        Self::spawn_with(|_| {})
    }

    pub fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let shared = Arc::new(Shared {
            data_dir: private_tempdir(),
            db: TestDb::new(),
        });
        let mut settings = test_settings(&shared);
        adjust(&mut settings);
        Self::start(shared, settings)
    }

    /// Another server on the same database and data directory.
    pub fn another(&self) -> TestApp {
        Self::start(self.shared.clone(), self.settings.clone())
    }

    pub fn start(shared: Arc<Shared>, settings: Settings) -> TestApp {
        let running = gate::shared();
        let state = casesync::server::prepare(settings.clone()).expect("server prepares");
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let bound = casesync::server::bind(state).expect("server binds");
                tx.send((bound.addr, bound.server.handle())).unwrap();
                bound.server.await.expect("server runs");
            })
        });
        let (addr, handle) = rx.recv().expect("server started");
        TestApp {
            base: format!("http://{addr}"),
            addr,
            settings,
            shared,
            handle: Some(handle),
            thread: Some(thread),
            agent: agent(),
            _running: running,
        }
    }

    /// Stops this server gracefully and waits until it has.
    pub fn stop(mut self) -> Arc<Shared> {
        self.shutdown();
        self.shared.clone()
    }

    fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(true));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.shared.data_dir.path()
    }

    pub fn initial_password_file(&self) -> PathBuf {
        self.data_dir().join("initial-admin-password")
    }

    pub fn initial_admin_password(&self) -> String {
        std::fs::read_to_string(self.initial_password_file())
            .expect("initial admin password file")
            .trim()
            .to_string()
    }

    /// A direct connection to this test's database, for checks and for
    /// arranging what the API cannot (an expired token, say).
    pub fn conn(&self) -> DbConnection {
        let storage =
            casesync::server::open_storage(&self.settings).expect("data directory and keys");
        db::open_one(&storage.database).expect("database connection")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), auth.as_deref()).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), auth.as_deref()).call(),
            ("POST", Some(b)) => with_auth(self.agent.post(&url), auth.as_deref()).send_json(b),
            ("POST", None) => with_auth(self.agent.post(&url), auth.as_deref()).send_empty(),
            ("PATCH", Some(b)) => with_auth(self.agent.patch(&url), auth.as_deref()).send_json(b),
            ("PUT", Some(b)) => with_auth(self.agent.put(&url), auth.as_deref()).send_json(b),
            other => panic!("unsupported request {other:?}"),
        };
        Response::from(result.expect("request reaches the server"))
    }

    /// A request with a raw body and content type, for malformed input.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Response {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match method {
            "POST" => with_auth(self.agent.post(&url), auth.as_deref())
                .content_type(content_type)
                .send(body),
            "PATCH" => with_auth(self.agent.patch(&url), auth.as_deref())
                .content_type(content_type)
                .send(body),
            "PUT" => with_auth(self.agent.put(&url), auth.as_deref())
                .content_type(content_type)
                .send(body),
            other => panic!("unsupported method {other}"),
        };
        Response::from(result.expect("request reaches the server"))
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        self.request("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request("POST", path, Some(token), Some(&body))
    }

    pub fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.request("PATCH", path, Some(token), Some(&body))
    }

    pub fn delete(&self, path: &str, token: &str) -> Response {
        self.request("DELETE", path, Some(token), None)
    }

    /// Logs in; returns the answer (token, user, password_change_required).
    pub fn login(&self, username: &str, password: &str) -> Response {
        self.request(
            "POST",
            "/api/v1/sessions",
            None,
            Some(&json!({ "username": username, "password": password })),
        )
    }

    pub fn token_for(&self, username: &str, password: &str) -> String {
        let res = self.login(username, password);
        assert_eq!(res.status, 201, "login of {username}: {}", res.body);
        res.body["token"].as_str().unwrap().to_string()
    }

    /// Logs in as the first admin and replaces the one-time password; returns
    /// the fresh session the change answers with (the one-time one ends).
    pub fn admin_token(&self) -> String {
        let token = self.token_for("admin", &self.initial_admin_password());
        let res = self.post(
            "/api/v1/me/password",
            &token,
            json!({ "current_password": self.initial_admin_password(), "new_password": ADMIN_PASSWORD }),
        );
        assert_eq!(res.status, 200, "{}", res.body);
        res.body["token"].as_str().unwrap().to_string()
    }

    /// Logs in from another loopback address (`127.x.y.z`), as a client
    /// behind another network would: the server sees that address.
    pub fn login_from(&self, source_ip: &str, username: &str, password: &str) -> Response {
        let body = json!({ "username": username, "password": password }).to_string();
        let request = format!(
            "POST /api/v1/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let answer = raw_exchange(source_ip, self.addr, request.as_bytes());
        let (head, text) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let text = if chunked {
            dechunk(text)
        } else {
            text.to_string()
        };
        Response {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            bytes: text.as_bytes().to_vec(),
            text,
        }
    }

    pub fn site_id(&self, token: &str, code: &str) -> String {
        let res = self.get("/api/v1/sites", token);
        res.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .unwrap_or_else(|| panic!("site {code}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user with a known password that needs no change; returns
    /// (user id, session token).
    pub fn user(
        &self,
        admin: &str,
        username: &str,
        role: &str,
        site_codes: &[&str],
    ) -> (String, String) {
        let site_ids: Vec<String> = site_codes.iter().map(|c| self.site_id(admin, c)).collect();
        let res = self.post(
            "/api/v1/users",
            admin,
            json!({ "username": username, "role": role, "site_ids": site_ids, "password": USER_PASSWORD }),
        );
        assert_eq!(res.status, 201, "create {username}: {}", res.body);
        let id = res.body["user"]["id"].as_str().unwrap().to_string();
        (id, self.token_for(username, USER_PASSWORD))
    }
}

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const USER_PASSWORD: &str = "user-password-for-tests";

/// Sends `request` from `source_ip` (bound before connecting) and reads the
/// whole answer.
fn raw_exchange(source_ip: &str, to: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let from: SocketAddr = format!("{source_ip}:0").parse().expect("an IPv4 address");
    socket.bind(&from.into()).expect("bind the source address");
    socket.connect(&to.into()).expect("connect to the server");
    let mut stream: std::net::TcpStream = socket.into();
    stream.write_all(request).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut text: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    body
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(value) => req.header("Authorization", value),
        None => req,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A response with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Each item's status in a batch's answer (`results`), in order.
    pub fn batch_statuses(&self) -> Vec<u64> {
        self.body["results"]
            .as_array()
            .expect("a batch's answer has results")
            .iter()
            .map(|r| r["status"].as_u64().expect("each result has a status"))
            .collect()
    }

    /// The JSON pointers of a problem's `errors`, in order.
    pub fn error_pointers(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .map(|list| list.iter().filter_map(|e| e["pointer"].as_str()).collect())
            .unwrap_or_default()
    }

    /// Asserts an RFC 9457 problem of this status and type; returns it.
    pub fn assert_problem(&self, status: u16, kind: &str) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("urn:casesync:problem:{kind}"),
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string());
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
        &self.body
    }
}

impl From<ureq::http::Response<ureq::Body>> for Response {
    fn from(mut res: ureq::http::Response<ureq::Body>) -> Self {
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let bytes = res
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            text,
            body,
            bytes,
        }
    }
}

//! The real `casesync` binary as a child process: commands and a server.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{agent, gate, Response, TestDb};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_casesync");

pub fn command(dir: &Path, db: &TestDb) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("CASESYNC_CONFIG")
        .env("CASESYNC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    if let Some(url) = &db.url {
        cmd.env("CASESYNC_DATABASE_URL", url);
    }
    cmd
}

pub fn cli(dir: &Path, db: &TestDb, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = command(dir, db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "casesync {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

impl super::TestApp {
    /// The `casesync` binary run from the shell beside this server: its
    /// data directory and database, as an operator's commands would be.
    pub fn shell(&self) -> Command {
        let mut cmd = command(self.data_dir(), &self.shared.db);
        cmd.env("CASESYNC_DATA_DIR", self.data_dir());
        cmd
    }
}

pub struct Served {
    pub child: Child,
    pub base: String,
    /// Every line the server wrote to stderr (its JSON log), so far.
    logs: Arc<Mutex<Vec<String>>>,
    /// Keeps a timed test from running beside this server.
    _running: gate::Shared,
}

/// Starts `casesync serve` and waits for the address it logs.
pub fn serve(dir: &Path, db: &TestDb, extra_env: &[(&str, &str)]) -> Served {
    let running = gate::shared();
    let mut cmd = command(dir, db);
    cmd.arg("serve")
        .env("CASESYNC_BIND", "127.0.0.1:0")
        .env("CASESYNC_WORKERS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                if event["message"] == "casesync listening" {
                    let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_string());
                }
            } else if line.contains("casesync listening") {
                // CASESYNC_LOG_FORMAT=text: `… casesync listening addr=IP:PORT …`
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its address");
    Served {
        child,
        base: format!("http://{addr}"),
        logs,
        _running: running,
    }
}

impl Served {
    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        let mut req = agent().post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Response::from(req.send_json(body).unwrap())
    }

    /// Signs in (`POST /sessions`); the answer as it came.
    pub fn login(&self, username: &str, password: &str) -> Response {
        self.post(
            "/api/v1/sessions",
            None,
            serde_json::json!({ "username": username, "password": password }),
        )
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        Response::from(
            agent()
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .call()
                .unwrap(),
        )
    }

    /// The server's log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the server did not stop within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

//! Settings: built-in defaults < `casesync.toml` < `CASESYNC_*` environment.
//!
//! Nested keys use a double underscore in the environment, e.g.
//! `CASESYNC_TLS__CERT=/etc/casesync/cert.pem` sets `tls.cert`.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// A value that must never reach a log: `Debug` and `Display` mask it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address and port to listen on.
    pub bind: String,
    /// The address phones reach this server at (`https://host[/prefix]`),
    /// behind any proxy; ODK Collect's settings QR codes point there.
    pub public_url: Option<String>,
    /// Where the SQLite database, keys and the initial admin password live.
    pub data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL, `sqlite://path` or empty for the
    /// embedded SQLite file `<data_dir>/casesync.db`.
    pub database_url: Option<Secret>,
    /// Connections in the database pool.
    pub db_pool_size: u32,
    /// TLS is on when both a certificate chain and a key (PEM) are set.
    pub tls: Option<TlsSettings>,
    /// Largest JSON request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest encrypted submission (JWE) accepted, in bytes.
    pub max_submission_bytes: usize,
    /// Largest batch of submissions (`POST /submissions/batch`), in bytes.
    pub max_batch_bytes: usize,
    /// Largest attachment (its plaintext), in bytes; the JWE carrying it may
    /// be a third larger (base64url).
    pub max_attachment_bytes: u64,
    /// Lifetime of a login session token.
    pub session_ttl_hours: i64,
    /// Default lifetime of a device token made for a phone.
    pub device_token_ttl_days: i64,
    /// Seconds given to in-flight requests after SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// CPU-heavy jobs (decrypting and validating submissions, validating
    /// data, rendering exports) run at once; 0 means one per core.
    pub cpu_workers: usize,
    /// CPU-heavy jobs that may wait for one of those; more are refused
    /// with 503 `server_busy` and `Retry-After`.
    pub cpu_queue: usize,
    /// Seconds a request may wait for and run CPU-heavy work before it is
    /// answered 503 `server_busy`.
    pub cpu_time_limit_secs: u64,
    pub login: LoginThrottleSettings,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Derive the key-encryption key from this passphrase (Argon2id) instead
    /// of `<data_dir>/master.key`. Never logged.
    pub key_passphrase: Option<Secret>,
    /// Read the passphrase from this file instead.
    pub key_passphrase_file: Option<PathBuf>,
    /// Size of new programme RSA keys: 2048, 3072 or 4096.
    pub rsa_key_bits: u32,
    /// Suppressed indicator reports (viewers, publishable ones) hide counts
    /// from 1 to this minus one.
    pub indicator_suppression_threshold: u64,
    /// Milliseconds the console's indicators page waits for a new count
    /// before it answers with the last one, or says it is counting.
    pub indicator_page_wait_ms: u64,
    /// The longest a break-glass grant lasts (a coordinator reading a case
    /// of another site), in minutes; a request may ask for less.
    pub break_glass_minutes: i64,
    /// Days a form about a case not seen yet may wait for the form that
    /// opens it before coordinators see it on `GET /submissions/held`.
    pub pending_case_days: i64,
    /// Whether the OpenRosa endpoint (`/odk/…/submission`) takes
    /// unencrypted submissions (ODK Web Forms does not encrypt); even then
    /// only over TLS or from loopback (docs/odk.md).
    pub odk_allow_plaintext: bool,
    /// Addresses of reverse proxies whose `X-Forwarded-Proto: https` says
    /// a request came over TLS (`http::extract::over_tls`); none by
    /// default. Once one is set, a loopback peer without it is not TLS.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Days the parts of an ODK split upload whose last request never came
    /// are kept before they are deleted (`ingest::odk::prune_stale_parts`).
    pub odk_split_upload_days: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Failed logins, counted per account and client address together, per
/// address and per account, within a window (docs/operations.md, "Login
/// throttling").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginThrottleSettings {
    /// Failures of one account from one address tolerated before each
    /// further attempt is slowed down.
    pub slow_after: i32,
    /// The first delay past a limit; it doubles with each further failure,
    /// up to `max_delay_ms`.
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    /// Failures of one account from one address after which that address
    /// may not try that account for `lock_secs` (other addresses still may).
    pub lock_after: i32,
    pub lock_secs: i64,
    /// Failures from one address, at any accounts, after which its attempts
    /// are slowed (never refused: an office shares one address).
    pub address_slow_after: i32,
    /// Failures of one account from all addresses after which its password
    /// is refused for `lock_secs`; 0 (the default) never locks an account.
    /// Device tokens keep working either way.
    pub account_lock_after: i32,
    /// Failures older than this are forgotten.
    pub window_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1:8080".into(),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            database_url: None,
            db_pool_size: 8,
            tls: None,
            max_body_bytes: 1024 * 1024,
            max_submission_bytes: 5 * 1024 * 1024,
            max_batch_bytes: 20 * 1024 * 1024,
            max_attachment_bytes: 10_000_000,
            indicator_suppression_threshold: 5,
            indicator_page_wait_ms: 50,
            break_glass_minutes: 180,
            pending_case_days: 14,
            odk_allow_plaintext: false,
            trusted_proxies: Vec::new(),
            odk_split_upload_days: 7,
            session_ttl_hours: 12,
            device_token_ttl_days: 180,
            shutdown_timeout_secs: 30,
            workers: 0,
            cpu_workers: 0,
            cpu_queue: 64,
            cpu_time_limit_secs: 30,
            login: LoginThrottleSettings::default(),
            log_format: LogFormat::Text,
            key_passphrase: None,
            key_passphrase_file: None,
            rsa_key_bits: 2048,
        }
    }
}

impl Default for LoginThrottleSettings {
    fn default() -> Self {
        LoginThrottleSettings {
            slow_after: 3,
            delay_ms: 500,
            max_delay_ms: 4000,
            lock_after: 10,
            lock_secs: 15 * 60,
            address_slow_after: 30,
            account_lock_after: 0,
            window_secs: 15 * 60,
        }
    }
}

/// `CASESYNC_*` variables that belong to the command line, the collector, the
/// test suite or `scripts/start-postgres.sh`, not to the server's settings
/// (lowercase prefixes, after `CASESYNC_`).
const NOT_SETTINGS: [&str; 4] = ["config", "collect_", "test_", "pg_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Which database a URL names. Unknown schemes are refused rather than guessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite(PathBuf),
    Postgres(Secret),
}

impl Settings {
    /// Loads defaults, then `config_file` (if it exists), then the environment.
    pub fn load(config_file: &Path) -> Result<Settings, ConfigError> {
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(config_file))
            .merge(
                Env::prefixed("CASESYNC_")
                    .filter(|key| !NOT_SETTINGS.iter().any(|n| key.starts_with(n)))
                    .split("__"),
            )
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.db_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "db_pool_size must be at least 1".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        if !(1..=24 * 60).contains(&self.break_glass_minutes) {
            return Err(ConfigError::Invalid(
                "break_glass_minutes must be from 1 to 1440 (a day)".into(),
            ));
        }
        if !(1..=365).contains(&self.pending_case_days) {
            return Err(ConfigError::Invalid(
                "pending_case_days must be from 1 to 365".into(),
            ));
        }
        if !(1..=90).contains(&self.odk_split_upload_days) {
            return Err(ConfigError::Invalid(
                "odk_split_upload_days must be from 1 to 90".into(),
            ));
        }
        if self.session_ttl_hours <= 0 || self.device_token_ttl_days <= 0 {
            return Err(ConfigError::Invalid(
                "token lifetimes must be positive".into(),
            ));
        }
        if self.cpu_time_limit_secs == 0 {
            return Err(ConfigError::Invalid(
                "cpu_time_limit_secs must be at least 1".into(),
            ));
        }
        if self.login.lock_after <= self.login.slow_after || self.login.slow_after < 0 {
            return Err(ConfigError::Invalid(
                "login.lock_after must be greater than login.slow_after (0 or more)".into(),
            ));
        }
        if self.login.address_slow_after < 1 || self.login.account_lock_after < 0 {
            return Err(ConfigError::Invalid(
                "login.address_slow_after must be 1 or more, login.account_lock_after 0 (off) or more".into(),
            ));
        }
        if self.login.lock_secs < 1 || self.login.window_secs < 1 {
            return Err(ConfigError::Invalid(
                "login.lock_secs and login.window_secs must be 1 or more".into(),
            ));
        }
        if ![2048, 3072, 4096].contains(&self.rsa_key_bits) {
            return Err(ConfigError::Invalid(
                "rsa_key_bits must be 2048, 3072 or 4096".into(),
            ));
        }
        if self.indicator_suppression_threshold < 2 {
            return Err(ConfigError::Invalid(
                "indicator_suppression_threshold must be 2 or more".into(),
            ));
        }
        if let Some(url) = &self.public_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if rest
                .is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(['?', '#', ' ']))
            {
                return Err(ConfigError::Invalid(
                    "public_url must be an http:// or https:// address with a host and no query, e.g. https://casesync.example.org".into(),
                ));
            }
        }
        self.database_target()?;
        Ok(())
    }

    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let url = match &self.database_url {
            None => return Ok(DatabaseTarget::Sqlite(self.data_dir.join("casesync.db"))),
            Some(url) if url.expose().trim().is_empty() => {
                return Ok(DatabaseTarget::Sqlite(self.data_dir.join("casesync.db")))
            }
            Some(url) => url.expose(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseTarget::Postgres(Secret::new(url)))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(DatabaseTarget::Sqlite(PathBuf::from(path)))
        } else {
            // Never echo the URL: it may carry a password.
            Err(ConfigError::Invalid(
                "database_url must start with postgres://, postgresql:// or sqlite://".into(),
            ))
        }
    }

    /// CPU-heavy jobs run at once: `cpu_workers`, or one per core.
    pub fn cpu_threads(&self) -> usize {
        match self.cpu_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn initial_admin_password_path(&self) -> PathBuf {
        self.data_dir.join("initial-admin-password")
    }
}

#[cfg(test)]
// figment::Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_masked_in_debug_output() {
        let settings = Settings {
            database_url: Some(Secret::new("postgres://app:hunter2@db/casesync")),
            ..Settings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("Secret(****)"));
    }

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "casesync.toml",
                "bind = \"0.0.0.0:9000\"\nmax_body_bytes = 4096\n[login]\nlock_after = 20\n",
            )?;
            jail.set_env("CASESYNC_MAX_BODY_BYTES", "8192");
            jail.set_env("CASESYNC_LOGIN__SLOW_AFTER", "5");
            jail.set_env("CASESYNC_TEST_DATABASE_URL", "postgres://elsewhere");
            jail.set_env("CASESYNC_PG_PORT", "5433");
            let s = Settings::load(Path::new("casesync.toml")).expect("loads");
            assert_eq!(s.bind, "0.0.0.0:9000");
            assert_eq!(s.max_body_bytes, 8192);
            assert_eq!(s.login.lock_after, 20);
            assert_eq!(s.login.slow_after, 5);
            assert_eq!(s.session_ttl_hours, 12);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_schemes_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("casesync.toml", "bnid = \"x\"\n")?;
            assert!(Settings::load(Path::new("casesync.toml")).is_err());
            jail.create_file("casesync.toml", "database_url = \"mysql://u:p@h/db\"\n")?;
            let err = Settings::load(Path::new("casesync.toml")).unwrap_err();
            assert!(!err.to_string().contains("u:p@h"));
            Ok(())
        });
    }
}

//! HTTP for the collector: JSON and JOSE bodies, bearer token, and retries
//! with exponential backoff (with jitter) on what is worth retrying — no
//! connection, a timeout, 408, 429 (honouring Retry-After) and 5xx. Given
//! several addresses of one deployment (servers sharing a database), a
//! request whose server cannot be reached goes to the next at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

/// A final answer from the server (any status but the retryable ones).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: Vec<u8>,
    /// Time of the last (successful) attempt.
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// The deployment's addresses; `current` indexes the one in use, shared
    /// by every clone so all workers move on together.
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    retries: u32,
    /// Told about each wait before a retry, so a person sees why it is slow.
    progress: Option<indicatif::ProgressBar>,
}

/// First wait before a retry; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

impl Client {
    pub fn new(base: &str, token: Option<String>, retries: u32) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .tls_config(tls)
            .build()
            .new_agent();
        Client {
            agent,
            bases: Arc::new(vec![base.trim_end_matches('/').to_string()]),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            retries,
            progress: None,
        }
    }

    /// More addresses of the same deployment, tried in order after the
    /// first when it cannot be reached.
    pub fn with_fallbacks(mut self, others: &[String]) -> Client {
        let mut bases = (*self.bases).clone();
        bases.extend(others.iter().map(|b| b.trim_end_matches('/').to_string()));
        bases.dedup();
        self.bases = Arc::new(bases);
        self
    }

    /// The address requests go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::SeqCst) % self.bases.len()]
    }

    pub fn with_progress(mut self, progress: indicatif::ProgressBar) -> Client {
        self.progress = Some(progress);
        self
    }

    pub fn get(&self, path: &str) -> Result<Answer, String> {
        self.call("GET", path, None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer, String> {
        self.call(
            "POST",
            path,
            Some(("application/json", body.to_string().as_bytes())),
        )
    }

    pub fn send_jose(&self, method: &str, path: &str, jwe: &str) -> Result<Answer, String> {
        self.call(method, path, Some(("application/jose", jwe.as_bytes())))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, String> {
        let first = self.current.load(Ordering::SeqCst);
        let mut attempt = 0;
        loop {
            let used = self.current.load(Ordering::SeqCst);
            let url = format!("{}{}", self.bases[used % self.bases.len()], path);
            let started = Instant::now();
            let outcome = self.once(method, &url, body);
            let latency = started.elapsed();
            let wait = match outcome {
                Ok((status, _, bytes)) if !retryable(status) => {
                    if let Some(progress) = &self.progress {
                        progress.set_message("");
                    }
                    return Ok(Answer {
                        status,
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                        bytes,
                        latency,
                    });
                }
                Ok((status, retry_after, _)) => {
                    if attempt >= self.retries {
                        return Err(format!("{method} {path}: the server answered {status}"));
                    }
                    retry_after
                }
                Err(err) => {
                    if attempt >= self.retries {
                        return Err(format!("{method} {path}: {err}"));
                    }
                    if self.bases.len() > 1 {
                        // Unreachable: on to the next address, unless another
                        // request moved on already. No wait until every
                        // address was tried once in this call.
                        let _ = self.current.compare_exchange(
                            used,
                            used + 1,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        let next = self.current.load(Ordering::SeqCst);
                        if (next - first) % self.bases.len() != 0 {
                            attempt += 1;
                            continue;
                        }
                    }
                    None
                }
            };
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << attempt.min(10))
                .min(MAX_BACKOFF);
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
            let wait = wait.unwrap_or(backoff + Duration::from_millis(jitter));
            if let Some(progress) = &self.progress {
                progress.set_message(format!(
                    "the server is busy or unreachable; retry {} of {} in {:.1} s",
                    attempt + 1,
                    self.retries,
                    wait.as_secs_f64()
                ));
            }
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// One attempt: status, Retry-After, body.
    fn once(
        &self,
        method: &str,
        url: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ureq::Error> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut response = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()?
            }
            (_, body) => {
                let mut req = match method {
                    "PUT" => self.agent.put(url),
                    _ => self.agent.post(url),
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                let (content_type, bytes) = body.unwrap_or(("application/json", b"{}"));
                req.content_type(content_type).send(bytes)?
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        Ok((status, retry_after, bytes))
    }
}

fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

//! `collect odk-push`: the collector sends copies of a filled form as ODK
//! Collect does — the instance XML encrypted with `crypto::odk::encrypt`,
//! POSTed as multipart to `/odk/{programme}/submission` — for the ingest
//! benchmark's OpenRosa mode (scripts/bench-ingest.sh, `MODE=openrosa`).
//! `collect odk-formlist` asks for a programme's form list as Collect does
//! on "Download form", for the same benchmark's formList latency.
//! Signed in as the collector is (its session token as a bearer token).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::store::Dir;
use crate::crypto::{keys, odk as odk_crypto};
use crate::forms::{check, definitions, model::CaseRole};
use crate::odk::{instance, nodes::FormTable};

const BOUNDARY: &str = "casesync-collect-odk-boundary";

/// One submission as Collect uploads it: the manifest and the `.enc` parts.
fn multipart(encrypted: &odk_crypto::Encrypted) -> Vec<u8> {
    let mut body = Vec::new();
    let manifest = ("xml_submission_file", encrypted.manifest.as_bytes());
    let files = encrypted
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes.as_slice()));
    for (name, bytes) in std::iter::once(manifest).chain(files) {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Runs `each(i)` for `i` in `0..count` on `concurrency` threads; the
/// latency of every call that returned `Ok`, sorted, and the errors.
fn load(
    count: usize,
    concurrency: usize,
    each: impl Fn(usize) -> Result<(), String> + Sync,
) -> (Vec<Duration>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(count));
    let refused = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let sent = Instant::now();
                let answer = each(i);
                let took = sent.elapsed();
                match answer {
                    Ok(()) => latencies.lock().expect("latencies").push(took),
                    Err(e) => refused.lock().expect("refusals").push(e),
                }
            });
        }
    });
    let mut latencies = latencies.into_inner().expect("latencies");
    latencies.sort();
    (latencies, refused.into_inner().expect("refusals"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The ODK version the server offers for `form_id` (its formList).
fn odk_version(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    form_id: &str,
) -> Result<String, String> {
    let text = agent
        .get(format!("{base}/formList?formID={form_id}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("formList: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("formList: {e}"))?;
    text.split_once("<version>")
        .and_then(|(_, rest)| rest.split_once("</version>"))
        .map(|(v, _)| v.to_string())
        .ok_or_else(|| format!("the server offers no form {form_id}"))
}

/// Sends `count` copies of `answers` for `form_id`, `concurrency` at a
/// time; prints the rate and latency percentiles.
pub fn run(
    dir: &Path,
    form_id: &str,
    answers: &Path,
    count: usize,
    concurrency: usize,
) -> Result<(), String> {
    let session = Dir::open(dir)
        .and_then(|d| d.session())
        .map_err(|e| format!("the collector is not signed in: {e}"))?;
    let set = definitions::shipped();
    let form = set
        .forms
        .iter()
        .filter_map(|f| check::check(&f.document, &set.resources).ok())
        .find(|f| f.meta.id == form_id)
        .ok_or_else(|| format!("no shipped form {form_id}"))?;
    let table = FormTable::build(&form.document).map_err(|p| p.join("; "))?;
    let answers: Value = serde_json::from_str(
        &std::fs::read_to_string(answers).map_err(|e| format!("{}: {e}", answers.display()))?,
    )
    .map_err(|e| format!("the answers file is not JSON: {e}"))?;
    let answers = answers
        .as_object()
        .ok_or("the answers file must hold one JSON object")?;

    let server = session.server.trim_end_matches('/').to_string();
    let base = format!("{server}/odk/{}", form.meta.programme);
    let agent = agent();
    let version = odk_version(&agent, &base, &session.token, form_id)?;
    let jwk: Value = agent
        .get(format!(
            "{server}/api/v1/programmes/{}/keys/current",
            form.meta.programme
        ))
        .header("Authorization", format!("Bearer {}", session.token))
        .call()
        .map_err(|e| format!("the programme key: {e}"))?
        .body_mut()
        .read_json()
        .map_err(|e| format!("the programme key: {e}"))?;
    let public = keys::public_key_from_jwk(&jwk).map_err(|e| e.to_string())?;

    let now = chrono::Utc::now().to_rfc3339();
    let bodies: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let instance_id = format!("uuid:{}", uuid::Uuid::new_v4());
            let case = match form.meta.case {
                CaseRole::None => String::new(),
                _ => format!("<case_id>{}</case_id>", uuid::Uuid::new_v4()),
            };
            let xml = instance::to_xml(&table, answers, &instance_id).replace(
                "<meta><instanceID>",
                &format!(
                    "<meta><timeStart>{now}</timeStart><timeEnd>{now}</timeEnd>{case}<instanceID>"
                ),
            );
            multipart(&odk_crypto::encrypt(
                &public,
                form_id,
                Some(&version),
                &instance_id,
                xml.as_bytes(),
                &[],
            ))
        })
        .collect();

    let url = format!("{base}/submission?deviceID={}", session.device_id);
    let started = Instant::now();
    let (latencies, refused) = load(count, concurrency, |i| {
        let answer = agent
            .post(&url)
            .header("Authorization", format!("Bearer {}", session.token))
            .header("X-OpenRosa-Version", "1.0")
            .content_type(format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(bodies[i].as_slice());
        match answer {
            Ok(res) if res.status().as_u16() == 201 => Ok(()),
            Ok(mut res) => Err(format!(
                "{}: {}",
                res.status(),
                res.body_mut().read_to_string().unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "OpenRosa: {} stored, {} refused in {elapsed:.1} s: {:.0} submissions/s; latency p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        refused.len(),
        latencies.len() as f64 / elapsed,
        ms(crate::client::quantile(&latencies, 0.5)),
        ms(crate::client::quantile(&latencies, 0.99)),
    );
    if let Some(first) = refused.first() {
        return Err(format!("{} refused; the first: {first}", refused.len()));
    }
    Ok(())
}

/// Asks for `programme`'s form list `count` times, `concurrency` at a
/// time, each answer read whole and checked to list forms; prints the
/// latency percentiles.
pub fn formlist(
    dir: &Path,
    programme: &str,
    count: usize,
    concurrency: usize,
) -> Result<(), String> {
    let session = Dir::open(dir)
        .and_then(|d| d.session())
        .map_err(|e| format!("the collector is not signed in: {e}"))?;
    let server = session.server.trim_end_matches('/');
    let url = format!("{server}/odk/{programme}/formList");
    let agent = agent();
    let forms = AtomicUsize::new(0);
    let started = Instant::now();
    let (latencies, refused) = load(count, concurrency, |_| {
        let mut res = agent
            .get(&url)
            .header("Authorization", format!("Bearer {}", session.token))
            .header("X-OpenRosa-Version", "1.0")
            .call()
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let body = res.body_mut().read_to_string().map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        forms.store(body.matches("<xform>").count(), Ordering::Relaxed);
        Ok(())
    });
    let elapsed = started.elapsed().as_secs_f64();
    let forms = forms.into_inner();
    println!(
        "formList ({forms} forms): {} answered, {} refused in {elapsed:.1} s: {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        refused.len(),
        latencies.len() as f64 / elapsed,
        ms(crate::client::quantile(&latencies, 0.5)),
        ms(crate::client::quantile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    if let Some(first) = refused.first() {
        return Err(format!("{} refused; the first: {first}", refused.len()));
    }
    if forms == 0 {
        return Err(format!("the form list of {programme} lists no forms"));
    }
    Ok(())
}

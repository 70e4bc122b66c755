//! `casesync collect`: a reference collector that behaves like a phone.
//! It signs in, syncs forms, keys and cases, fills a form from a JSON file
//! (checked locally against the synced version, encrypted for the
//! programme key, queued on disk) and pushes the queue with retries, never
//! resending what the server acknowledged. Tests and benchmarks drive the
//! server through it; admins use it to try forms.

pub mod client;
pub mod store;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::{jwe, keys};
use crate::forms::model::{CaseRole, FieldKind};
use crate::forms::{bundle, validate::CompiledForm};
use client::{Answer, Client};
use store::{Dir, Queued, QueuedAttachment, Session, SyncState};

pub type CollectResult<T> = Result<T, String>;

fn problem_text(answer: &Answer) -> String {
    let detail = answer.body["detail"].as_str().unwrap_or("");
    let errors: Vec<String> = answer.body["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["pointer"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        format!("{} {detail}", answer.status)
    } else {
        format!("{} {detail}\n  {}", answer.status, errors.join("\n  "))
    }
}

/// Signs in with a password and keeps the session token (0600).
pub fn login(dir: &Path, server: &str, username: &str, password: &str) -> CollectResult<()> {
    let dir = Dir::open(dir)?;
    let client = Client::new(server, None, 3);
    let answer = client.post_json(
        "/api/v1/sessions",
        &json!({ "username": username, "password": password }),
    )?;
    if answer.status != 201 {
        return Err(format!("sign-in refused: {}", problem_text(&answer)));
    }
    if answer.body["password_change_required"] == true {
        return Err("this account must change its password first (sign in on the web)".into());
    }
    let device_id = dir
        .read::<Session>("session.json")?
        .map(|s| s.device_id)
        .unwrap_or_else(|| {
            format!(
                "collector-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        });
    let session = Session {
        server: server.trim_end_matches('/').to_string(),
        username: username.to_string(),
        token: answer.body["token"]
            .as_str()
            .ok_or("the server answered no token")?
            .to_string(),
        device_id,
    };
    dir.write("session.json", &session, true)
}

fn client_for(session: &Session, server: Option<&str>, retries: u32) -> Client {
    Client::new(
        server.unwrap_or(&session.server),
        Some(session.token.clone()),
        retries,
    )
}

#[derive(Debug, Default)]
pub struct PullSummary {
    pub forms: usize,
    pub keys: usize,
    pub cases: usize,
    pub dropped: usize,
    pub downloaded: usize,
}

fn merge_by(list: &mut Vec<Value>, item: Value, same: impl Fn(&Value, &Value) -> bool) {
    match list.iter_mut().find(|old| same(old, &item)) {
        Some(old) => *old = item,
        None => list.push(item),
    }
}

/// Syncs: the first time everything, then changes since the cursor; then
/// downloads form versions not held yet (checked against their sha256).
pub fn pull(dir: &Path, retries: u32) -> CollectResult<PullSummary> {
    let dir = Dir::open(dir)?;
    let session = dir.session()?;
    let client = client_for(&session, None, retries);
    let mut state: SyncState = dir.state()?;
    let mut summary = PullSummary::default();
    loop {
        let path = match &state.cursor {
            Some(c) => format!("/api/v1/sync?cursor={c}"),
            None => "/api/v1/sync".to_string(),
        };
        let answer = client.get(&path)?;
        if answer.status != 200 {
            return Err(format!("sync refused: {}", problem_text(&answer)));
        }
        let feed = answer.body;
        let list = |key: &str| feed[key].as_array().cloned().unwrap_or_default();
        if feed["full"] == true {
            state = SyncState::default();
        }
        for form in list("forms") {
            summary.forms += 1;
            merge_by(&mut state.forms, form, |a, b| {
                a["form_id"] == b["form_id"] && a["version"] == b["version"]
            });
        }
        for key in list("keys") {
            summary.keys += 1;
            merge_by(&mut state.keys, key, |a, b| {
                a["programme"] == b["programme"]
            });
        }
        for case in list("cases") {
            summary.cases += 1;
            merge_by(&mut state.cases, case, |a, b| a["id"] == b["id"]);
        }
        for dropped in list("dropped_cases") {
            summary.dropped += 1;
            state.cases.retain(|c| c["id"] != dropped);
        }
        state.cursor = feed["cursor"].as_str().map(str::to_string);
        dir.write("state.json", &state, true)?;
        if feed["more"] != true {
            break;
        }
    }
    for form in state.forms.iter().filter(|f| f["status"] == "published") {
        let (id, version) = (
            form["form_id"].as_str().unwrap_or_default(),
            form["version"].as_str().unwrap_or_default(),
        );
        let file = format!("forms/{id}@{version}.json");
        if dir.path(&file).exists() {
            continue;
        }
        let answer = client.get(&format!("/api/v1/forms/{id}/versions/{version}"))?;
        if answer.status != 200 {
            return Err(format!("form {id} {version}: {}", problem_text(&answer)));
        }
        let document: Value = serde_json::from_slice(&answer.bytes)
            .map_err(|e| format!("form {id} {version}: not JSON: {e}"))?;
        if Some(bundle::digest(&document).as_str()) != form["sha256"].as_str() {
            return Err(format!(
                "form {id} {version}: the document does not match the synced sha256"
            ));
        }
        dir.write(&file, &document, false)?;
        summary.downloaded += 1;
    }
    Ok(summary)
}

#[derive(Debug, Clone)]
pub struct FillOptions {
    pub form_id: String,
    pub answers: PathBuf,
    pub version: Option<String>,
    pub case_id: Option<String>,
    pub supersedes: Option<String>,
    /// Queue this many distinct submissions of the same answers (each with
    /// its own instance id and, for a form that opens a case, its own case).
    pub count: usize,
}

#[derive(Debug)]
pub struct Filled {
    pub instance_id: String,
    pub case_id: Option<String>,
}

fn media_type_of(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or("");
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Fills `form_id` from a JSON file of answers and queues it encrypted.
/// Attachment fields name files relative to the answers file.
pub fn fill(dir: &Path, options: &FillOptions) -> CollectResult<Vec<Filled>> {
    let dir = Dir::open(dir)?;
    let session = dir.session()?;
    let state = dir.state()?;
    let version = match &options.version {
        Some(v) => v.clone(),
        None => state
            .forms
            .iter()
            .filter(|f| f["form_id"] == options.form_id.as_str() && f["status"] == "published")
            .filter_map(|f| f["version"].as_str())
            // Synced oldest first: the newest published is the last.
            .next_back()
            .ok_or_else(|| {
                format!(
                    "no published version of {} synced; run `casesync collect pull`",
                    options.form_id
                )
            })?
            .to_string(),
    };
    let document: Value = dir
        .read(&format!("forms/{}@{version}.json", options.form_id))?
        .ok_or_else(|| format!("form {} {version} is not synced", options.form_id))?;
    let form = CompiledForm::compile(document)
        .map_err(|p| format!("the synced form does not compile: {}", p.join("; ")))?;
    let key = state
        .keys
        .iter()
        .find(|k| k["programme"] == form.meta.programme.as_str())
        .ok_or_else(|| format!("no key for programme {} synced", form.meta.programme))?;
    let kid = key["kid"].as_str().ok_or("a synced key has no kid")?;
    let public = keys::public_key_from_jwk(&key["jwk"]).map_err(|e| e.to_string())?;

    let text = std::fs::read_to_string(&options.answers)
        .map_err(|e| format!("{}: {e}", options.answers.display()))?;
    let mut data: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON: {e}", options.answers.display()))?;
    if !data.is_object() {
        return Err(format!(
            "{}: must be a JSON object",
            options.answers.display()
        ));
    }
    let base = options.answers.parent().unwrap_or(Path::new("."));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for field in form
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::Attachment)
    {
        let found: Vec<(String, String)> = field
            .values_in(&data)
            .into_iter()
            .filter_map(|(pointer, v)| Some((pointer, v.as_str()?.to_string())))
            .collect();
        for (pointer, file) in found {
            let path = base.join(&file);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("{pointer}: {}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(file);
            if let Some(slot) = data.pointer_mut(&pointer) {
                *slot = Value::String(name.clone());
            }
            if !files.iter().any(|(n, _)| n == &name) {
                files.push((name, bytes));
            }
        }
    }
    let errors = form.validate(&data);
    if !errors.is_empty() {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.pointer, e.message))
            .collect();
        return Err(format!(
            "{} does not fit {} {version}:\n  {}",
            options.answers.display(),
            options.form_id,
            lines.join("\n  ")
        ));
    }
    if form.meta.case == CaseRole::Updates && options.case_id.is_none() {
        return Err(format!(
            "{} belongs to a case: give --case",
            options.form_id
        ));
    }
    if form.meta.case == CaseRole::None && options.case_id.is_some() {
        return Err(format!(
            "{} is not about a case: drop --case",
            options.form_id
        ));
    }
    let declarations: Vec<Value> = files
        .iter()
        .map(|(name, bytes)| {
            json!({
                "name": name,
                "media_type": media_type_of(name),
                "size": bytes.len(),
                "sha256": hex::encode(Sha256::digest(bytes)),
            })
        })
        .collect();
    let base_case_version = options.case_id.as_ref().and_then(|id| {
        state
            .cases
            .iter()
            .find(|c| c["id"] == id.as_str())
            .and_then(|c| c["version"].as_i64())
    });
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut filled = Vec::new();
    let first_number = dir.items_ever_queued()?;
    for n in 0..options.count.max(1) {
        let instance_id = uuid::Uuid::new_v4().to_string();
        let case_id = match form.meta.case {
            CaseRole::Opens => Some(
                options
                    .case_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ),
            CaseRole::Updates => options.case_id.clone(),
            CaseRole::None => None,
        };
        let mut envelope = Map::new();
        envelope.insert("instance_id".into(), json!(instance_id));
        envelope.insert("form_id".into(), json!(options.form_id));
        envelope.insert("form_version".into(), json!(version));
        if let Some(c) = &case_id {
            envelope.insert("case_id".into(), json!(c));
        }
        if let Some(v) = base_case_version {
            envelope.insert("base_case_version".into(), json!(v));
        }
        if let Some(s) = &options.supersedes {
            envelope.insert("supersedes".into(), json!(s));
        }
        envelope.insert("device_id".into(), json!(session.device_id));
        envelope.insert("started_at".into(), json!(now));
        envelope.insert("completed_at".into(), json!(now));
        envelope.insert("data".into(), data.clone());
        envelope.insert("attachments".into(), Value::Array(declarations.clone()));
        let submission = jwe::encrypt(Value::Object(envelope).to_string().as_bytes(), kid, &public);
        let attachments = files
            .iter()
            .map(|(name, bytes)| QueuedAttachment {
                name: name.clone(),
                jwe: jwe::encrypt(bytes, kid, &public),
                acknowledged: false,
            })
            .collect();
        let item = Queued {
            instance_id: instance_id.clone(),
            form_id: options.form_id.clone(),
            form_version: version.clone(),
            case_id: case_id.clone(),
            submission,
            attachments,
            receipt: None,
            problem: None,
        };
        let name = format!("{:09}-{instance_id}.json", first_number + n);
        dir.write(&format!("queue/{name}"), &item, true)?;
        filled.push(Filled {
            instance_id,
            case_id,
        });
    }
    Ok(filled)
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Submissions per request: 1 sends each on its own, more use the batch
    /// endpoint (at most 100).
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of a request that failed for a reason worth retrying.
    pub retries: u32,
    /// Another address of the same server (e.g. after it moved).
    pub server: Option<String>,
}

#[derive(Debug, Default)]
pub struct PushReport {
    /// Stored by this push (201).
    pub created: usize,
    /// The server already had them (200): an earlier push was cut off
    /// after the server stored them.
    pub repeated: usize,
    pub refused: usize,
    pub attachments: usize,
    /// Still queued (the server could not be reached).
    pub left: usize,
    pub elapsed: Duration,
    /// One per request that got an answer.
    pub latencies: Vec<Duration>,
}

struct Shared<'a> {
    dir: &'a Dir,
    client: Client,
    work: Mutex<VecDeque<Vec<String>>>,
    unreachable: AtomicBool,
    first_error: Mutex<Option<String>>,
    created: AtomicUsize,
    repeated: AtomicUsize,
    refused: AtomicUsize,
    attachments: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
}

/// Uploads the queue: submissions first (recording each acknowledgement on
/// disk at once), then their attachments; fully acknowledged items move to
/// `sent`, refused ones to `failed`; the rest stay queued.
pub fn push(dir: &Path, options: &PushOptions) -> CollectResult<PushReport> {
    let dir = Dir::open(dir)?;
    let session = dir.session()?;
    let names = dir.list("queue")?;
    let batch = options.batch.clamp(1, 100);
    let shared = Shared {
        dir: &dir,
        client: client_for(&session, options.server.as_deref(), options.retries),
        work: Mutex::new(names.chunks(batch).map(|c| c.to_vec()).collect()),
        unreachable: AtomicBool::new(false),
        first_error: Mutex::new(None),
        created: AtomicUsize::new(0),
        repeated: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        attachments: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::with_capacity(names.len())),
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..options.concurrency.max(1) {
            scope.spawn(|| worker(&shared, batch > 1));
        }
    });
    let elapsed = started.elapsed();
    if let Some(err) = shared.first_error.lock().expect("lock").take() {
        if !shared.unreachable.load(Ordering::SeqCst) {
            return Err(err);
        }
        eprintln!("casesync collect: {err}");
    }
    Ok(PushReport {
        created: shared.created.into_inner(),
        repeated: shared.repeated.into_inner(),
        refused: shared.refused.into_inner(),
        attachments: shared.attachments.into_inner(),
        left: dir.list("queue")?.len(),
        elapsed,
        latencies: shared.latencies.into_inner().expect("lock"),
    })
}

fn worker(shared: &Shared<'_>, use_batch: bool) {
    while !shared.unreachable.load(Ordering::SeqCst) {
        let Some(chunk) = shared.work.lock().expect("lock").pop_front() else {
            return;
        };
        if let Err(err) = push_chunk(shared, &chunk, use_batch) {
            shared.unreachable.store(true, Ordering::SeqCst);
            shared.first_error.lock().expect("lock").get_or_insert(err);
        }
    }
}

/// What the server said of one submission.
enum Outcome {
    Stored {
        created: bool,
        receipt: Value,
    },
    Refused(Value),
    /// Try again later (e.g. 503 for one item of a batch).
    Later,
}

fn outcome_of(status: u16, receipt: Value, problem: Value) -> Outcome {
    match status {
        200 | 201 => Outcome::Stored {
            created: status == 201,
            receipt,
        },
        408 | 429 | 500.. => Outcome::Later,
        _ => Outcome::Refused(problem),
    }
}

fn push_chunk(shared: &Shared<'_>, chunk: &[String], use_batch: bool) -> CollectResult<()> {
    let mut items = Vec::new();
    for name in chunk {
        if let Some(item) = shared.dir.read::<Queued>(&format!("queue/{name}"))? {
            items.push((name.clone(), item));
        }
    }
    let to_send: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].1.receipt.is_none())
        .collect();
    let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
    if use_batch && to_send.len() > 1 {
        let body = json!({ "submissions": to_send.iter().map(|&i| &items[i].1.submission).collect::<Vec<_>>() });
        let answer = shared
            .client
            .post_json("/api/v1/submissions/batch", &body)?;
        shared.latencies.lock().expect("lock").push(answer.latency);
        if answer.status == 401 {
            return Err(format!(
                "the server refused the token: {}",
                problem_text(&answer)
            ));
        }
        if answer.status != 200 {
            // The batch as a whole was refused (too large, malformed):
            // every item stays queued; say why.
            return Err(format!("batch refused: {}", problem_text(&answer)));
        }
        for result in answer.body["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let index = result["index"].as_u64().unwrap_or(u64::MAX) as usize;
            if let Some(&i) = to_send.get(index) {
                let status = result["status"].as_u64().unwrap_or(0) as u16;
                outcomes.push((
                    i,
                    outcome_of(status, result["receipt"].clone(), result["problem"].clone()),
                ));
            }
        }
    } else {
        for &i in &to_send {
            let answer =
                shared
                    .client
                    .send_jose("POST", "/api/v1/submissions", &items[i].1.submission)?;
            shared.latencies.lock().expect("lock").push(answer.latency);
            if answer.status == 401 {
                return Err(format!(
                    "the server refused the token: {}",
                    problem_text(&answer)
                ));
            }
            outcomes.push((
                i,
                outcome_of(answer.status, answer.body.clone(), answer.body),
            ));
        }
    }
    for (i, outcome) in outcomes {
        let (name, item) = &mut items[i];
        match outcome {
            Outcome::Stored { created, receipt } => {
                item.receipt = Some(receipt);
                // Recorded before anything else: never sent again.
                shared.dir.write(&format!("queue/{name}"), item, true)?;
                let counter = if created {
                    &shared.created
                } else {
                    &shared.repeated
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused(problem) => {
                item.problem = Some(problem);
                shared.dir.settle(name, item, "failed")?;
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Later => {}
        }
    }
    for (name, item) in items.iter_mut().filter(|(_, item)| item.receipt.is_some()) {
        if !send_attachments(shared, name, item)? {
            continue;
        }
        if item.done() {
            shared.dir.settle(name, item, "sent")?;
        }
    }
    Ok(())
}

/// Uploads what is not yet acknowledged; false if the item was refused.
fn send_attachments(shared: &Shared<'_>, name: &str, item: &mut Queued) -> CollectResult<bool> {
    for index in 0..item.attachments.len() {
        if item.attachments[index].acknowledged {
            continue;
        }
        let attachment = &item.attachments[index];
        let path = format!(
            "/api/v1/submissions/{}/attachments/{}",
            item.instance_id, attachment.name
        );
        let answer = shared.client.send_jose("PUT", &path, &attachment.jwe)?;
        match answer.status {
            200 | 201 => {
                item.attachments[index].acknowledged = true;
                shared.dir.write(&format!("queue/{name}"), item, true)?;
                shared.attachments.fetch_add(1, Ordering::Relaxed);
            }
            401 => {
                return Err(format!(
                    "the server refused the token: {}",
                    problem_text(&answer)
                ))
            }
            _ => {
                item.problem = Some(answer.body);
                shared.dir.settle(name, item, "failed")?;
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Counts of the queue, what was sent and what was refused.
pub fn status(dir: &Path) -> CollectResult<(usize, usize, usize)> {
    let dir = Dir::open(dir)?;
    Ok((
        dir.list("queue")?.len(),
        dir.list("sent")?.len(),
        dir.list("failed")?.len(),
    ))
}

/// The `q`-th quantile (0..=1) of `sorted` latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

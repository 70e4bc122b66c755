//! `casesync collect`: a reference collector that behaves like a phone.
//! It signs in (password, changing a one-time one on the spot, or a device
//! token from a private file), syncs forms, keys and cases, writes a
//! starting answers file for a form (`template`), fills a form from an
//! answers file (checked locally against the synced version, encrypted for
//! the programme key, queued on disk) and pushes the queue with retries,
//! never resending what the server acknowledged. Refusals are kept, shown
//! with field labels and sent again with `retry`. Field workers without
//! the phone app use it; tests and benchmarks drive the server through it;
//! admins use it to try forms.

pub mod http;
pub mod prompt;
pub mod store;
pub mod template;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::crypto::{jwe, keys};
use crate::forms::model::{CaseRole, Field, FieldKind};
use crate::forms::relevance;
use crate::forms::{bundle, validate::CompiledForm};
use crate::submissions::envelope::AttachmentDeclaration;
use http::{Answer, Client};
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

/// Signs in with a password and keeps the session token (0600). A
/// one-time password is changed on the spot with passwords from
/// `new_password` (given the server's reason when it refused the last one).
pub fn login(
    dir: &Path,
    server: &str,
    username: &str,
    password: &str,
    new_password: &prompt::NewPasswordSource,
) -> CollectResult<()> {
    let dir = Dir::open(dir)?;
    let client = Client::new(server, None, 3);
    let mut token = session_token(&client, username, password)?;
    if token.1 {
        token.0 = change_one_time_password(server, username, password, &token.0, new_password)?;
    }
    save_session(&dir, server, username, token.0, false)
}

/// (token, must the password be changed first).
fn session_token(client: &Client, username: &str, password: &str) -> CollectResult<(String, bool)> {
    let answer = client.post_json(
        "/api/v1/sessions",
        &json!({ "username": username, "password": password }),
    )?;
    if answer.status != 201 {
        return Err(format!("sign-in refused: {}", problem_text(&answer)));
    }
    let token = answer.body["token"]
        .as_str()
        .ok_or("the server answered no token")?
        .to_string();
    Ok((token, answer.body["password_change_required"] == true))
}

/// Changes a one-time password, asking again while the server refuses the
/// new one (too short, too weak: its reason is shown). Returns a token for
/// the new password: the one the server answers with, else a new sign-in.
fn change_one_time_password(
    server: &str,
    username: &str,
    current: &str,
    token: &str,
    new_password: &prompt::NewPasswordSource,
) -> CollectResult<String> {
    let client = Client::new(server, Some(token.to_string()), 3);
    let mut refused: Option<String> = None;
    for _ in 0..5 {
        let candidate = new_password.ask(refused.as_deref())?;
        let answer = client.post_json(
            "/api/v1/me/password",
            &json!({ "current_password": current, "new_password": candidate }),
        )?;
        match answer.status {
            200 | 201 | 204 => {
                if let Some(fresh) = answer.body["token"].as_str() {
                    return Ok(fresh.to_string());
                }
                let plain = Client::new(server, None, 3);
                let (fresh, still) = session_token(&plain, username, &candidate)?;
                if still {
                    return Err("the server still asks for a password change".into());
                }
                return Ok(fresh);
            }
            422 => refused = Some(reasons(&answer)),
            _ => {
                return Err(format!(
                    "the password change was refused: {}",
                    problem_text(&answer)
                ))
            }
        }
    }
    Err(format!(
        "the password change was refused five times (last: {})",
        refused.unwrap_or_default()
    ))
}

/// The server's reasons in a 422, without pointers: "must be at least …".
fn reasons(answer: &Answer) -> String {
    let list: Vec<&str> = answer.body["errors"]
        .as_array()
        .map(|l| l.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    if list.is_empty() {
        answer.body["detail"].as_str().unwrap_or("").to_string()
    } else {
        list.join("; ")
    }
}

/// Signs in with a device token read from `token_file`, which only its
/// owner may read (the token is as good as a password for months).
pub fn login_with_token(dir: &Path, server: &str, token_file: &Path) -> CollectResult<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_file)
            .map_err(|e| format!("{}: {e}", token_file.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} can be read by other users (mode {:o}); a device token is as good as a \
                 password: run `chmod 600 {}` and sign in again",
                token_file.display(),
                mode & 0o777,
                token_file.display()
            ));
        }
    }
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("{}: {e}", token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(format!(
            "{} is empty: it should hold the device token",
            token_file.display()
        ));
    }
    let dir = Dir::open(dir)?;
    let answer = Client::new(server, Some(token.clone()), 3).get("/api/v1/me")?;
    match answer.status {
        200 => {}
        401 => {
            return Err(
                "the server does not accept this device token (unknown, expired or revoked): \
                 ask your coordinator for a new one"
                    .into(),
            )
        }
        _ => return Err(format!("sign-in refused: {}", problem_text(&answer))),
    }
    let username = answer.body["username"]
        .as_str()
        .ok_or("the server did not say whose token this is")?
        .to_string();
    if answer.body["must_change_password"] == true {
        return Err(format!(
            "{username} still has a one-time password: sign in once with \
             `casesync collect --dir {} login --server {server} --username {username}` to choose \
             your own, then use the device token",
            dir.root().display()
        ));
    }
    save_session(&dir, server, &username, token, true)?;
    Ok(username)
}

fn save_session(
    dir: &Dir,
    server: &str,
    username: &str,
    token: String,
    device_token: bool,
) -> CollectResult<()> {
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
        token,
        device_id,
        device_token,
    };
    dir.write("session.json", &session, true)
}

/// What to say when the server refuses the session (401, or a password
/// that must be changed first): sign in again, and how.
fn signed_out(dir: &Dir, session: &Session, answer: &Answer) -> Option<String> {
    let must_change = answer.body["type"]
        .as_str()
        .is_some_and(|t| t.ends_with("password_change_required"));
    if answer.status != 401 && !must_change {
        return None;
    }
    let how = if session.device_token {
        "--token-file FILE".to_string()
    } else {
        format!("--username {}", session.username)
    };
    let why = if must_change {
        "this account must change its password first".to_string()
    } else {
        format!(
            "the server no longer accepts this collector's sign-in ({})",
            answer.body["detail"]
                .as_str()
                .unwrap_or("expired or revoked")
        )
    };
    Some(format!(
        "{why}: sign in again with `casesync collect --dir {} login --server {} {how}`; nothing queued is lost",
        dir.root().display(),
        session.server
    ))
}

/// A refusal of `what`, in words: sign in again, or the server's problem.
fn refusal(dir: &Dir, session: &Session, answer: &Answer, what: &str) -> String {
    signed_out(dir, session, answer)
        .unwrap_or_else(|| format!("{what} refused: {}", problem_text(answer)))
}

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress_bar(len: usize, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} ({{elapsed}}) {{msg}}"
        ))
        .expect("a valid template"),
    );
    bar
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
            return Err(refusal(&dir, &session, &answer, "sync"));
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
            return Err(refusal(
                &dir,
                &session,
                &answer,
                &format!("form {id} {version}"),
            ));
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
    /// Queue one for each case the last sync gave this collector (every
    /// copy of `count` on each): a follow-up on all of a worker's cases.
    pub each_case: bool,
}

#[derive(Debug)]
pub struct Filled {
    pub instance_id: String,
    pub case_id: Option<String>,
}

/// The synced document of `form_id` (`version`, else the newest published
/// one synced), compiled.
fn synced_form(
    dir: &Dir,
    state: &SyncState,
    form_id: &str,
    version: Option<&str>,
) -> CollectResult<(String, CompiledForm)> {
    let version = match version {
        Some(v) => v.to_string(),
        None => state
            .forms
            .iter()
            .filter(|f| f["form_id"] == form_id && f["status"] == "published")
            .filter_map(|f| f["version"].as_str())
            // Synced oldest first: the newest published is the last.
            .next_back()
            .ok_or_else(|| {
                format!("no published version of {form_id} synced; run `casesync collect pull`")
            })?
            .to_string(),
    };
    let document: Value = dir
        .read(&format!("forms/{form_id}@{version}.json"))?
        .ok_or_else(|| {
            format!("form {form_id} {version} is not synced; run `casesync collect pull`")
        })?;
    let form = CompiledForm::compile(document)
        .map_err(|p| format!("the synced form does not compile: {}", p.join("; ")))?;
    Ok((version, form))
}

/// One problem with an answer, for a person: the field's label first, then
/// where it is and what is wrong (`"Sex" (/child/child_sex): is not …`).
fn explain(fields: &[Field], pointer: &str, message: &str) -> String {
    match relevance::field_at(fields, pointer) {
        Some(field) => format!("\"{}\" ({pointer}): {message}", relevance::label_of(field)),
        None if pointer.is_empty() => message.to_string(),
        None => format!("{pointer}: {message}"),
    }
}

/// A starting answers file for `form_id` (see [`template`]).
pub fn template(dir: &Path, form_id: &str, version: Option<&str>) -> CollectResult<String> {
    let dir = Dir::open(dir)?;
    let state = dir.state()?;
    let (version, form) = synced_form(&dir, &state, form_id, version)?;
    Ok(template::render(
        &form.meta.title,
        form_id,
        &version,
        &form.fields,
    ))
}

/// Fills `form_id` from an answers file (JSON; `//` notes and nulls allowed,
/// see [`template`]) and queues it encrypted.
/// Attachment fields name files relative to the answers file.
pub fn fill(dir: &Path, options: &FillOptions) -> CollectResult<Vec<Filled>> {
    let dir = Dir::open(dir)?;
    let session = dir.session()?;
    let state = dir.state()?;
    let (version, form) = synced_form(&dir, &state, &options.form_id, options.version.as_deref())?;
    if options.each_case && form.meta.case != CaseRole::Updates {
        return Err(format!(
            "{} does not follow up a case: drop --each-case",
            options.form_id
        ));
    }
    if options.each_case && options.case_id.is_some() {
        return Err("give --case or --each-case, not both".into());
    }
    let key = state
        .keys
        .iter()
        .find(|k| k["programme"] == form.meta.programme.as_str())
        .ok_or_else(|| format!("no key for programme {} synced", form.meta.programme))?;
    let kid = key["kid"].as_str().ok_or("a synced key has no kid")?;
    let public = keys::public_key_from_jwk(&key["jwk"]).map_err(|e| e.to_string())?;

    let text = std::fs::read_to_string(&options.answers)
        .map_err(|e| format!("{}: {e}", options.answers.display()))?;
    let mut data =
        template::parse(&text).map_err(|e| format!("{}: {e}", options.answers.display()))?;
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
            .map(|e| explain(&form.fields, &e.pointer, &e.message))
            .collect();
        return Err(format!(
            "{} does not fit {} {version}:\n  {}",
            options.answers.display(),
            options.form_id,
            lines.join("\n  ")
        ));
    }
    if form.meta.case == CaseRole::Updates && options.case_id.is_none() && !options.each_case {
        return Err(format!(
            "{} belongs to a case: give --case (or --each-case)",
            options.form_id
        ));
    }
    if form.meta.case == CaseRole::None && options.case_id.is_some() {
        return Err(format!(
            "{} is not about a case: drop --case",
            options.form_id
        ));
    }
    // The cases the copies are about: the one given, or each synced one.
    let targets: Vec<Option<String>> = if options.each_case {
        let ids: Vec<Option<String>> = state
            .cases
            .iter()
            .filter_map(|c| c["id"].as_str().map(|id| Some(id.to_string())))
            .collect();
        if ids.is_empty() {
            return Err("no case synced to follow up: `casesync collect pull` first".into());
        }
        ids
    } else {
        vec![options.case_id.clone()]
    };
    let declarations: Vec<Value> = files
        .iter()
        .map(|(name, bytes)| AttachmentDeclaration::of(name, bytes).to_json())
        .collect();
    let base_case_version = |case_id: &Option<String>| {
        case_id.as_ref().and_then(|id| {
            state
                .cases
                .iter()
                .find(|c| c["id"] == id.as_str())
                .and_then(|c| c["version"].as_i64())
        })
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut filled = Vec::new();
    let first_number = dir.items_ever_queued()?;
    let copies = options.count.max(1);
    let progress = progress_bar(copies * targets.len(), "encrypting");
    for n in 0..copies * targets.len() {
        let target = &targets[n / copies];
        let instance_id = uuid::Uuid::new_v4().to_string();
        let case_id = match form.meta.case {
            CaseRole::Opens => Some(
                target
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ),
            CaseRole::Updates => target.clone(),
            CaseRole::None => None,
        };
        let base_case_version = base_case_version(target);
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
            supersedes: options.supersedes.clone(),
            queued_at: Some(now.clone()),
        };
        let name = format!("{:09}-{instance_id}.json", first_number + n);
        dir.write(&format!("queue/{name}"), &item, true)?;
        filled.push(Filled {
            instance_id,
            case_id,
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
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
    /// Other addresses of the same deployment (after it moved, or its
    /// several servers): the first is used, the next when it cannot be
    /// reached. Empty: the one signed in to.
    pub servers: Vec<String>,
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
    /// Each item refused by this push, in words (see [`describe_refusal`]).
    pub refusals: Vec<String>,
}

struct Shared<'a> {
    dir: &'a Dir,
    session: &'a Session,
    client: Client,
    progress: ProgressBar,
    /// Set when the server refused the sign-in: pushing stops, and the
    /// person is told to sign in again rather than to wait.
    signed_out: AtomicBool,
    refusals: Mutex<Vec<String>>,
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
    let progress = progress_bar(names.len(), "sending");
    let shared = Shared {
        dir: &dir,
        session: &session,
        client: client_for(
            &session,
            options.servers.first().map(String::as_str),
            options.retries,
        )
        .with_fallbacks(options.servers.get(1..).unwrap_or_default())
        .with_progress(progress.clone()),
        progress,
        signed_out: AtomicBool::new(false),
        refusals: Mutex::new(Vec::new()),
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
    shared.progress.finish_and_clear();
    if let Some(err) = shared.first_error.lock().expect("lock").take() {
        if shared.signed_out.load(Ordering::SeqCst) || !shared.unreachable.load(Ordering::SeqCst) {
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
        refusals: shared.refusals.into_inner().expect("lock"),
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
        if let Some(why) = signed_out(shared.dir, shared.session, &answer) {
            shared.signed_out.store(true, Ordering::SeqCst);
            return Err(why);
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
            if let Some(why) = signed_out(shared.dir, shared.session, &answer) {
                shared.signed_out.store(true, Ordering::SeqCst);
                return Err(why);
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
                shared.note_refusal(name, item);
                shared.progress.inc(1);
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
            shared.progress.inc(1);
        }
    }
    Ok(())
}

impl Shared<'_> {
    fn note_refusal(&self, name: &str, item: &Queued) {
        let text = describe_refusal(self.dir, name, item);
        self.refusals.lock().expect("lock").push(text);
    }
}

/// A refused item in words: which item, and each problem with the field's
/// label from the synced form (never a rule as JSON).
pub fn describe_refusal(dir: &Dir, name: &str, item: &Queued) -> String {
    let number = name.split('-').next().unwrap_or(name);
    let problem = item.problem.clone().unwrap_or(Value::Null);
    let fields = dir
        .read::<Value>(&format!(
            "forms/{}@{}.json",
            item.form_id, item.form_version
        ))
        .ok()
        .flatten()
        .map(|doc| crate::forms::model::fields(&doc))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{number} {} {}: {} {}",
        item.form_id,
        item.form_version,
        problem["status"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        problem["detail"].as_str().unwrap_or("refused")
    )];
    for e in problem["errors"].as_array().into_iter().flatten() {
        let pointer = e["pointer"].as_str().unwrap_or("");
        let message = e["message"].as_str().unwrap_or("");
        // Answers sit under /data in the envelope.
        let line = match pointer.strip_prefix("/data") {
            Some(answer) => explain(&fields, answer, message),
            None => explain(&[], pointer, message),
        };
        lines.push(format!("    {line}"));
    }
    lines.join("\n")
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
            _ => {
                if let Some(why) = signed_out(shared.dir, shared.session, &answer) {
                    shared.signed_out.store(true, Ordering::SeqCst);
                    return Err(why);
                }
                item.problem = Some(answer.body);
                shared.dir.settle(name, item, "failed")?;
                shared.refused.fetch_add(1, Ordering::Relaxed);
                shared.note_refusal(name, item);
                shared.progress.inc(1);
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// What is on the collector: counts, and each queued and refused item.
#[derive(Debug, Default)]
pub struct Status {
    pub sent: usize,
    pub queued: Vec<String>,
    pub refused: Vec<String>,
}

/// Counts of the queue, what was sent and what was refused, and a line for
/// each item still queued or refused: number, form, case, age.
pub fn status(dir: &Path) -> CollectResult<Status> {
    let dir = Dir::open(dir)?;
    let state = dir.state()?;
    let now = chrono::Utc::now();
    let line = |sub: &str, name: &str| -> CollectResult<String> {
        let item: Queued = dir
            .read(&format!("{sub}/{name}"))?
            .ok_or_else(|| format!("{sub}/{name} vanished"))?;
        let case = match &item.case_id {
            None => "no case".to_string(),
            Some(id) => match state
                .cases
                .iter()
                .find(|c| c["id"] == id.as_str())
                .and_then(|c| c["number"].as_str())
            {
                Some(number) => format!("case {number}"),
                None => format!("case {id} (no number synced yet)"),
            },
        };
        let age = item
            .queued_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| format!("filled {} ago", age_in_words(now - t.to_utc())))
            .unwrap_or_default();
        let number = name.split('-').next().unwrap_or(name);
        let mut text = format!(
            "{number}  {} {}  {case}  {age}",
            item.form_id, item.form_version
        );
        if sub == "failed" {
            let detail = describe_refusal(&dir, name, &item);
            // The first line repeats number and form; keep the reasons.
            let reasons: Vec<&str> = detail.lines().collect();
            let why = reasons[0].split_once(": ").map(|(_, w)| w).unwrap_or("");
            text.push_str(&format!("\n    refused: {why}"));
            for reason in &reasons[1..] {
                text.push_str(&format!("\n  {reason}"));
            }
        }
        Ok(text.trim_end().to_string())
    };
    let mut out = Status {
        sent: dir.list("sent")?.len(),
        ..Status::default()
    };
    for name in dir.list("queue")? {
        out.queued.push(line("queue", &name)?);
    }
    for name in dir.list("failed")? {
        out.refused.push(line("failed", &name)?);
    }
    Ok(out)
}

/// The instance ids the server acknowledged: every sent item, and queued
/// ones holding a receipt (their attachments still to go).
pub fn acknowledged(dir: &Path) -> CollectResult<Vec<String>> {
    let dir = Dir::open(dir)?;
    let mut out = Vec::new();
    for sub in ["sent", "queue"] {
        for name in dir.list(sub)? {
            if let Some(item) = dir.read::<Queued>(&format!("{sub}/{name}"))? {
                if item.receipt.is_some() {
                    out.push(item.instance_id);
                }
            }
        }
    }
    Ok(out)
}

fn age_in_words(age: chrono::Duration) -> String {
    let minutes = age.num_minutes().max(0);
    match minutes {
        0 => "under a minute".into(),
        1..=59 => format!("{minutes} min"),
        60..=2879 => format!("{} h", minutes / 60),
        _ => format!("{} days", minutes / 1440),
    }
}

/// Puts refused items back in the queue to be pushed again: `which` names
/// them by number (as `status` shows), instance id or file name; empty
/// means every refused item. With `answers`, the one named item is filled
/// again from that (fixed) answers file — same form and case, a new
/// instance id — and the refused copy is dropped. Returns how many.
pub fn retry(dir_path: &Path, which: &[String], answers: Option<&Path>) -> CollectResult<usize> {
    let dir = Dir::open(dir_path)?;
    let refused = dir.list("failed")?;
    let mut chosen = Vec::new();
    for wanted in which {
        let found = refused
            .iter()
            .find(|name| {
                let (number, rest) = name.split_once('-').unwrap_or((name, ""));
                number.trim_start_matches('0') == wanted.trim_start_matches('0')
                    || rest.trim_end_matches(".json") == wanted
                    || *name == wanted
            })
            .ok_or_else(|| {
                format!("no refused item {wanted}; `casesync collect status` lists them")
            })?;
        chosen.push(found.clone());
    }
    if which.is_empty() {
        chosen = refused;
    }
    if let Some(answers) = answers {
        let [name] = chosen.as_slice() else {
            return Err("--answers replaces one refused item: name it (its number)".into());
        };
        let item: Queued = dir
            .read(&format!("failed/{name}"))?
            .ok_or_else(|| format!("failed/{name} vanished"))?;
        fill(
            dir_path,
            &FillOptions {
                form_id: item.form_id.clone(),
                answers: answers.to_path_buf(),
                version: None,
                case_id: item.case_id.clone(),
                supersedes: item.supersedes.clone(),
                count: 1,
                each_case: false,
            },
        )?;
        dir.remove("failed", name)?;
        return Ok(1);
    }
    for name in &chosen {
        if let Some(mut item) = dir.read::<Queued>(&format!("failed/{name}"))? {
            dir.requeue(name, &mut item)?;
        }
    }
    Ok(chosen.len())
}

/// The `q`-th quantile (0..=1) of `sorted` latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

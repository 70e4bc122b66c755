use std::collections::HashSet;

use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use futures_util::future::join_all;

use crate::app::{AppState, Audited};
use crate::audit::{self, Origin};
use crate::auth::policy;
use crate::cases::views::site_named;
use crate::cpu;
use crate::db::write_tx;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{
    ApiJson, AttachmentBody, AuthUser, Batch, BatchBody, JoseBody, JsonBody,
};
use crate::ingest::attachments::{self, Received};
use crate::ingest::held;
use crate::ingest::{self, Stored};

/// `POST /api/v1/submissions`: one JWE. 201 stored; 200 the same instance
/// was already stored with the same content (a retry); 409 same instance,
/// other content; 400 unreadable; 403 not for this case; 422 invalid.
#[utoipa::path(
    post,
    path = "/submissions",
    tag = "submissions",
    request_body(content = JoseBody, content_type = "application/jose", description = "One JWE in compact serialization (RSA-OAEP-256, A256GCM) whose plaintext is the envelope (docs/api.md)"),
    responses(
        (status = 201, description = "Stored", body = ingest::Receipt),
        (status = 200, description = "The same instance was stored before with the same content: the original receipt", body = ingest::Receipt),
        (status = 409, description = "The instance_id was stored before with other content", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a published form version, wrong programme or case, or the data fails validation (pointers under /data)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such case, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: JoseBody,
) -> AppResult<HttpResponse> {
    policy::submit_forms(&me)?;
    let (forms, keys, limits, who) = (
        state.forms.clone(),
        state.keys.clone(),
        state.submission_limits(),
        me.clone(),
    );
    let prepared = state
        .cpu_db(body.0.len(), move |conn| {
            ingest::prepare(conn, &forms, &keys, &limits, &who, body.0)
        })
        .await?;
    Ok(match state.committer.store(prepared, me, origin).await? {
        Stored::Created(receipt) => HttpResponse::Created().json(receipt),
        Stored::Repeated(receipt) => HttpResponse::Ok().json(receipt),
    })
}

/// What a batch answers: one result per item, in the order sent.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct BatchAnswer {
    results: Vec<BatchItem>,
}

/// What `POST /submissions` would have said of one item.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct BatchItem {
    /// The item's place in `submissions`, from 0.
    index: usize,
    /// 201 stored, 200 a retry, or the problem's status.
    #[schema(minimum = 200, maximum = 599)]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<ingest::Receipt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Problem>)]
    problem: Option<serde_json::Value>,
}

impl BatchItem {
    fn stored(index: usize, status: u16, receipt: ingest::Receipt) -> Self {
        BatchItem {
            index,
            status,
            receipt: Some(receipt),
            problem: None,
        }
    }
}

/// Forms held for a case not seen yet, and those refused when it opened.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HeldAnswer {
    /// How long a form waits for its case before it is listed here.
    pending_case_days: i64,
    held: Vec<held::HeldForm>,
}

/// Most submissions one batch may carry.
pub const MAX_BATCH: usize = 100;

/// `POST /api/v1/submissions/batch`: a phone back in signal uploads its
/// queue in one round trip. Each item is checked and stored (or refused) on
/// its own (a refused item takes nothing else with it); the answer says per item what
/// `POST /submissions` would have said (an item over `max_submission_bytes`
/// is 413 and is not decrypted).
#[utoipa::path(
    post,
    path = "/submissions/batch",
    tag = "submissions",
    request_body = Batch,
    responses(
        (status = 200, description = "Each item's answer, as `POST /submissions` would have given it", body = BatchAnswer),
        (status = 422, description = "No submissions, or more than 100", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn batch(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    body: BatchBody,
) -> AppResult<HttpResponse> {
    // A role that may never submit is refused whole, not item by item.
    policy::submit_forms(&me)?;
    let (forms, keys, limits, who) = (
        state.forms.clone(),
        state.keys.clone(),
        state.submission_limits(),
        me.clone(),
    );
    let prepared = state
        .cpu_db(body.0.len(), move |conn| {
            let items = Batch::parse(&body.0)?.submissions;
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(AppError::invalid_field(
                    "/submissions",
                    format!("must hold 1 to {MAX_BATCH} submissions"),
                ));
            }
            // Each item judged after those before it, as if sent one by one.
            let mut opened = HashSet::new();
            Ok(items
                .into_iter()
                .map(|raw| {
                    let prepared =
                        ingest::prepare_after(conn, &forms, &keys, &limits, &who, raw, &opened);
                    if let Ok(p) = &prepared {
                        opened.extend(p.opens_case());
                    }
                    prepared
                })
                .collect::<Vec<_>>())
        })
        .await?;
    // Queued in order and together, so they are stored in order and
    // usually share one commit.
    let mut answers = Vec::with_capacity(prepared.len());
    for item in prepared {
        answers.push(match item {
            Ok(p) => Ok(state.committer.enqueue(p, me.clone(), origin.clone()).await),
            Err(err) => Err(err),
        });
    }
    let outcomes = join_all(answers.into_iter().map(|answer| async move {
        match answer {
            Ok(Ok(stored)) => stored.await,
            Ok(Err(err)) | Err(err) => Err(err),
        }
    }))
    .await;
    // The batch answers 200, so the refusal middleware cannot see these.
    let refused = audit::refused_items(&outcomes);
    if !refused.is_empty() {
        state
            .db(move |conn| audit::record_batch_refusals(conn, &origin, &me, &refused))
            .await?;
    }
    let results: Vec<_> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| match outcome {
            Ok(Stored::Created(receipt)) => BatchItem::stored(index, 201, receipt),
            Ok(Stored::Repeated(receipt)) => BatchItem::stored(index, 200, receipt),
            Err(err) => {
                if let AppError::Internal(cause) = &err {
                    tracing::error!(%cause, index, "internal error in a batch item");
                }
                BatchItem {
                    index,
                    status: err.status_code().as_u16(),
                    receipt: None,
                    problem: Some(err.problem()),
                }
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(BatchAnswer { results }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HeldQuery {
    /// A site's code or id; all the caller's sites when absent.
    pub site: Option<String>,
}

/// `GET /api/v1/submissions/held?site=`: for coordinators, forms their
/// sites' workers sent about a case not seen for `pending_case_days`, and
/// held forms refused when their case opened (docs/api.md § Held forms).
#[utoipa::path(
    get,
    path = "/submissions/held",
    tag = "submissions",
    params(HeldQuery),
    responses((status = 200, description = "Held forms of the caller's sites", body = HeldAnswer), (status = 422, description = "No such site", body = Problem, content_type = "application/problem+json")),
)]
pub async fn held(
    state: web::Data<AppState>,
    AuthUser(me): AuthUser,
    query: web::Query<HeldQuery>,
) -> AppResult<HttpResponse> {
    policy::manage_cases(&me)?;
    let days = state.settings.pending_case_days;
    let site = query.into_inner().site;
    let listed = state
        .db(move |conn| {
            let site_ids = match site_named(conn, site.as_deref())? {
                Some(site) if !me.is_at_site(&site) => {
                    return Err(AppError::Forbidden(
                        "only the site's coordinators see its held forms".into(),
                    ))
                }
                Some(site) => vec![site],
                None => me.site_ids.clone(),
            };
            held::list(conn, &site_ids, days)
        })
        .await?;
    Ok(HttpResponse::Ok().json(HeldAnswer {
        pending_case_days: days,
        held: listed,
    }))
}

/// A coordinator's dismissal of a quarantined form.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dismissal {
    /// Why, in the coordinator's words (e.g. "the worker sent a corrected
    /// form"); kept in the audit log.
    pub reason: String,
}

/// Longest dismissal reason kept.
const MAX_REASON_CHARS: usize = 500;

/// `POST /api/v1/submissions/held/{instance_id}/dismissal`: a coordinator
/// of a site of its sender takes a quarantined ODK form off the held list,
/// with a reason (audited as `quarantined_form_dismissed`). The form is
/// kept. 204; 404 not one of the caller's sites' forms; 409 not quarantined.
#[utoipa::path(
    post,
    path = "/submissions/held/{instance_id}/dismissal",
    tag = "submissions",
    params(("instance_id" = String, Path)),
    request_body = Dismissal,
    responses((status = 204, description = "Dismissed"), (status = 404, description = "No such quarantined form of the caller's sites", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not quarantined, or already dismissed", body = Problem, content_type = "application/problem+json"), (status = 422, description = "No reason given", body = Problem, content_type = "application/problem+json")),
)]
pub async fn dismiss_held(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    instance_id: web::Path<String>,
    body: ApiJson<Dismissal>,
) -> AppResult<HttpResponse> {
    dismissed(&state, origin, me, instance_id.into_inner(), body.0.reason).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A quarantined form dismissed with `reason` (shared with the console).
pub async fn dismissed(
    state: &web::Data<AppState>,
    origin: Origin,
    me: crate::auth::Principal,
    instance_id: String,
    reason: String,
) -> AppResult<()> {
    policy::manage_cases(&me)?;
    let reason = reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::invalid_field(
            "/reason",
            format!("say in up to {MAX_REASON_CHARS} characters why this form is dismissed"),
        ));
    }
    let who = me.clone();
    state
        .audited(origin, me, "quarantined_form_dismissed", move |conn| {
            held::dismiss(conn, &who, &instance_id)?;
            Ok((
                (),
                Audited::object("submission", instance_id.as_str()).purpose(reason),
            ))
        })
        .await
}

/// A quarantined form's answers as sent, each beside what its form
/// version says of it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HeldFormAnswers {
    instance_id: String,
    form_id: String,
    form_version: String,
    form_title: String,
    /// The case it names (it joined none).
    case_id: Option<String>,
    submitted_by: String,
    username: String,
    #[serde(serialize_with = "crate::json::utc")]
    received_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    completed_at: chrono::NaiveDateTime,
    /// `quarantined`, `corrected` or `dismissed`.
    status: String,
    /// Once corrected: the `instance_id` of the accepted version.
    #[serde(skip_serializing_if = "Option::is_none")]
    corrected_as: Option<String>,
    /// Every problem, as on the held list (pointers under `/data`).
    problems: Vec<crate::error::FieldError>,
    /// Problems about no single answer.
    general_problems: Vec<crate::error::FieldError>,
    /// The answers in form order, each with the problems about it; an
    /// answer a problem says is missing is listed with `unanswered`.
    answers: Vec<HeldAnswerLine>,
    /// The answers as the phone sent them (the envelope's `data`): start a
    /// correction from these.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// One line of a quarantined form's answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HeldAnswerLine {
    /// Where the answer is in `data` (a JSON pointer).
    pointer: String,
    /// How deep in sections and repeat items (0 at the top).
    depth: usize,
    label: String,
    /// The answer as text (a choice by its title; `yes`/`no`); absent
    /// for a heading and an unanswered question.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// A section, repeat group or item: what follows is in it.
    heading: bool,
    /// Not answered (listed because a problem is about it).
    unanswered: bool,
    /// What the form version says of this answer.
    problems: Vec<String>,
}

impl From<held::HeldReading> for HeldFormAnswers {
    fn from(r: held::HeldReading) -> Self {
        use crate::forms::answers::Shown;
        let answers = r
            .answers
            .into_iter()
            .map(|placed| {
                let line = placed.line;
                let value = match &line.value {
                    Shown::Text(text) => Some(text.clone()),
                    Shown::Yes => Some("yes".into()),
                    Shown::No => Some("no".into()),
                    Shown::Heading | Shown::Unanswered => None,
                };
                HeldAnswerLine {
                    heading: line.value == Shown::Heading,
                    unanswered: line.value == Shown::Unanswered,
                    pointer: line.pointer,
                    depth: line.depth,
                    label: line.label,
                    value,
                    problems: placed.problems,
                }
            })
            .collect();
        HeldFormAnswers {
            instance_id: r.instance_id,
            form_id: r.form_id,
            form_version: r.form_version,
            form_title: r.form_title,
            case_id: r.case_id,
            submitted_by: r.submitted_by,
            username: r.username,
            received_at: r.received_at,
            completed_at: r.completed_at,
            status: r.status,
            corrected_as: r.corrected_as,
            problems: r.problems,
            general_problems: r.general,
            answers,
            data: r.data,
        }
    }
}

/// Only coordinators read or correct a held form: to anyone else it is
/// not there (404, audited as a refusal), as to another site's.
fn coordinates(me: &crate::auth::Principal) -> AppResult<()> {
    policy::manage_cases(me).map_err(|_| AppError::Hidden("no such quarantined form".into()))
}

/// A quarantined form read by a coordinator of its sender's sites,
/// audited as `quarantined_form_read` (shared with the console).
pub async fn held_form(
    state: &web::Data<AppState>,
    origin: Origin,
    me: crate::auth::Principal,
    instance_id: String,
) -> AppResult<held::HeldReading> {
    coordinates(&me)?;
    let forms = state.forms.clone();
    state
        .read_audited(origin, me, "quarantined_form_read", move |conn, me| {
            let reading = held::read(conn, &forms, me, &instance_id)?;
            let what = Audited::object("submission", reading.instance_id.as_str())
                .detail(reading.status.as_str());
            Ok((reading, Some(what)))
        })
        .await
}

/// `GET /api/v1/submissions/held/{instance_id}`: a quarantined form's
/// answers as the phone sent them, each with the problems its form version
/// finds in it, for the coordinators of its sender's sites (audited as
/// `quarantined_form_read`); 404 for anyone else.
#[utoipa::path(
    get,
    path = "/submissions/held/{instance_id}",
    tag = "submissions",
    params(("instance_id" = String, Path)),
    responses((status = 200, description = "The answers, the problems beside them", body = HeldFormAnswers), (status = 404, description = "No such quarantined form of the caller's sites", body = Problem, content_type = "application/problem+json")),
)]
pub async fn held_answers(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    instance_id: web::Path<String>,
) -> AppResult<HttpResponse> {
    let reading = held_form(&state, origin, me, instance_id.into_inner()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(HeldFormAnswers::from(reading)))
}

/// A coordinator's corrected answers to a quarantined form.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldCorrection {
    /// The form's answers, whole, for the same form version (the envelope's
    /// `data`): usually the held form's `data` with what was wrong fixed.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Corrects quarantined form `instance_id` with `data` (shared with the
/// console): checked on the CPU pool as a submission of its sender, then
/// stored as its accepted version in one write transaction with its audit
/// row (`quarantined_form_corrected`, the coordinator as actor).
pub async fn corrected(
    state: &web::Data<AppState>,
    origin: Origin,
    me: crate::auth::Principal,
    instance_id: String,
    body: web::BytesMut,
) -> AppResult<Stored> {
    coordinates(&me)?;
    let (forms, limits, who) = (state.forms.clone(), state.submission_limits(), me.clone());
    let correction = state
        .cpu_db(body.len(), move |conn| {
            let body: HeldCorrection = crate::http::extract::parse_json(&body)?;
            held::prepare_correction(conn, &forms, &limits, &who, &instance_id, body.data)
        })
        .await?;
    state
        .db(move |conn| {
            match write_tx(conn, |conn| {
                held::accept_correction(conn, &me, &origin, &correction)
            }) {
                Ok(stored) => Ok(stored),
                Err(failure) => ingest::settle_race(conn, &correction.prepared, failure),
            }
        })
        .await
}

/// `POST /api/v1/submissions/held/{instance_id}/correction`: a coordinator
/// of a site of its sender sends the quarantined form's answers corrected,
/// for the same form version. Checked as any submission of its sender
/// (422 with the problems under `/data` when they still do not fit), then
/// stored by the usual path as the form's accepted version (a submission
/// of its own, `instance_id` derived from the held one's; an edit's
/// `supersedes` kept): 201 with its receipt; 200 the same correction again
/// (nothing changes). The held form is kept as sent, status `corrected`.
#[utoipa::path(
    post,
    path = "/submissions/held/{instance_id}/correction",
    tag = "submissions",
    params(("instance_id" = String, Path)),
    request_body = HeldCorrection,
    responses(
        (status = 201, description = "Accepted: the receipt of the stored version", body = ingest::Receipt),
        (status = 200, description = "The same correction was accepted before: its receipt", body = ingest::Receipt),
        (status = 404, description = "No such quarantined form of the caller's sites", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dismissed, not quarantined, corrected before with other answers, or its sender may no longer submit for its case", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The answers still do not fit the form version (pointers under /data)", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn correct_held(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    instance_id: web::Path<String>,
    body: JsonBody,
) -> AppResult<HttpResponse> {
    let stored = corrected(&state, origin, me, instance_id.into_inner(), body.0).await?;
    Ok(match stored {
        Stored::Created(receipt) => HttpResponse::Created().json(receipt),
        Stored::Repeated(receipt) => HttpResponse::Ok().json(receipt),
    })
}

/// `PUT /api/v1/submissions/{instance_id}/attachments/{name}`: one declared
/// attachment as a JWE. 201 stored; 200 already stored; 404 not declared;
/// 422 not the declared size or sha256.
#[utoipa::path(
    put,
    path = "/submissions/{instance_id}/attachments/{name}",
    tag = "submissions",
    params(("instance_id" = uuid::Uuid, Path, description = "The submission"), ("name" = String, Path, description = "The attachment, as the envelope declared it")),
    request_body(content = JoseBody, content_type = "application/jose", description = "The file as one JWE in compact serialization"),
    responses(
        (status = 201, description = "Stored", body = attachments::AttachmentReceipt),
        (status = 200, description = "Already stored", body = attachments::AttachmentReceipt),
        (status = 404, description = "No such submission or declared attachment, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the declared size or sha256", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn put_attachment(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    path: web::Path<(uuid::Uuid, String)>,
    body: AttachmentBody,
) -> AppResult<HttpResponse> {
    let (instance_id, name) = path.into_inner();
    let keys = state.keys.clone();
    let received = state
        .cpu_db(body.0.len(), move |conn| {
            attachments::receive(
                conn,
                &keys,
                &me,
                &origin,
                &instance_id.to_string(),
                &name,
                &body.0,
            )
        })
        .await?;
    Ok(match received {
        Received::Created(receipt) => HttpResponse::Created().json(receipt),
        Received::Repeated(receipt) => HttpResponse::Ok().json(receipt),
    })
}

/// `GET /api/v1/submissions/{instance_id}/attachments/{name}`: the file,
/// decrypted, for those who may read the submission (audited).
#[utoipa::path(
    get,
    path = "/submissions/{instance_id}/attachments/{name}",
    tag = "submissions",
    params(("instance_id" = uuid::Uuid, Path, description = "The submission"), ("name" = String, Path, description = "The attachment, as the envelope declared it")),
    responses(
        (status = 200, description = "The file, decrypted, with its declared media type", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such attachment, or one the caller may not see", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_attachment(
    state: web::Data<AppState>,
    origin: Origin,
    AuthUser(me): AuthUser,
    path: web::Path<(uuid::Uuid, String)>,
) -> AppResult<HttpResponse> {
    let (instance_id, name) = path.into_inner();
    let keys = state.keys.clone();
    let file_name = name.clone();
    let opened = state
        .cpu_db(cpu::HEAVY_BYTES + 1, move |conn| {
            attachments::open(conn, &keys, &me, &origin, &instance_id.to_string(), &name)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(opened.media_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(opened.bytes))
}

//! The OpenRosa front door for ODK Collect (docs/odk.md, "The OpenRosa
//! endpoints"), per programme at `/odk/{programme}` and, for phones set up
//! by a link, `/odk/key/{token}/{programme}`: `formList`, the XForms, their
//! manifests, and `submission`. Thin handlers: the forms are `odk::store`'s,
//! an upload goes through `ingest::odk` into the same pipeline as a JWE.
//! Every answer carries `X-OpenRosa-Version: 1.0`; errors are
//! `<OpenRosaResponse>` bodies Collect shows as they are, so they never
//! hold case data.

use actix_multipart::Multipart;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::StreamExt;
use quick_xml::escape::{escape, partial_escape};

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{policy, sites, tokens, Principal};
use crate::error::AppError;
use crate::http::extract;
use crate::ingest::odk::{Outcome, Upload};
use crate::ingest::{self};
use crate::odk::store::{self, Listing};

mod manifest;

/// The routes, under both prefixes; the key form first, so `key` is never
/// read as a programme.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/odk/key/{token}/{programme}", "/odk/{programme}"] {
        cfg.service(
            web::scope(prefix)
                .wrap(DefaultHeaders::new().add(("X-OpenRosa-Version", "1.0")))
                .route("/formList", web::get().to(form_list))
                .route(
                    "/forms/{form_id}/manifest",
                    web::get().to(manifest::manifest),
                )
                .route("/entities/{file}", web::get().to(manifest::entity_list))
                .route(
                    "/entities/{dataset}/integrity",
                    web::get().to(manifest::integrity),
                )
                .route("/forms/{file}", web::get().to(form))
                .route("/submission", web::head().to(submission_head))
                .route("/submission", web::post().to(submission)),
        );
    }
}

const XML: &str = "text/xml; charset=utf-8";

/// An error as Collect reads one: the status, `<OpenRosaResponse>` with
/// `nature="error"`, and on 401 the Basic challenge Collect waits for
/// before it sends credentials.
#[derive(Debug)]
pub struct OpenRosaError(pub AppError);

impl From<AppError> for OpenRosaError {
    fn from(err: AppError) -> Self {
        OpenRosaError(err)
    }
}

impl std::fmt::Display for OpenRosaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for OpenRosaError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(cause) = &self.0 {
            tracing::error!(%cause, "internal error on the OpenRosa endpoint");
        }
        let problem = self.0.problem();
        let mut message = problem["detail"]
            .as_str()
            .or(problem["title"].as_str())
            .unwrap_or("refused")
            .to_string();
        if let Some(errors) = problem["errors"].as_array() {
            for e in errors.iter().take(5) {
                message.push_str(&format!(
                    "; {} {}",
                    e["pointer"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
        }
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header(("X-OpenRosa-Version", "1.0"));
        if self.status_code() == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"casesync\""));
        }
        res.content_type(XML).body(response_body("error", &message))
    }
}

type Answer = Result<HttpResponse, OpenRosaError>;

fn response_body(nature: &str, message: &str) -> String {
    format!(
        "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"0\"><message nature=\"{nature}\">{}</message></OpenRosaResponse>",
        partial_escape(message)
    )
}

/// Who is calling, for which programme, and the address their phone
/// reaches this programme's endpoint at.
struct Caller {
    who: Principal,
    programme: String,
    base: String,
}

fn basic(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Authenticates the request: the token in the path, else HTTP Basic
/// (username and device token), else a bearer token (a browser page of
/// this server, the API's own clients). Then the caller must be one who
/// fills forms, at a site of the programme.
async fn caller(req: &HttpRequest) -> Result<Caller, OpenRosaError> {
    let state = extract::state(req)?;
    let programme = req.match_info().get("programme").unwrap_or("").to_string();
    if !sites::PROGRAMMES.contains(&programme.as_str()) {
        return Err(AppError::NotFound("no such programme".into()).into());
    }
    let in_path = req.match_info().get("token").map(str::to_string);
    let (basic, bearer) = (basic(req), extract::bearer_token(req));
    let p = programme.clone();
    // One trip to the database for who is calling and whether they work
    // in this programme: every upload asks both.
    let (found, works_here) = state
        .db(move |conn| {
            let found = match (in_path, basic, bearer) {
                (Some(token), _, _) => tokens::authenticate_device(conn, None, &token)?,
                (None, Some((user, password)), _) => {
                    tokens::authenticate_device(conn, Some(&user), &password)?
                }
                (None, None, Some(token)) => tokens::authenticate(conn, &token)?,
                (None, None, None) => None,
            };
            let works_here = match &found {
                Some((who, _)) => ingest::works_in_programme(conn, who, &p)?,
                None => false,
            };
            Ok((found, works_here))
        })
        .await?;
    let (who, stale) = found.ok_or_else(|| {
        AppError::Unauthorized(
            "sign in with your username and the phone's device token (ask your coordinator)".into(),
        )
    })?;
    extract::note_token_use(&state, &who, stale);
    tracing::Span::current().record("user_id", who.user_id.as_str());
    req.extensions_mut().insert(who.clone());
    if who.must_change_password {
        return Err(AppError::PasswordChangeRequired.into());
    }
    policy::submit_forms(&who)?;
    if !works_here {
        return Err(AppError::Forbidden(format!(
            "you work at no site of programme {programme}; ask your coordinator to set up the phone for your programme"
        ))
        .into());
    }
    let root = match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        // Without public_url, links echo how this caller reached us: https
        // only when that is known (a loopback peer may be plain HTTP).
        None => {
            let scheme = match extract::transport(req, &state.settings) {
                extract::Transport::Tls => "https",
                _ => "http",
            };
            format!("{scheme}://{}", req.connection_info().host())
        }
    };
    let base = match req.match_info().get("token") {
        Some(token) => format!("{root}/odk/key/{token}/{programme}"),
        None => format!("{root}/odk/{programme}"),
    };
    Ok(Caller {
        who,
        programme,
        base,
    })
}

/// What `formList` offers a phone of `programme` (no XForm bytes).
async fn current_forms(req: &HttpRequest, programme: &str) -> Result<Vec<Listing>, OpenRosaError> {
    let state = extract::state(req)?;
    let programme = programme.to_string();
    Ok(state
        .db(move |conn| store::offered(conn, &programme))
        .await?)
}

fn no_such_form() -> OpenRosaError {
    AppError::NotFound("no such form for this programme".into()).into()
}

#[derive(serde::Deserialize)]
struct FormListQuery {
    #[serde(rename = "formID")]
    form_id: Option<String>,
}

/// `GET …/formList[?formID=X]`: the newest XForm of each form of the
/// programme, with the md5 of the exact bytes `downloadUrl` serves.
async fn form_list(req: HttpRequest, query: web::Query<FormListQuery>) -> Answer {
    let caller = caller(&req).await?;
    let forms = current_forms(&req, &caller.programme).await?;
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><xforms xmlns=\"http://openrosa.org/xforms/xformsList\">",
    );
    for xform in forms
        .iter()
        .filter(|x| query.form_id.as_ref().is_none_or(|id| *id == x.form_id))
    {
        // The title is already escaped XML text in the XForm.
        body.push_str(&format!(
            "<xform><formID>{id}</formID><name>{name}</name><version>{version}</version><hash>md5:{md5}</hash><downloadUrl>{base}/forms/{id}.xml</downloadUrl>",
            id = escape(&xform.form_id),
            name = escape(&xform.title),
            version = escape(&xform.odk_version),
            md5 = xform.md5,
            base = escape(&caller.base),
        ));
        // Only a form with media has a manifest (the case list).
        if xform.case_list {
            body.push_str(&format!(
                "<manifestUrl>{base}/forms/{id}/manifest</manifestUrl>",
                id = escape(&xform.form_id),
                base = escape(&caller.base),
            ));
        }
        body.push_str("</xform>");
    }
    body.push_str("</xforms>");
    Ok(HttpResponse::Ok().content_type(XML).body(body))
}

/// `GET …/forms/{formID}.xml`: the stored bytes, never made again.
async fn form(req: HttpRequest) -> Answer {
    let caller = caller(&req).await?;
    let file = req.match_info().get("file").unwrap_or("");
    let form_id = file.strip_suffix(".xml").ok_or_else(no_such_form)?;
    let (programme, form_id) = (caller.programme.clone(), form_id.to_string());
    let xform = extract::state(&req)?
        .db(move |conn| store::offered_one(conn, &programme, &form_id))
        .await?
        .ok_or_else(no_such_form)?;
    Ok(HttpResponse::Ok().content_type(XML).body(xform.xml))
}

/// The most an upload may carry: the form and one attachment at the most
/// (Collect splits larger ones), what `HEAD …/submission` announces.
fn accept_length(state: &AppState) -> usize {
    state.settings.max_submission_bytes + state.settings.max_attachment_bytes as usize
}

/// Multipart headers and boundaries around the parts.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// `HEAD …/submission`: 204, which Collect takes as "an OpenRosa
/// endpoint", with the largest upload it may send in one request.
async fn submission_head(req: HttpRequest, state: web::Data<AppState>) -> Answer {
    caller(&req).await?;
    Ok(HttpResponse::NoContent()
        .insert_header(("X-OpenRosa-Accept-Content-Length", accept_length(&state)))
        .finish())
}

/// Reads the multipart upload part by part, each within its limit and all
/// within the total; a part cut short is a 400.
async fn read_upload(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(Option<Vec<u8>>, Vec<(String, Vec<u8>)>, bool), AppError> {
    let total_limit = accept_length(state) + MULTIPART_OVERHEAD;
    // An encrypted file is at most one AES block longer than the plain one.
    let xml_limit = state.settings.max_submission_bytes + 16;
    let file_limit = xml_limit.max(state.settings.max_attachment_bytes as usize + 16);
    let mut total = 0usize;
    let (mut xml, mut files, mut incomplete) = (None, Vec::new(), false);
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(|e| {
            AppError::bad_request(format!("the upload is not well-formed multipart: {e}"))
        })?;
        let name = field.name().unwrap_or("").to_string();
        let limit = if name == "xml_submission_file" {
            xml_limit
        } else {
            file_limit
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| {
                AppError::bad_request(format!("the upload was cut short or is malformed: {e}"))
            })?;
            total += chunk.len();
            if total > total_limit {
                return Err(AppError::PayloadTooLarge { limit: total_limit });
            }
            if bytes.len() + chunk.len() > limit {
                return Err(AppError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "xml_submission_file" if xml.is_some() => {
                return Err(AppError::bad_request(
                    "the upload has two xml_submission_file parts",
                ))
            }
            "xml_submission_file" => xml = Some(bytes),
            "*isIncomplete*" => incomplete = bytes.trim_ascii() == b"yes",
            "" => {
                return Err(AppError::bad_request(
                    "the upload has a part without a name",
                ))
            }
            _ => files.push((name, bytes)),
        }
    }
    Ok((xml, files, incomplete))
}

#[derive(serde::Deserialize)]
struct SubmissionQuery {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
}

/// `POST …/submission`: 201 stored (and for a resend of the same form);
/// 202 stored but held for a coordinator (answers the form version
/// refuses: a sent form cannot be fixed on the phone), or a split
/// upload's part; 400 unreadable, 401, 403 not for this case, 404 unknown form or
/// version, 409 same instanceID with other content, 413 too large.
async fn submission(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    query: web::Query<SubmissionQuery>,
    multipart: Multipart,
) -> Answer {
    let caller = caller(&req).await?;
    let now = crate::time::now();
    if state.odk_forms.prune_due(now) {
        let (days, at) = (state.settings.odk_split_upload_days, origin.clone());
        state
            .db(move |conn| ingest::odk::prune_and_audit(conn, days, &at, now))
            .await?;
    }
    let (xml, files, incomplete) = read_upload(&state, multipart).await?;
    let xml =
        xml.ok_or_else(|| AppError::bad_request("the upload has no xml_submission_file part"))?;
    let upload = Upload {
        programme: caller.programme.clone(),
        xml,
        files,
        device_id: query.into_inner().device_id,
        incomplete,
        plaintext_allowed: state.settings.odk_allow_plaintext
            && extract::over_tls(&req, &state.settings),
    };
    let size = upload.xml.len() + upload.files.iter().map(|(_, b)| b.len()).sum::<usize>();
    let (forms, odk_forms, keys, limits, who) = (
        state.forms.clone(),
        state.odk_forms.clone(),
        state.keys.clone(),
        state.submission_limits(),
        caller.who.clone(),
    );
    let outcome = state
        .cpu_db(size, move |conn| {
            ingest::odk::prepare(conn, &forms, &odk_forms, &keys, &limits, &who, upload)
        })
        .await?;
    let (prepared, split) = match outcome {
        Outcome::Ready(prepared, split) => (*prepared, split),
        // Collect counts 202 as sent and goes on with the next part.
        Outcome::Waiting => {
            return Ok(HttpResponse::Accepted()
                .content_type(XML)
                .body(response_body("", "Received; waiting for the other files")))
        }
    };
    let held = prepared.problems().map(held_message);
    // Stored or already stored with the same content: both are Collect's
    // success (it counts only 201 and 202; never 200).
    let receipt = match state.committer.store(prepared, caller.who, origin).await? {
        ingest::Stored::Created(r) | ingest::Stored::Repeated(r) => r,
    };
    if let Some(instance_id) = split {
        state
            .db(move |conn| {
                crate::db::write_tx(conn, |conn| ingest::odk::forget_parts(conn, &instance_id))
            })
            .await?;
    }
    if [ingest::QUARANTINED, ingest::DISMISSED].contains(&receipt.status.as_str()) {
        // Stored, not processed: 202, which Collect counts as sent.
        let message = held.unwrap_or_else(|| held_message(&[]));
        return Ok(HttpResponse::Accepted()
            .content_type(XML)
            .body(response_body("", &message)));
    }
    Ok(HttpResponse::Created()
        .content_type(XML)
        .body(response_body("", "Received")))
}

/// What Collect shows for a form held for a coordinator: what to do, and
/// where the answers do not fit (places and the validator's words, never
/// an answer).
fn held_message(problems: &[crate::error::FieldError]) -> String {
    let mut message = String::from(
        "Received, held for your coordinator: some answers do not fit the form, so it is not in the case yet; tell your coordinator",
    );
    for problem in problems.iter().take(5) {
        message.push_str(&format!("; {} {}", problem.pointer, problem.message));
    }
    if problems.len() > 5 {
        message.push_str(&format!("; and {} more", problems.len() - 5));
    }
    message
}

//! Forms (admins): every form with its versions and draft, one form's
//! versions with the diff between any two, uploading a draft (a JSON
//! Schema file or pasted text), publishing it, retiring a version. Each
//! read and change is the API's (`api::forms`: the same checks, the same
//! `form_draft_uploaded`, `form_published`, `form_retired` audit rows);
//! every other role gets the 403 page, as the API refuses them changes.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::NaiveDateTime;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::policy;
use crate::error::{AppError, FieldError};
use crate::forms::diff::{Change, Diff};
use crate::forms::{registry, FormId, FormRef};
use crate::http::api::forms::{compared, draft_published, draft_uploaded, version_retired};
use crate::programmes::Programmes;

use super::i18n::Catalogue;
use super::session::{Session, WebUser};
use super::{see_other, Chrome, WebError};

/// Whether the header links to the forms pages (admins only).
pub fn may_see(role: &str) -> bool {
    role == "role.admin"
}

/// The console's one access rule for these pages: the API's rule for
/// changing forms (`policy::administer`).
fn admin(session: &Session) -> Result<(), WebError> {
    Ok(policy::administer(&session.principal, "manage forms")?)
}

/// A UTC time in the programme's zone, as the console writes times.
fn local(at: NaiveDateTime, programme: &str) -> String {
    let at = at.and_utc();
    match Programmes::shipped().get(programme) {
        Some(p) => at
            .with_timezone(&p.calendar.time_zone)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        None => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

pub struct VersionLine {
    pub version: String,
    /// A catalogue key: `forms.published` or `forms.retired`.
    pub status: &'static str,
    pub published_at: String,
    pub retired_at: Option<String>,
    pub current: bool,
}

impl VersionLine {
    /// Its status as a class name, for the style sheet and the page.
    pub fn class(&self) -> &'static str {
        if self.status == "forms.published" {
            "published"
        } else {
            "retired"
        }
    }
}

pub struct DraftLine {
    pub version: String,
    pub uploaded_at: String,
}

pub struct FormLine {
    pub id: String,
    pub programme: String,
    pub title: String,
    /// Oldest first, as published.
    pub versions: Vec<VersionLine>,
    pub draft: Option<DraftLine>,
}

impl FormLine {
    /// Whether `version` is one of this form's published or retired ones.
    fn has(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.version == version)
    }
}

/// Every form (the API's list) with its draft, new forms' drafts too.
async fn all_forms(state: &AppState) -> Result<Vec<FormLine>, WebError> {
    let (forms, drafts) = state
        .db(|conn| Ok((registry::list(conn)?, registry::drafts(conn)?)))
        .await?;
    let mut lines: Vec<FormLine> = forms
        .into_iter()
        .map(|f| FormLine {
            versions: f
                .versions
                .iter()
                .map(|v| VersionLine {
                    version: v.version.clone(),
                    status: if v.status == registry::PUBLISHED {
                        "forms.published"
                    } else {
                        "forms.retired"
                    },
                    published_at: local(v.published_at, &f.programme),
                    retired_at: v.retired_at.map(|at| local(at, &f.programme)),
                    current: f.current_version.as_deref() == Some(v.version.as_str()),
                })
                .collect(),
            id: f.id,
            programme: f.programme,
            title: f.title,
            draft: None,
        })
        .collect();
    for d in drafts {
        let line = DraftLine {
            version: d.version,
            uploaded_at: local(d.uploaded_at, &d.programme),
        };
        match lines.iter_mut().find(|f| f.id == d.form_id) {
            Some(form) => form.draft = Some(line),
            None => lines.push(FormLine {
                id: d.form_id,
                programme: d.programme,
                title: d.title,
                versions: Vec::new(),
                draft: Some(line),
            }),
        }
    }
    Ok(lines)
}

#[derive(Template)]
#[template(path = "forms.html")]
struct FormsPage {
    chrome: Chrome,
    forms: Vec<FormLine>,
}

/// `GET /forms`: every form, its versions and draft, and the upload form.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    admin(&session)?;
    let forms = all_forms(&state).await?;
    super::page(
        StatusCode::OK,
        &FormsPage {
            chrome: Chrome::signed_in(&req, &session),
            forms,
        },
    )
}

/// One line of a diff as the page shows it: where, what, before, after.
pub struct DiffLine {
    /// A field's path; empty for the form itself.
    pub field: String,
    /// A catalogue key naming what changed.
    pub what: &'static str,
    /// The option concerned, for an option's label.
    pub option: Option<String>,
    pub before: String,
    pub after: String,
}

/// A value as the diff shows it: text as it is, the rest as JSON, nothing
/// as empty.
fn shown<T: serde::Serialize>(value: &Option<T>) -> String {
    match value.as_ref().map(serde_json::to_value) {
        Some(Ok(Value::String(s))) => s,
        // `x-labels`: each language and its label.
        Some(Ok(Value::Object(labels))) if labels.values().all(Value::is_string) => labels
            .iter()
            .map(|(lang, label)| format!("{lang}: {}", label.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; "),
        Some(Ok(Value::Null)) | None => String::new(),
        Some(Ok(other)) => other.to_string(),
        Some(Err(_)) => String::new(),
    }
}

fn push_change<T: serde::Serialize>(
    out: &mut Vec<DiffLine>,
    field: &str,
    what: &'static str,
    option: Option<&Value>,
    change: &Change<T>,
) {
    if let Some((before, after)) = change {
        out.push(DiffLine {
            field: field.to_string(),
            what,
            option: option.map(|v| shown(&Some(v))),
            before: shown(before),
            after: shown(after),
        });
    }
}

/// The domain's diff (the API's `/diff` body) as lines for a table.
fn diff_lines(diff: &Diff, t: &Catalogue) -> Vec<DiffLine> {
    let mut out = Vec::new();
    push_change(&mut out, "", "forms.what_title", None, &diff.title);
    push_change(
        &mut out,
        "",
        "forms.what_description",
        None,
        &diff.description,
    );
    push_change(&mut out, "", "forms.what_labels", None, &diff.labels);
    for path in &diff.added {
        out.push(DiffLine {
            field: path.clone(),
            what: "forms.what_added",
            option: None,
            before: String::new(),
            after: String::new(),
        });
    }
    for path in &diff.removed {
        out.push(DiffLine {
            field: path.clone(),
            what: "forms.what_removed",
            option: None,
            before: String::new(),
            after: String::new(),
        });
    }
    let values = |list: &[Value]| {
        list.iter()
            .map(|v| shown(&Some(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let yes_no = |b: bool| t.s(if b { "forms.yes" } else { "forms.no" }).to_string();
    for c in &diff.changed {
        let field = c.path.as_str();
        push_change(&mut out, field, "forms.what_title", None, &c.title);
        push_change(
            &mut out,
            field,
            "forms.what_description",
            None,
            &c.description,
        );
        push_change(&mut out, field, "forms.what_labels", None, &c.labels);
        if let Some((before, after)) = &c.kind {
            push_change(
                &mut out,
                field,
                "forms.what_kind",
                None,
                &Some((Some(*before), Some(*after))),
            );
        }
        if let Some((before, after)) = c.required {
            out.push(DiffLine {
                field: field.to_string(),
                what: "forms.what_required",
                option: None,
                before: yes_no(before),
                after: yes_no(after),
            });
        }
        if c.relevant_changed.is_some() {
            out.push(DiffLine {
                field: field.to_string(),
                what: "forms.what_relevant",
                option: None,
                before: String::new(),
                after: String::new(),
            });
        }
        if !c.options_added.is_empty() {
            out.push(DiffLine {
                field: field.to_string(),
                what: "forms.what_options_added",
                option: None,
                before: String::new(),
                after: values(&c.options_added),
            });
        }
        if !c.options_removed.is_empty() {
            out.push(DiffLine {
                field: field.to_string(),
                what: "forms.what_options_removed",
                option: None,
                before: values(&c.options_removed),
                after: String::new(),
            });
        }
        for o in &c.options_relabelled {
            push_change(
                &mut out,
                field,
                "forms.what_option_title",
                Some(&o.value),
                &o.title,
            );
            push_change(
                &mut out,
                field,
                "forms.what_option_labels",
                Some(&o.value),
                &o.labels,
            );
        }
    }
    out
}

#[derive(Deserialize, Default)]
pub struct FormQuery {
    from: Option<String>,
    to: Option<String>,
    /// What was just done, for the page to say so.
    uploaded: Option<String>,
    published: Option<String>,
    retired: Option<String>,
}

pub struct Compared {
    pub from: String,
    pub to: String,
    pub lines: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "form.html")]
struct FormPage {
    chrome: Chrome,
    form: FormLine,
    from: String,
    to: String,
    compared: Option<Compared>,
    /// A catalogue key and the version it concerns: what was just done.
    done: Option<(&'static str, String)>,
    /// Why the last change was refused (a published version string taken).
    refused: Option<String>,
}

/// The page of form `id`; the diff `from`→`to` when both are versions of
/// it (by default the one before the newest → the newest).
async fn form_page(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    id: FormId,
    query: FormQuery,
    refused: Option<String>,
) -> Result<HttpResponse, WebError> {
    let form = all_forms(state)
        .await?
        .into_iter()
        .find(|f| f.id == id.as_str())
        .ok_or_else(|| AppError::NotFound(format!("there is no form {id:?}")))?;
    let newest = |back: usize| {
        form.versions
            .len()
            .checked_sub(back)
            .map(|i| form.versions[i].version.clone())
    };
    let from = query
        .from
        .filter(|v| form.has(v))
        .or_else(|| newest(2))
        .unwrap_or_default();
    let to = query
        .to
        .filter(|v| form.has(v))
        .or_else(|| newest(1))
        .unwrap_or_default();
    let t = Catalogue::of(req);
    let compared = if form.has(&from) && form.has(&to) {
        let (_, _, diff) = compared(state, id, from.clone(), to.clone()).await?;
        Some(Compared {
            from: from.clone(),
            to: to.clone(),
            lines: diff_lines(&diff, t),
        })
    } else {
        None
    };
    // Said only of a version the form has: a link cannot make the page
    // claim what did not happen.
    let draft_version = form.draft.as_ref().map(|d| d.version.as_str());
    let done = (query.published.map(|v| ("forms.published_done", v)))
        .or(query.retired.map(|v| ("forms.retired_done", v)))
        .filter(|(_, v)| form.has(v))
        .or(query
            .uploaded
            .filter(|v| Some(v.as_str()) == draft_version)
            .map(|v| ("forms.uploaded_done", v)));
    let status = if refused.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    super::page(
        status,
        &FormPage {
            chrome: Chrome::signed_in(req, session),
            form,
            from,
            to,
            compared,
            done,
            refused,
        },
    )
}

/// `GET /forms/{id}[?from=&to=]`: the form's versions, its draft, the diff.
pub async fn form(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
    id: web::Path<FormId>,
    query: web::Query<FormQuery>,
) -> Result<HttpResponse, WebError> {
    admin(&session)?;
    form_page(
        &req,
        &state,
        &session,
        id.into_inner(),
        query.into_inner(),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    /// Missing is refused as a wrong value is (403), not as unreadable.
    #[serde(default)]
    csrf: String,
}

/// `POST /forms/{id}/publish`: the API's publishing of the draft; then the
/// form's page with the diff from the version before.
pub async fn publish(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<FormId>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let id = id.into_inner();
    match draft_published(&state, origin, session.principal.clone(), id.clone()).await {
        Ok(info) => Ok(see_other(&format!(
            "/forms/{}?published={}",
            urlencoding(&info.form_id),
            urlencoding(&info.version)
        ))),
        // A version string already published: said on the form's page.
        Err(AppError::Conflict(why)) => {
            form_page(&req, &state, &session, id, FormQuery::default(), Some(why)).await
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST /forms/{id}/versions/{version}/retire`: the API's retiring.
pub async fn retire(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    path: web::Path<FormRef>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf(&form.csrf)?;
    let info = version_retired(&state, origin, session.principal, path.into_inner()).await?;
    Ok(see_other(&format!(
        "/forms/{}?retired={}",
        urlencoding(&info.form_id),
        urlencoding(&info.version)
    )))
}

fn urlencoding(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// One problem of an upload as the page shows it.
pub struct ProblemLine {
    /// Where, in words (`field child › sex, choice 2`).
    pub place: String,
    /// The schema location itself, to find it in the file.
    pub pointer: String,
    pub message: String,
}

/// A JSON pointer into a form definition, in words an admin can follow:
/// the field path (`properties` steps), repeat items, choices by number,
/// and the keyword at the end.
pub fn place_in_words(pointer: &str, t: &Catalogue) -> String {
    if pointer.is_empty() {
        return t.s("forms.at_whole").to_string();
    }
    let steps: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut field: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let step = steps[i].as_str();
        let next = steps.get(i + 1);
        match (step, next) {
            ("properties", Some(name)) if rest.is_empty() => {
                field.push(name.clone());
                i += 2;
                continue;
            }
            ("items", _) if rest.is_empty() && !field.is_empty() => {
                field.push(t.s("forms.each_item").to_string());
            }
            ("oneOf" | "anyOf", Some(n)) if n.parse::<usize>().is_ok() => {
                let n = n.parse::<usize>().unwrap_or_default() + 1;
                rest.push(format!("{} {n}", t.s("forms.choice")));
                i += 2;
                continue;
            }
            _ => rest.push(step.to_string()),
        }
        i += 1;
    }
    let mut words = Vec::new();
    if !field.is_empty() {
        words.push(format!("{} {}", t.s("forms.at_field"), field.join(" › ")));
    } else if rest.first().is_some_and(|r| r == "x-form") {
        words.push(t.s("forms.at_form_settings").to_string());
        rest.remove(0);
    } else {
        words.push(t.s("forms.at_whole").to_string());
    }
    if !rest.is_empty() {
        words.push(rest.join(" › "));
    }
    words.join(", ")
}

#[derive(Template)]
#[template(path = "form_upload.html")]
struct UploadPage {
    chrome: Chrome,
    /// The form the upload was for, when it came from a form's page.
    form_id: String,
    detail: String,
    problems: Vec<ProblemLine>,
    /// The text as sent, to correct and send again.
    source: String,
}

/// What the upload form sent.
#[derive(Default)]
struct Upload {
    csrf: String,
    form: String,
    file: String,
    text: String,
}

/// Reads the upload form (multipart: a file, or the pasted text), all of it
/// within the API's body limit.
async fn read_upload(state: &AppState, mut multipart: Multipart) -> Result<Upload, AppError> {
    let limit = state.settings.max_body_bytes;
    let mut total = 0usize;
    let mut upload = Upload::default();
    while let Some(part) = multipart.next().await {
        let mut part =
            part.map_err(|e| AppError::bad_request(format!("the upload could not be read: {e}")))?;
        let name = part.name().unwrap_or("").to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(|e| {
                AppError::bad_request(format!("the upload was cut short or is malformed: {e}"))
            })?;
            total += chunk.len();
            if total > limit {
                return Err(AppError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| AppError::invalid_field(&format!("/{name}"), "is not UTF-8 text"))?;
        match name.as_str() {
            "csrf" => upload.csrf = text,
            "form" => upload.form = text.trim().to_string(),
            "file" => upload.file = text,
            "schema" => upload.text = text,
            _ => {}
        }
    }
    Ok(upload)
}

/// `POST /forms/drafts` (multipart): the API's draft upload of the file
/// or the pasted text, for the form named by the page it came from or,
/// from the list, by the definition's `x-form.id`. Problems are shown with
/// their places and nothing is stored; else the form's page.
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    multipart: Multipart,
) -> Result<HttpResponse, WebError> {
    let upload = read_upload(&state, multipart).await?;
    session.check_csrf(&upload.csrf)?;
    admin(&session)?;
    let t = Catalogue::of(&req);
    let source = if upload.file.trim().is_empty() {
        upload.text
    } else {
        upload.file
    };
    let refused = |detail: String, errors: Vec<FieldError>, source: String| {
        let problems = errors
            .into_iter()
            .map(|e| ProblemLine {
                place: place_in_words(&e.pointer, t),
                pointer: e.pointer,
                message: e.message,
            })
            .collect();
        super::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &UploadPage {
                chrome: Chrome::signed_in(&req, &session),
                form_id: upload.form.clone(),
                detail,
                problems,
                source,
            },
        )
    };
    if source.trim().is_empty() {
        return refused(t.s("forms.nothing_sent").to_string(), Vec::new(), source);
    }
    let document: Value = match serde_json::from_str(&source) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("{} {e}", t.s("forms.not_json"));
            return refused(why, Vec::new(), source);
        }
    };
    let id = if upload.form.is_empty() {
        document
            .pointer("/x-form/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    } else {
        upload.form.clone()
    };
    if id.is_empty() {
        return refused(
            t.s("forms.no_id").to_string(),
            vec![FieldError::new("/x-form/id", t.s("forms.no_id"))],
            source,
        );
    }
    let principal = session.principal.clone();
    match draft_uploaded(&state, origin, principal, FormId::from(id), document).await {
        Ok((draft, _)) => Ok(see_other(&format!(
            "/forms/{}?uploaded={}",
            urlencoding(&draft.form_id),
            urlencoding(&draft.version)
        ))),
        Err(AppError::Validation { detail, errors }) => refused(detail, errors, source),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_location_reads_as_the_field_and_what_of_it() {
        let en = &Catalogue::all()[0];
        let cases = [
            ("", "the form as a whole"),
            ("/$schema", "the form as a whole, $schema"),
            ("/x-form/id", "the form's settings (x-form), id"),
            (
                "/properties/child/properties/siblings",
                "field child › siblings",
            ),
            (
                "/properties/child/properties/siblings/items/properties/name/oneOf/1/title",
                "field child › siblings › each item › name, choice 2 › title",
            ),
            ("/properties/a~1b/maxItems", "field a/b, maxItems"),
        ];
        for (pointer, words) in cases {
            assert_eq!(place_in_words(pointer, en), words, "{pointer}");
        }
    }
}

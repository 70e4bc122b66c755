//! The exports page: the case export or one form's, with the API's filters,
//! de-identified by default. Every download is the API's own
//! (`api::exports::export`: `exports::disclose_and_stream`, the same access
//! rule, the same streaming body as an attachment, the same
//! `cases_exported` / `form_exported` audit row), built from the same
//! filters (`CaseFilter`, `FormFilter`).
//!
//! An identifying export is a disclosure: a coordinator fills the
//! disclosure form (`GET /exports/disclosure`), whose terms are checked by
//! the API's code (`disclosures::check`, inside the export's transaction)
//! and whose download is a POST with the session's CSRF value, so no
//! cross-site link can record a disclosure. A GET download is always
//! de-identified. A refusal comes back before the first byte and re-shows
//! the form with what was wrong; nothing is recorded.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::NaiveDate;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{policy, sites, Principal};
use crate::error::{AppError, FieldError};
use crate::exports::cases::CaseFilter;
use crate::exports::forms::FormFilter;
use crate::exports::{self, Request, Scope};
use crate::forms::registry;
use crate::http::api::exports::export;
use crate::http::api::privacy::consents_read;
use crate::privacy::consents::ConsentView;
use crate::privacy::disclosures::{self, DisclosureTerms};

use super::session::WebUser;
use super::{Chrome, WebError};

/// What to export and its filters, as the page's form sends them (a GET
/// query, or hidden fields of the disclosure form).
#[derive(Debug, Default, Clone)]
pub struct Choice {
    /// `cases:<programme>` or `form:<form id>`.
    pub what: String,
    pub site: String,
    pub from: String,
    pub to: String,
    pub version: String,
    pub case: String,
    pub bom: bool,
    pub zip: bool,
}

/// The disclosure form's terms (`DisclosureTerms` as typed; checked by
/// `disclosures::check`, never here).
#[derive(Debug, Default, Clone)]
pub struct Terms {
    pub legal_basis: String,
    pub provision: String,
    pub recipient: String,
    pub purpose: String,
    pub method: String,
    pub consent: Vec<String>,
}

/// Reads both from form pairs (`consent` may come once per ticked box).
fn read(pairs: &[(String, String)]) -> (Choice, Terms) {
    let mut choice = Choice::default();
    let mut terms = Terms::default();
    for (name, value) in pairs {
        let value = value.trim().to_string();
        match name.as_str() {
            "what" => choice.what = value,
            "site" => choice.site = value,
            "from" => choice.from = value,
            "to" => choice.to = value,
            "version" => choice.version = value,
            "case" => choice.case = value,
            "bom" => choice.bom = value == "true",
            "zip" => choice.zip = value == "true",
            "legal_basis" => terms.legal_basis = value,
            "provision" => terms.provision = value,
            "recipient" => terms.recipient = value,
            "purpose" => terms.purpose = value,
            "method" => terms.method = value,
            "consent" if !value.is_empty() => terms.consent.push(value),
            _ => {}
        }
    }
    (choice, terms)
}

fn pairs_of(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap_or_default()
}

fn given(text: &str) -> Option<String> {
    Some(text.to_string()).filter(|t| !t.is_empty())
}

impl Choice {
    /// The programme of a case export, or the form of a form export.
    fn target(&self) -> Option<(&str, &str)> {
        self.what.split_once(':')
    }

    /// The API's request for this choice: de-identified, or identifying on
    /// `terms`. A badly written date or no choice is a 422 naming it, as
    /// the API's query reader would refuse it.
    fn request(&self, terms: Option<&Terms>) -> Result<Request, AppError> {
        let mut errors = Vec::new();
        let mut day = |text: &str, at: &str| match text {
            "" => None,
            text => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| errors.push(FieldError::new(at, "a date (YYYY-MM-DD)")))
                .ok(),
        };
        let from = day(&self.from, "/from");
        let to = day(&self.to, "/to");
        let target = self
            .target()
            .filter(|(kind, id)| matches!(*kind, "cases" | "form") && !id.is_empty());
        let Some((kind, id)) = target.filter(|_| errors.is_empty()) else {
            if target.is_none() {
                errors.push(FieldError::new(
                    "/what",
                    "choose the cases of a programme or one form",
                ));
            }
            return Err(AppError::Validation {
                detail: "the export's filters are not valid".into(),
                errors,
            });
        };
        let identifying = terms.is_some().then_some(true);
        let terms = terms.map(Terms::disclosure).unwrap_or_default();
        let bom = self.bom.then_some(true);
        Ok(match (kind, id) {
            ("cases", programme) => Request::Cases(CaseFilter {
                programme: programme.to_string(),
                from,
                to,
                site: given(&self.site),
                bom,
                identifying,
                case: given(&self.case),
                terms,
                formula_escape: None,
            }),
            (_, form_id) => Request::Form {
                form_id: form_id.to_string(),
                filter: FormFilter {
                    from,
                    to,
                    site: given(&self.site),
                    version: given(&self.version),
                    bom,
                    identifying,
                    case: given(&self.case),
                    terms,
                    formula_escape: None,
                },
                zipped: self.zip,
            },
        })
    }

    /// Its fields as hidden inputs of the disclosure form.
    pub fn hidden(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("what", self.what.clone()),
            ("site", self.site.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("version", self.version.clone()),
        ];
        if self.bom {
            fields.push(("bom", "true".into()));
        }
        if self.zip {
            fields.push(("zip", "true".into()));
        }
        fields.retain(|(_, v)| !v.is_empty());
        fields
    }

    /// This choice as the query of the exports page (to go back to it).
    pub fn query(&self) -> String {
        let mut fields = self.hidden();
        fields.push(("case", self.case.clone()));
        fields.retain(|(_, v)| !v.is_empty());
        serde_urlencoded::to_string(fields).unwrap_or_default()
    }
}

impl Terms {
    fn disclosure(&self) -> DisclosureTerms {
        DisclosureTerms {
            legal_basis: given(&self.legal_basis),
            provision: given(&self.provision),
            consent: given(&self.consent.join(",")),
            recipient: given(&self.recipient),
            purpose: given(&self.purpose),
            method: given(&self.method),
        }
    }
}

/// A form one may export: (value of the choice, label).
pub struct Exportable {
    pub value: String,
    pub label: String,
}

/// What the page offers a user: the programmes of their sites' cases and
/// those programmes' forms; their sites.
struct Offer {
    cases: Vec<Exportable>,
    forms: Vec<Exportable>,
    /// (code, name, programme).
    sites: Vec<(String, String, String)>,
    /// Form id → programme.
    form_programmes: Vec<(String, String)>,
}

async fn offer(state: &AppState, me: &Principal) -> Result<Offer, AppError> {
    let only = me.site_ids.clone();
    let (site_list, form_list) = state
        .db(move |conn| Ok((sites::list(conn, Some(&only))?, registry::list(conn)?)))
        .await?;
    let programmes: BTreeSet<String> = site_list.iter().map(|s| s.programme.clone()).collect();
    let forms: Vec<_> = form_list
        .into_iter()
        .filter(|f| programmes.contains(&f.programme))
        .collect();
    Ok(Offer {
        cases: programmes
            .iter()
            .map(|p| Exportable {
                value: format!("cases:{p}"),
                label: p.to_uppercase(),
            })
            .collect(),
        form_programmes: forms
            .iter()
            .map(|f| (f.id.clone(), f.programme.clone()))
            .collect(),
        forms: forms
            .into_iter()
            .map(|f| Exportable {
                value: format!("form:{}", f.id),
                label: format!("{} · {}", f.id, f.title),
            })
            .collect(),
        sites: site_list
            .into_iter()
            .map(|s| (s.code, s.name, s.programme))
            .collect(),
    })
}

/// One problem of a refused form: the field's label key and the API's
/// words.
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

/// The problems of a 422 in words for the page; any other refusal is its
/// error page.
fn problems(e: AppError) -> Result<Vec<Problem>, WebError> {
    match e {
        AppError::Validation { errors, .. } => Ok(errors
            .into_iter()
            .map(|f| Problem {
                field: label_of(&f.pointer),
                message: f.message,
            })
            .collect()),
        other => Err(other.into()),
    }
}

fn label_of(pointer: &str) -> &'static str {
    match pointer {
        "/what" => "exports.what",
        "/site" => "exports.site",
        "/from" => "exports.from",
        "/to" => "exports.to",
        "/version" => "exports.version",
        "/case" => "exports.case",
        "/programme" => "exports.what",
        "/legal_basis" => "exports.legal_basis",
        "/provision" => "exports.provision",
        "/recipient" => "exports.recipient",
        "/purpose" => "exports.purpose",
        "/method" => "exports.method",
        "/consent" => "exports.consents",
        _ => "exports.export",
    }
}

#[derive(Template)]
#[template(path = "exports.html")]
struct ExportsPage {
    chrome: Chrome,
    choice: Choice,
    cases: Vec<Exportable>,
    forms: Vec<Exportable>,
    sites: Vec<(String, String, String)>,
    may_identify: bool,
    problems: Vec<Problem>,
}

/// A legal basis as the form offers it.
pub struct BasisLine {
    pub code: &'static str,
    pub source: &'static str,
    pub needs_provision: bool,
    pub needs_consent: bool,
}

#[derive(Template)]
#[template(path = "disclosure.html")]
struct DisclosurePage {
    chrome: Chrome,
    choice: Choice,
    terms: Terms,
    /// What is being exported, as the chooser labelled it.
    label: String,
    programme: String,
    bases: Vec<BasisLine>,
    /// The named case's consents, when a case is named.
    consents: Option<Vec<ConsentView>>,
    problems: Vec<Problem>,
}

/// Only roles the API lets export get the page and its header link.
pub fn may_see(role: &str) -> bool {
    matches!(role, "role.coordinator" | "role.analyst")
}

fn page_of(
    req: &HttpRequest,
    session: &super::session::Session,
    offer: Offer,
    choice: Choice,
    problems: Vec<Problem>,
) -> Result<ExportsPage, WebError> {
    let scope = Scope::of(&session.principal)?;
    Ok(ExportsPage {
        chrome: Chrome::signed_in(req, session),
        choice,
        cases: offer.cases,
        forms: offer.forms,
        sites: offer.sites,
        may_identify: scope.may_identify,
        problems,
    })
}

/// `GET /exports`: the choice, filled from the query when coming back.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    policy::export(&session.principal)?;
    let (choice, _) = read(&pairs_of(req.query_string()));
    let offer = offer(&state, &session.principal).await?;
    let body = page_of(&req, &session, offer, choice, Vec::new())?;
    super::page(StatusCode::OK, &body)
}

/// `GET /exports/download`: a de-identified export, whatever the query
/// says (a link cannot make a disclosure).
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let (choice, _) = read(&pairs_of(req.query_string()));
    let started = match choice.request(None) {
        Ok(request) => export(&state, origin, session.principal.clone(), request).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(stream) => Ok(stream),
        Err(e) => {
            let problems = problems(e)?;
            let offer = offer(&state, &session.principal).await?;
            let body = page_of(&req, &session, offer, choice, problems)?;
            super::page(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}

/// The disclosure form for `choice`, the named case's consents read as the
/// API reads them (`consents_read`).
async fn disclosure_page(
    req: &HttpRequest,
    state: &AppState,
    origin: Origin,
    session: &super::session::Session,
    choice: Choice,
    terms: Terms,
    mut problems: Vec<Problem>,
) -> Result<DisclosurePage, WebError> {
    let me = &session.principal;
    // The API's rule: identifying exports are the coordinators'.
    exports::privacy(&Scope::of(me)?, Some(true))?;
    let offer = offer(state, me).await?;
    let programme = match choice.target() {
        Some(("cases", p)) => Some(p.to_string()),
        Some(("form", id)) => offer
            .form_programmes
            .iter()
            .find(|(f, _)| f == id)
            .map(|(_, p)| p.clone()),
        _ => None,
    };
    // Only a programme of the user's sites (the export itself refuses
    // the rest; this keeps its legal bases off the form too).
    let Some(programme) = programme.filter(|p| {
        offer
            .cases
            .iter()
            .any(|c| c.value.strip_prefix("cases:") == Some(p))
    }) else {
        return Err(AppError::invalid_field(
            "/what",
            "choose the cases of a programme or one form",
        )
        .into());
    };
    let label = offer
        .cases
        .iter()
        .chain(&offer.forms)
        .find(|e| e.value == choice.what)
        .map(|e| e.label.clone())
        .unwrap_or_default();
    let consents = match given(&choice.case) {
        None => None,
        Some(id) => match consents_read(state, origin, me.clone(), id.into()).await {
            Ok(list) => Some(list),
            Err(AppError::NotFound(_) | AppError::Hidden(_) | AppError::Forbidden(_)) => {
                problems.push(Problem {
                    field: "exports.case",
                    message: "no such case among your sites' cases".into(),
                });
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(DisclosurePage {
        chrome: Chrome::signed_in(req, session),
        label,
        bases: disclosures::bases(&programme)
            .iter()
            .map(|b| BasisLine {
                code: b.code,
                source: b.source,
                needs_provision: b.needs_provision,
                needs_consent: b.needs_consent,
            })
            .collect(),
        programme,
        choice,
        terms,
        consents,
        problems,
    })
}

/// `GET /exports/disclosure`: the disclosure form for an identifying
/// export of the chosen data (coordinators: the API's rule).
pub async fn disclosure(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    let (choice, terms) = read(&pairs_of(req.query_string()));
    // Filters written badly are said on the chooser, before any terms.
    if let Err(e) = choice.request(None) {
        let problems = problems(e)?;
        let offer = offer(&state, &session.principal).await?;
        let body = page_of(&req, &session, offer, choice, problems)?;
        return super::page(StatusCode::UNPROCESSABLE_ENTITY, &body);
    }
    let body = disclosure_page(&req, &state, origin, &session, choice, terms, Vec::new()).await?;
    super::page(StatusCode::OK, &body)
}

/// `POST /exports/download`: an identifying export on the disclosure
/// form's terms (CSRF checked first). The terms are checked and the
/// disclosure logged by the API's code before the first byte; a refusal
/// re-shows the form with each problem, nothing recorded.
pub async fn download_identifying(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let (choice, terms) = read(&form);
    let started = match choice.request(Some(&terms)) {
        Ok(request) => export(&state, origin.clone(), session.principal.clone(), request).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(stream) => Ok(stream),
        Err(e) => {
            let problems = problems(e)?;
            let body =
                disclosure_page(&req, &state, origin, &session, choice, terms, problems).await?;
            super::page(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}

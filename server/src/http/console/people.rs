//! People and devices: the users the reader may see (admins everyone,
//! coordinators their sites' staff), a person's device tokens, a new token
//! for ODK Collect with its settings QR code, revoking one, and for admins
//! creating users, changing their role, sites and standing, and resetting
//! passwords. Every rule and audit row is the API's: these handlers call
//! the functions `api::users` and `api::tokens` call
//! (`GET/POST /users`, `PATCH /users/{id}`, `POST /users/{id}/password`,
//! `GET /tokens`, `POST /tokens/collect-settings`, `DELETE /tokens/{id}`).

use std::collections::{BTreeSet, HashMap};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::NaiveDateTime;

use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::sites::Site;
use crate::auth::tokens::TokenInfo;
use crate::auth::users::{NewUser, User, UserChanges};
use crate::auth::{policy, sites, Principal, Role};
use crate::error::AppError;
use crate::http::api::tokens::{self as api_tokens, NewCollectToken};
use crate::http::api::users as api_users;
use crate::programmes::Programmes;

use super::i18n::Catalogue;
use super::session::{Session, WebUser};
use super::{local_time, see_other, Chrome, WebError};

/// Only roles the API lets list users get the page (and the header link).
pub fn may_see(role: &str) -> bool {
    matches!(role, "role.admin" | "role.coordinator")
}

fn role_key(role: Role) -> &'static str {
    match role {
        Role::Admin => "role.admin",
        Role::Coordinator => "role.coordinator",
        Role::FieldWorker => "role.field_worker",
        Role::Analyst => "role.analyst",
        Role::Viewer => "role.viewer",
    }
}

/// Every role, as (value, catalogue key), for the admin's forms.
pub fn roles() -> Vec<(&'static str, &'static str)> {
    Role::ALL
        .iter()
        .map(|r| (r.as_str(), role_key(*r)))
        .collect()
}

pub struct PersonLine {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub role: &'static str,
    pub sites: String,
    pub active: bool,
    pub live_tokens: usize,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    chrome: Chrome,
    people: Vec<PersonLine>,
    /// (id, code, name) of every site, for the admin's new-user form.
    sites: Vec<(String, String, String)>,
    admin: bool,
    problem: Option<String>,
    form: NewUserForm,
}

/// The new-user form as sent, kept to fill the form again after a refusal.
#[derive(Default)]
pub struct NewUserForm {
    pub username: String,
    pub display_name: String,
    pub initials: String,
    pub role: String,
    pub sites: Vec<String>,
}

impl NewUserForm {
    pub fn has_site(&self, id: &str) -> bool {
        self.sites.iter().any(|s| s == id)
    }
}

fn is_live(t: &TokenInfo, now: NaiveDateTime) -> bool {
    t.revoked_at.is_none() && t.expires_at > now
}

/// `GET /people`.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
) -> Result<HttpResponse, WebError> {
    // A new person is a field worker unless the admin says otherwise.
    let form = NewUserForm {
        role: Role::FieldWorker.as_str().to_string(),
        ..NewUserForm::default()
    };
    people_page(&req, &state, &session, StatusCode::OK, None, form).await
}

async fn people_page(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    status: StatusCode,
    problem: Option<String>,
    form: NewUserForm,
) -> Result<HttpResponse, WebError> {
    let me = session.principal.clone();
    let people = api_users::listed(state, &me).await?;
    let (tokens, all_sites) = state
        .db(move |conn| {
            let tokens = api_tokens::visible(conn, &me, None)?;
            Ok((tokens, sites::list(conn, None)?))
        })
        .await?;
    let now = crate::time::now();
    let mut live: HashMap<&str, usize> = HashMap::new();
    for t in tokens.iter().filter(|t| is_live(t, now)) {
        *live.entry(t.user_id.as_str()).or_default() += 1;
    }
    let codes: HashMap<&str, &str> = all_sites
        .iter()
        .map(|s| (s.id.as_str(), s.code.as_str()))
        .collect();
    let people = people
        .iter()
        .map(|u| PersonLine {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: role_key(u.role),
            sites: site_codes(&u.site_ids, &codes),
            active: u.active,
            live_tokens: live.get(u.id.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let body = PeoplePage {
        chrome: Chrome::signed_in(req, session),
        people,
        sites: all_sites
            .iter()
            .map(|s| (s.id.clone(), s.code.clone(), s.name.clone()))
            .collect(),
        admin: session.principal.role == Role::Admin,
        problem,
        form,
    };
    super::page(status, &body)
}

fn site_codes(ids: &[String], codes: &HashMap<&str, &str>) -> String {
    ids.iter()
        .map(|id| codes.get(id.as_str()).copied().unwrap_or(id.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct TokenLine {
    pub id: String,
    pub label: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub last_used_at: Option<String>,
    /// `people.token_live`, `people.token_revoked` or `people.token_expired`.
    pub status: &'static str,
    pub live: bool,
}

/// A token just made: its QR code and settings text, shown this once.
pub struct Issued {
    pub label: String,
    pub programme: String,
    pub server_url: String,
    pub settings: String,
    pub png: String,
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage {
    chrome: Chrome,
    person: User,
    role: &'static str,
    /// (code, name) of the person's sites.
    their_sites: Vec<(String, String)>,
    tokens: Vec<TokenLine>,
    /// Whether the reader may make this person a device token; when not
    /// (and the person is a field worker), why, in the policy's words.
    may_mint: bool,
    mint_refusal: Option<String>,
    max_days: i64,
    /// The programmes of the person's sites, when there are several to
    /// choose from for a phone.
    programmes: Vec<String>,
    admin: bool,
    /// (id, code, name, the person works there) of every site, for admins.
    sites: Vec<(String, String, String, bool)>,
    issued: Option<Issued>,
    one_time_password: Option<String>,
    problem: Option<String>,
    notice: Option<&'static str>,
}

/// What a person's page shows besides its forms' outcomes.
struct Extra {
    status: StatusCode,
    issued: Option<Issued>,
    one_time_password: Option<String>,
    problem: Option<String>,
    notice: Option<&'static str>,
}

impl Extra {
    fn none() -> Extra {
        Extra {
            status: StatusCode::OK,
            issued: None,
            one_time_password: None,
            problem: None,
            notice: None,
        }
    }

    fn problem(status: StatusCode, problem: String) -> Extra {
        Extra {
            status,
            problem: Some(problem),
            ..Extra::none()
        }
    }
}

struct Loaded {
    user: User,
    tokens: Vec<TokenInfo>,
    sites: Vec<Site>,
    /// Usernames of the users the reader may see, by id.
    names: HashMap<String, String>,
}

async fn load(state: &AppState, me: &Principal, id: String) -> Result<Loaded, AppError> {
    let visible = api_users::listed(state, me).await?;
    let me = me.clone();
    let (user, tokens, sites) = state
        .db(move |conn| {
            let user = api_users::visible(conn, &me, &id)?;
            let tokens = api_tokens::visible(conn, &me, Some(&user.id))?;
            Ok((user, tokens, sites::list(conn, None)?))
        })
        .await?;
    Ok(Loaded {
        user,
        tokens,
        sites,
        names: visible.into_iter().map(|u| (u.id, u.username)).collect(),
    })
}

/// A UTC time of the token store in the zone of the person's programme
/// (UTC when they work in several, or none).
fn shown_at(at: NaiveDateTime, zone: Option<chrono_tz::Tz>) -> String {
    match zone {
        Some(tz) => local_time(&at.and_utc().with_timezone(&tz).to_rfc3339()),
        None => format!("{} UTC", at.format("%Y-%m-%d %H:%M")),
    }
}

async fn person_page(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    id: String,
    extra: Extra,
) -> Result<HttpResponse, WebError> {
    let me = &session.principal;
    let loaded = load(state, me, id).await?;
    let user = loaded.user;
    let mut programmes: Vec<String> = loaded
        .sites
        .iter()
        .filter(|s| user.site_ids.contains(&s.id))
        .map(|s| s.programme.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let zone = match programmes.as_slice() {
        [only] => Programmes::shipped()
            .get(only)
            .map(|p| p.calendar.time_zone),
        _ => None,
    };
    let now = crate::time::now();
    let tokens = loaded
        .tokens
        .iter()
        .map(|t| TokenLine {
            id: t.id.clone(),
            label: t.label.clone().unwrap_or_default(),
            created_by: t
                .created_by
                .as_deref()
                .map(|by| {
                    loaded
                        .names
                        .get(by)
                        .cloned()
                        .unwrap_or_else(|| by.to_string())
                })
                .unwrap_or_default(),
            created_at: shown_at(t.created_at, zone),
            expires_at: shown_at(t.expires_at, zone),
            last_used_at: t.last_used_at.map(|at| shown_at(at, zone)),
            status: if t.revoked_at.is_some() {
                "people.token_revoked"
            } else if t.expires_at <= now {
                "people.token_expired"
            } else {
                "people.token_live"
            },
            live: is_live(t, now),
        })
        .collect();
    // The form is offered only where the API would make the token; the
    // POST asks the same functions again.
    let (may_mint, mint_refusal) = if user.role != Role::FieldWorker || !user.active {
        (false, None)
    } else {
        match policy::issue_device_token_for(me, &user.site_ids) {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        }
    };
    if programmes.len() < 2 {
        programmes.clear();
    }
    let body = PersonPage {
        chrome: Chrome::signed_in(req, session),
        role: role_key(user.role),
        their_sites: loaded
            .sites
            .iter()
            .filter(|s| user.site_ids.contains(&s.id))
            .map(|s| (s.code.clone(), s.name.clone()))
            .collect(),
        tokens,
        may_mint,
        mint_refusal,
        max_days: state.settings.device_token_ttl_days,
        programmes,
        admin: me.role == Role::Admin,
        sites: loaded
            .sites
            .iter()
            .map(|s| {
                let theirs = user.site_ids.contains(&s.id);
                (s.id.clone(), s.code.clone(), s.name.clone(), theirs)
            })
            .collect(),
        person: user,
        issued: extra.issued,
        one_time_password: extra.one_time_password,
        problem: extra.problem,
        notice: extra.notice,
    };
    let mut res = super::page(extra.status, &body)?;
    // A secret (a token's QR code, a one-time password) is on this page
    // once: no cache keeps it.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

#[derive(serde::Deserialize)]
pub struct PersonQuery {
    done: Option<String>,
}

/// `GET /people/{id}[?done=revoked|changed]`.
pub async fn person(
    req: HttpRequest,
    state: web::Data<AppState>,
    WebUser(session): WebUser,
    id: web::Path<String>,
    query: web::Query<PersonQuery>,
) -> Result<HttpResponse, WebError> {
    let notice = match query.done.as_deref() {
        Some("revoked") => Some("people.revoked_done"),
        Some("changed") => Some("people.changed_done"),
        _ => None,
    };
    let extra = Extra {
        notice,
        ..Extra::none()
    };
    person_page(&req, &state, &session, id.into_inner(), extra).await
}

/// A refusal the reader can act on, as the page shows it: which field and
/// why, in the server's words (as the API's problem names them). Other
/// errors (a hidden or missing person, a busy server) stay error pages.
fn refusal(t: &Catalogue, e: &AppError) -> Option<(StatusCode, String)> {
    let field = |pointer: &str| -> String {
        let key = match pointer.split('/').nth(1).unwrap_or("") {
            "username" => "people.username",
            "display_name" => "people.display_name",
            "initials" => "people.initials",
            "role" => "people.role",
            "site_ids" => "people.sites",
            "password" => "people.password",
            "label" => "people.label",
            "expires_in_days" => "people.days",
            "programme" => "people.programme",
            "user_id" => "people.person",
            "active" => "people.active",
            other => return other.to_string(),
        };
        t.s(key).to_string()
    };
    let status = actix_web::ResponseError::status_code(e);
    match e {
        AppError::Validation { errors, detail } | AppError::BadRequest { errors, detail } => {
            let why = errors
                .iter()
                .map(|e| format!("{}: {}", field(&e.pointer), e.message))
                .collect::<Vec<_>>()
                .join("; ");
            Some((status, if why.is_empty() { detail.clone() } else { why }))
        }
        AppError::Conflict(why) | AppError::Forbidden(why) => Some((status, why.clone())),
        _ => None,
    }
}

/// Shows a refusal on the person's page, or passes other errors on.
async fn refused_on_person(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    id: String,
    e: AppError,
) -> Result<HttpResponse, WebError> {
    match refusal(Catalogue::of(req), &e) {
        Some((status, why)) => {
            person_page(req, state, session, id, Extra::problem(status, why)).await
        }
        None => Err(e.into()),
    }
}

/// The value of `name` in a form sent as pairs (repeated names allowed).
fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn all(form: &[(String, String)], name: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A role as the form sends it; an unknown one is the API's 422 for it.
fn role_of(text: &str) -> Result<Role, AppError> {
    text.parse()
        .map_err(|why: String| AppError::invalid_field("/role", why))
}

/// `POST /people/{id}/tokens`: a device token for ODK Collect and its QR
/// code (`api::tokens::issued_for_collect`, `device_token_created`).
pub async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let id = id.into_inner();
    let days = field(&form, "expires_in_days").map(str::trim).unwrap_or("");
    let expires_in_days = if days.is_empty() {
        None
    } else {
        match days.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let e =
                    AppError::invalid_field("/expires_in_days", "must be a whole number of days");
                return refused_on_person(&req, &state, &session, id, e).await;
            }
        }
    };
    let request = NewCollectToken {
        user_id: id.clone(),
        label: field(&form, "label").unwrap_or("").to_string(),
        expires_in_days,
        programme: field(&form, "programme")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
    };
    match api_tokens::issued_for_collect(&state, origin, session.principal.clone(), request).await {
        Ok(made) => {
            let issued = Issued {
                label: made.issued.info.label.clone().unwrap_or_default(),
                programme: made.collect_settings.programme,
                server_url: made.collect_settings.server_url,
                settings: made.collect_settings.settings,
                png: made.collect_settings.png,
            };
            let extra = Extra {
                status: StatusCode::CREATED,
                issued: Some(issued),
                ..Extra::none()
            };
            person_page(&req, &state, &session, id, extra).await
        }
        Err(e) => refused_on_person(&req, &state, &session, id, e).await,
    }
}

/// `POST /tokens/{id}/revoke`: `api::tokens::revoked` (`token_revoked`),
/// then back to the token's owner.
pub async fn revoke_token(
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let revoked =
        api_tokens::revoked(&state, origin, session.principal.clone(), id.into_inner()).await?;
    Ok(see_other(&format!(
        "/people/{}?done=revoked",
        revoked.user_id
    )))
}

/// `POST /people`: an admin creates a user (`api::users::created`,
/// `user_created`); a generated one-time password is shown once.
pub async fn create_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let kept = NewUserForm {
        username: field(&form, "username").unwrap_or("").to_string(),
        display_name: field(&form, "display_name").unwrap_or("").to_string(),
        initials: field(&form, "initials").unwrap_or("").trim().to_string(),
        role: field(&form, "role").unwrap_or("").to_string(),
        sites: all(&form, "site"),
    };
    let password = field(&form, "password").filter(|p| !p.is_empty());
    let made = match role_of(&kept.role) {
        Ok(role) => {
            let new = NewUser {
                username: kept.username.clone(),
                display_name: Some(kept.display_name.clone()).filter(|d| !d.trim().is_empty()),
                initials: Some(kept.initials.clone()).filter(|i| !i.is_empty()),
                role,
                site_ids: kept.sites.clone(),
                password: password.map(str::to_string),
            };
            api_users::created(&state, origin, session.principal.clone(), new).await
        }
        Err(e) => Err(e),
    };
    match made {
        Ok(created) => {
            let extra = Extra {
                status: StatusCode::CREATED,
                one_time_password: created.one_time_password,
                notice: Some("people.created_done"),
                ..Extra::none()
            };
            person_page(&req, &state, &session, created.user.id, extra).await
        }
        Err(e) => match refusal(Catalogue::of(&req), &e) {
            Some((status, why)) => {
                people_page(&req, &state, &session, status, Some(why), kept).await
            }
            None => Err(e.into()),
        },
    }
}

/// `POST /people/{id}`: an admin changes a user's name, role, sites or
/// standing (`api::users::updated`, `user_updated`); only what the form
/// changed is sent, so the audit row names only that.
pub async fn update_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let id = id.into_inner();
    let me = session.principal.clone();
    policy::administer(&me, "change users")?;
    let current = {
        let (me, id) = (me.clone(), id.clone());
        state
            .db(move |conn| api_users::visible(conn, &me, &id))
            .await?
    };
    let mut changes = UserChanges::default();
    let name = field(&form, "display_name").unwrap_or("");
    if name != current.display_name {
        changes.display_name = Some(name.to_string());
    }
    // An emptied field clears them (the display name gives them again).
    let initials = field(&form, "initials").unwrap_or("").trim();
    if initials != current.initials.as_deref().unwrap_or("") {
        changes.initials = Some(initials.to_string());
    }
    match role_of(field(&form, "role").unwrap_or("")) {
        Ok(role) if role != current.role => changes.role = Some(role),
        Ok(_) => {}
        Err(e) => return refused_on_person(&req, &state, &session, id, e).await,
    }
    let mut chosen = all(&form, "site");
    chosen.sort();
    if chosen != current.site_ids {
        changes.site_ids = Some(chosen);
    }
    let active = field(&form, "active").is_some();
    if active != current.active {
        changes.active = Some(active);
    }
    let nothing = changes.display_name.is_none()
        && changes.initials.is_none()
        && changes.role.is_none()
        && changes.site_ids.is_none()
        && changes.active.is_none();
    if nothing {
        return Ok(see_other(&format!("/people/{id}")));
    }
    match api_users::updated(&state, origin, me, id.clone(), changes).await {
        Ok(user) => Ok(see_other(&format!("/people/{}?done=changed", user.id))),
        Err(e) => refused_on_person(&req, &state, &session, id, e).await,
    }
}

/// `POST /people/{id}/password`: an admin's reset
/// (`api::users::password_reset`, `password_reset`): the one chosen, or a
/// one-time password shown once; every token of the user stops working.
pub async fn reset_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    origin: Origin,
    WebUser(session): WebUser,
    id: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    session.check_csrf_in(&form)?;
    let id = id.into_inner();
    let chosen = field(&form, "password")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    match api_users::password_reset(
        &state,
        origin,
        session.principal.clone(),
        id.clone(),
        chosen,
    )
    .await
    {
        Ok(one_time_password) => {
            let extra = Extra {
                one_time_password,
                notice: Some("people.reset_done"),
                ..Extra::none()
            };
            person_page(&req, &state, &session, id, extra).await
        }
        Err(e) => refused_on_person(&req, &state, &session, id, e).await,
    }
}

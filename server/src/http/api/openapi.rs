//! The OpenAPI 3.1 document of `/api/v1`, made from the handlers' own
//! types and `#[utoipa::path]` annotations: served at
//! `GET /api/v1/openapi.json` (public: it describes the API, holds no
//! data) and checked into `docs/openapi.json` (a test fails when they
//! differ; `CASESYNC_WRITE_OPENAPI=1 cargo test openapi` rewrites it).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::*;
use crate::auth::sites::{ProgrammeCode, SiteId};
use crate::auth::tokens::TokenId;
use crate::auth::users::UserId;
use crate::cases::children::{DuplicateDecision, DuplicateId, DuplicateStatus};
use crate::cases::conflicts::ConflictId;
use crate::cases::views::DueStatus;
use crate::cases::CaseId;
use crate::error::{FieldError, Problem};
use crate::forms::FormId;
use crate::indicators::ReportFormat;
use crate::privacy::access_requests::Requester;
use crate::privacy::consents::ConsentId;
use crate::privacy::AccessRequestId;
use crate::programmes::holidays::DayKind;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "casesync API",
        description = "The JSON API of casesync, a sync server for child-protection case \
                       management. Every call but login and this document needs \
                       `Authorization: Bearer <token>`; every error is an RFC 9457 problem \
                       (`application/problem+json`). See docs/api.md for the rules in words.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/api/v1")),
    security(("bearer" = [])),
    paths(
        document,
        sessions::login,
        sessions::logout,
        me::show,
        me::change_password,
        me::revoke_token,
        users::list,
        users::create,
        users::show,
        users::update,
        users::reset_password,
        sites::list,
        sites::create,
        sites::show,
        sites::update,
        tokens::list,
        tokens::create,
        tokens::create_for_collect,
        tokens::revoke,
        keys::current,
        programmes::calendar,
        programmes::set_day,
        programmes::reset_day,
        sync::get,
        submissions::create,
        submissions::batch,
        submissions::held,
        submissions::dismiss_held,
        submissions::held_answers,
        submissions::correct_held,
        submissions::put_attachment,
        submissions::get_attachment,
        cases::list,
        cases::show,
        cases::timeline,
        cases::assign,
        cases::approve,
        cases::link_siblings,
        cases::break_glass,
        cases::break_glass_grants,
        privacy::list_consents,
        privacy::record_consent,
        privacy::withdraw_consent,
        privacy::record_share,
        privacy::list_disclosures,
        access_requests::list,
        access_requests::create,
        access_requests::review,
        access_requests::copy,
        access_requests::family_copy,
        cases::duplicates,
        cases::decide_duplicate,
        cases::deadlines,
        cases::conflicts,
        cases::resolve,
        exports::cases_csv,
        audit::export_csv,
        audit::list,
        exports::form_csv,
        indicators::report,
        retention::report,
        forms::list,
        forms::current,
        forms::show_draft,
        forms::upload_draft,
        forms::publish_draft,
        forms::version,
        forms::retire,
        forms::validate,
        forms::version_diff,
    ),
    components(schemas(
        Problem,
        FieldError,
        ProgrammeCode,
        DayKind,
        DueStatus,
        DuplicateStatus,
        DuplicateDecision,
        Requester,
        ReportFormat,
        CaseId,
        SiteId,
        UserId,
        TokenId,
        FormId,
        ConsentId,
        AccessRequestId,
        ConflictId,
        DuplicateId,
    )),
    modifiers(&Bearer, &CommonProblems),
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut json = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        json.push('\n');
        json
    })
}

/// `GET /api/v1/openapi.json`: this document (no token needed).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The answers any operation may give, whatever it does: added to each
/// operation that does not describe them itself.
struct CommonProblems;

impl CommonProblems {
    fn add(op: &mut Operation) {
        let public = op.security.as_ref().is_some_and(|reqs| {
            reqs.iter()
                .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
        });
        let mut common = vec![
            ("400", "Malformed path, query or body (with the JSON pointer of the problem), or a credential in the query string"),
            ("500", "Internal error (logged; the body says nothing more)"),
            ("503", "Database unavailable, or the workers for CPU-heavy work are busy (`Retry-After`)"),
        ];
        if !public {
            common.push((
                "401",
                "No, unknown, expired or revoked token (`WWW-Authenticate: Bearer`)",
            ));
            common.push((
                "403",
                "The caller's role does not allow it, or a password change is required first",
            ));
        }
        if op.request_body.is_some() {
            common.push(("413", "The body is over the server's limit"));
            common.push(("415", "The body is not of the media type described"));
        }
        for (status, description) in common {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| problem(description).into());
        }
    }
}

/// A response carrying a problem+json body.
pub fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

impl Modify for CommonProblems {
    fn modify(&self, doc: &mut Document) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::add(op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.json is this document: change a handler's types or
    /// annotations and this fails until the copy is regenerated.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        if std::env::var_os("CASESYNC_WRITE_OPENAPI").is_some() {
            std::fs::write(path, document_json()).expect("docs/openapi.json is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == document_json(),
            "docs/openapi.json differs from the API's OpenAPI document; regenerate it with \
             `CASESYNC_WRITE_OPENAPI=1 cargo test --lib openapi` and commit it"
        );
    }
}

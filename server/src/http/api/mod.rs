//! The JSON API, `/api/v1`. Every route is registered here, in one place.

mod access_requests;
pub(crate) mod audit;
pub mod cases;
pub(crate) mod exports;
pub(crate) mod forms;
pub(crate) mod indicators;
mod keys;
mod me;
pub mod openapi;
pub(crate) mod privacy;
mod programmes;
mod retention;
mod sessions;
mod sites;
pub(crate) mod submissions;
mod sync;
pub(crate) mod tokens;
pub(crate) mod users;

use actix_web::web::{self, delete, get, patch, post, put, resource};
use serde::Serialize;

/// A list answer: `{"items": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

impl<T> Items<T> {
    pub fn new(items: Vec<T>) -> Self {
        Items { items }
    }
}

/// One resource per path, so a wrong method answers 405, not 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .service(resource("/openapi.json").route(get().to(openapi::document)))
            .service(resource("/sessions").route(post().to(sessions::login)))
            .service(resource("/sessions/current").route(delete().to(sessions::logout)))
            .service(resource("/me").route(get().to(me::show)))
            .service(resource("/me/password").route(post().to(me::change_password)))
            .service(resource("/me/tokens/{id}").route(delete().to(me::revoke_token)))
            .service(
                resource("/users")
                    .route(get().to(users::list))
                    .route(post().to(users::create)),
            )
            .service(
                resource("/users/{id}")
                    .route(get().to(users::show))
                    .route(patch().to(users::update)),
            )
            .service(resource("/users/{id}/password").route(post().to(users::reset_password)))
            .service(
                resource("/sites")
                    .route(get().to(sites::list))
                    .route(post().to(sites::create)),
            )
            .service(
                resource("/sites/{id}")
                    .route(get().to(sites::show))
                    .route(patch().to(sites::update)),
            )
            .service(
                resource("/tokens")
                    .route(get().to(tokens::list))
                    .route(post().to(tokens::create)),
            )
            // Before `/tokens/{id}`, which would otherwise take the name.
            .service(
                resource("/tokens/collect-settings").route(post().to(tokens::create_for_collect)),
            )
            .service(resource("/tokens/{id}").route(delete().to(tokens::revoke)))
            .service(
                resource("/programmes/{programme}/keys/current").route(get().to(keys::current)),
            )
            .service(
                resource("/programmes/{programme}/calendar").route(get().to(programmes::calendar)),
            )
            .service(
                resource("/programmes/{programme}/calendar/days/{date}")
                    .route(put().to(programmes::set_day))
                    .route(delete().to(programmes::reset_day)),
            )
            .service(resource("/sync").route(get().to(sync::get)))
            .service(resource("/submissions").route(post().to(submissions::create)))
            .service(resource("/submissions/batch").route(post().to(submissions::batch)))
            .service(resource("/submissions/held").route(get().to(submissions::held)))
            .service(
                resource("/submissions/held/{instance_id}/dismissal")
                    .route(post().to(submissions::dismiss_held)),
            )
            .service(
                resource("/submissions/held/{instance_id}")
                    .route(get().to(submissions::held_answers)),
            )
            .service(
                resource("/submissions/held/{instance_id}/correction")
                    .route(post().to(submissions::correct_held)),
            )
            .service(
                resource("/submissions/{instance_id}/attachments/{name}")
                    .route(put().to(submissions::put_attachment))
                    .route(get().to(submissions::get_attachment)),
            )
            .service(resource("/cases").route(get().to(cases::list)))
            .service(resource("/cases/{id}").route(get().to(cases::show)))
            .service(resource("/cases/{id}/timeline").route(get().to(cases::timeline)))
            .service(resource("/cases/{id}/assignment").route(post().to(cases::assign)))
            .service(resource("/cases/{id}/approvals").route(post().to(cases::approve)))
            .service(resource("/cases/{id}/siblings").route(post().to(cases::link_siblings)))
            .service(resource("/cases/{id}/break-glass").route(post().to(cases::break_glass)))
            .service(resource("/break-glass").route(get().to(cases::break_glass_grants)))
            .service(
                resource("/cases/{id}/consents")
                    .route(get().to(privacy::list_consents))
                    .route(post().to(privacy::record_consent)),
            )
            .service(
                resource("/consents/{id}/withdrawal").route(post().to(privacy::withdraw_consent)),
            )
            .service(resource("/cases/{id}/disclosures").route(post().to(privacy::record_share)))
            .service(resource("/disclosures").route(get().to(privacy::list_disclosures)))
            .service(
                resource("/cases/{id}/access-requests")
                    .route(get().to(access_requests::list))
                    .route(post().to(access_requests::create)),
            )
            .service(
                resource("/access-requests/{id}/review").route(post().to(access_requests::review)),
            )
            .service(resource("/access-requests/{id}/copy").route(get().to(access_requests::copy)))
            .service(
                resource("/submissions/{instance_id}/family-copy")
                    .route(get().to(access_requests::family_copy)),
            )
            .service(resource("/children/duplicates").route(get().to(cases::duplicates)))
            .service(
                resource("/children/duplicates/{id}/{decision}")
                    .route(post().to(cases::decide_duplicate)),
            )
            .service(resource("/deadlines").route(get().to(cases::deadlines)))
            .service(resource("/conflicts").route(get().to(cases::conflicts)))
            .service(resource("/conflicts/{id}/resolution").route(post().to(cases::resolve)))
            .service(resource("/exports/cases.csv").route(get().to(exports::cases_csv)))
            .service(resource("/exports/audit.csv").route(get().to(audit::export_csv)))
            .service(resource("/audit").route(get().to(audit::list)))
            .service(resource("/exports/forms/{file}").route(get().to(exports::form_csv)))
            .service(resource("/indicators/{programme}").route(get().to(indicators::report)))
            .service(resource("/retention").route(get().to(retention::report)))
            .service(resource("/forms").route(get().to(forms::list)))
            .service(resource("/forms/{id}").route(get().to(forms::current)))
            .service(
                resource("/forms/{id}/draft")
                    .route(get().to(forms::show_draft))
                    .route(post().to(forms::upload_draft)),
            )
            .service(resource("/forms/{id}/draft/publish").route(post().to(forms::publish_draft)))
            .service(resource("/forms/{id}/versions/{version}").route(get().to(forms::version)))
            .service(
                resource("/forms/{id}/versions/{version}/retire").route(post().to(forms::retire)),
            )
            .service(
                resource("/forms/{id}/versions/{version}/validate")
                    .route(post().to(forms::validate)),
            )
            .service(
                resource("/forms/{id}/versions/{a}/diff/{b}").route(get().to(forms::version_diff)),
            ),
    );
}

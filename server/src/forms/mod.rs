//! Forms: the model, the registry (draft → published → retired), bundling,
//! vocabulary checks and the validator cache.

crate::ids::string_id! {
    /// A form, e.g. `kz.referral`.
    FormId
}

/// One version of a form, as a path names it: `/forms/{id}/versions/{version}`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FormRef {
    /// The form, e.g. `kz.referral`.
    #[serde(rename = "id")]
    #[param(rename = "id", value_type = String)]
    pub form_id: FormId,
    /// The version, e.g. `2021.1.1`.
    pub version: String,
}

pub mod answers;
pub mod bundle;
pub mod check;
pub mod columns;
pub mod definitions;
pub mod diff;
pub mod fixtures;
pub mod model;
pub mod registry;
pub mod relevance;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::db::DbConnection;
use crate::error::{AppError, AppResult};
pub use validate::CompiledForm;

/// Compiled validators by (form id, version). Published versions never
/// change, so an entry never goes stale; each is compiled once per process.
#[derive(Default)]
pub struct FormCache {
    compiled: RwLock<HashMap<(String, String), Arc<CompiledForm>>>,
}

impl FormCache {
    pub fn new() -> Self {
        FormCache::default()
    }

    /// The compiled validator of a published (or retired) version.
    pub fn get(
        &self,
        conn: &mut DbConnection,
        form_id: &str,
        version: &str,
    ) -> AppResult<Arc<CompiledForm>> {
        let key = (form_id.to_string(), version.to_string());
        if let Some(found) = self.compiled.read().expect("cache lock").get(&key) {
            return Ok(found.clone());
        }
        let row = registry::version(conn, form_id, version)?;
        let document = serde_json::from_str(&row.document).map_err(AppError::internal)?;
        let compiled = Arc::new(CompiledForm::compile(document).map_err(|p| {
            AppError::internal(format!(
                "published {form_id} {version} does not compile: {}",
                p.join("; ")
            ))
        })?);
        self.compiled
            .write()
            .expect("cache lock")
            .insert(key, compiled.clone());
        Ok(compiled)
    }
}

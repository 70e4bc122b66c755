//! Sites: the organisation units cases and users belong to (KZ CAM/CSC
//! offices; BT NCWC, Dzongkhag/Thromde offices and CSOs).

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::schema::sites;
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};

crate::ids::string_id! {
    /// A site, by its id (or, where the route says so, its code).
    SiteId
}

pub const PROGRAMMES: [&str; 2] = ["kz", "bt"];

/// A programme's code, as the API names it ([`PROGRAMMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProgrammeCode {
    Kz,
    Bt,
}

#[derive(
    Debug, Clone, PartialEq, Serialize, Queryable, Selectable, Insertable, utoipa::ToSchema,
)]
#[diesel(table_name = sites)]
pub struct Site {
    pub id: String,
    pub code: String,
    pub name: String,
    #[schema(value_type = ProgrammeCode)]
    pub programme: String,
    /// The organisation acronym BT case codes carry (`NCWC`, `RENEW`, …).
    pub org_code: Option<String>,
    pub active: bool,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    pub updated_at: chrono::NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub code: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(value_type = ProgrammeCode)]
    pub programme: String,
    /// The organisation acronym in Bhutan case codes (`NCWC`, `RENEW`, …).
    #[serde(default)]
    #[schema(pattern = "^[A-Z][A-Z0-9]{1,9}$")]
    pub org_code: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, AsChangeset, utoipa::ToSchema)]
#[diesel(table_name = sites)]
#[serde(deny_unknown_fields)]
pub struct SiteChanges {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(pattern = "^[A-Z][A-Z0-9]{1,9}$")]
    pub org_code: Option<String>,
    pub active: Option<bool>,
}

impl NewSite {
    fn check(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let code_ok = !self.code.is_empty()
            && self.code.len() <= 64
            && self
                .code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !code_ok {
            errors.push(FieldError::new(
                "/code",
                "must be 1–64 letters, digits, '-', '_' or '.'",
            ));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            errors.push(FieldError::new("/name", "must be 1–200 characters"));
        }
        errors.extend(crate::json::unsafe_text("/name", &self.name));
        if !PROGRAMMES.contains(&self.programme.as_str()) {
            errors.push(FieldError::new("/programme", "must be \"kz\" or \"bt\""));
        }
        if let Some(org) = &self.org_code {
            if !is_org_code(org) {
                errors.push(FieldError::new(
                    "/org_code",
                    "must be 2–10 capital letters or digits, starting with a letter",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn is_org_code(org: &str) -> bool {
    (2..=10).contains(&org.len())
        && org.starts_with(|c: char| c.is_ascii_uppercase())
        && org
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

pub fn create(conn: &mut DbConnection, new: NewSite) -> AppResult<Site> {
    new.check().map_err(|errors| AppError::Validation {
        detail: "the site is not valid".into(),
        errors,
    })?;
    let now = crate::time::now();
    let site = Site {
        id: uuid::Uuid::new_v4().to_string(),
        code: new.code,
        name: new.name.trim().to_string(),
        programme: new.programme,
        org_code: new.org_code,
        active: true,
        created_at: now,
        updated_at: now,
    };
    diesel::insert_into(sites::table)
        .values(&site)
        .execute(conn)
        .map_err(|e| match AppError::from(e) {
            AppError::Conflict(_) => {
                AppError::Conflict(format!("a site with code {:?} already exists", site.code))
            }
            other => other,
        })?;
    Ok(site)
}

pub fn update(conn: &mut DbConnection, id: &str, changes: SiteChanges) -> AppResult<Site> {
    if let Some(org) = &changes.org_code {
        if !is_org_code(org) {
            return Err(AppError::invalid_field(
                "/org_code",
                "must be 2–10 capital letters or digits, starting with a letter",
            ));
        }
    }
    if let Some(name) = &changes.name {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(AppError::invalid_field("/name", "must be 1–200 characters"));
        }
        crate::json::refuse_unsafe_text([("/name", name.as_str())])?;
    }
    let found = get(conn, id)?;
    if changes.name.is_some() || changes.org_code.is_some() || changes.active.is_some() {
        diesel::update(sites::table.find(&found.id))
            .set((&changes, sites::updated_at.eq(crate::time::now())))
            .execute(conn)?;
    }
    get(conn, id)
}

pub fn get(conn: &mut DbConnection, id: &str) -> AppResult<Site> {
    sites::table
        .find(id)
        .select(Site::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(format!("no site with id {id:?}")))
}

pub fn find_by_code(conn: &mut DbConnection, code: &str) -> AppResult<Option<Site>> {
    Ok(sites::table
        .filter(sites::code.eq(code))
        .select(Site::as_select())
        .first(conn)
        .optional()?)
}

/// The site a person named by its id or its code (`KZ-CAM-ALA`).
pub fn resolve(conn: &mut DbConnection, name: &str) -> AppResult<Option<Site>> {
    let by_id = sites::table
        .find(name)
        .select(Site::as_select())
        .first(conn)
        .optional()?;
    match by_id {
        Some(site) => Ok(Some(site)),
        None => find_by_code(conn, name.trim()),
    }
}

/// All sites, or only those with the given ids, ordered by programme and code.
pub fn list(conn: &mut DbConnection, only: Option<&[String]>) -> AppResult<Vec<Site>> {
    match only {
        // A few sites (a field worker's, asked for by every submission and
        // sync) one cached lookup each: SQLite compiles a list of ids in SQL
        // (`IN (…)`) afresh at every call.
        Some(ids) if ids.len() <= FEW_SITES => {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let site = sites::table
                    .find(id)
                    .select(Site::as_select())
                    .first(conn)
                    .optional()?;
                found.extend(site);
            }
            found.sort_by(|a, b| (&a.programme, &a.code).cmp(&(&b.programme, &b.code)));
            found.dedup_by(|a, b| a.id == b.id);
            Ok(found)
        }
        Some(ids) => Ok(sites::table
            .select(Site::as_select())
            .filter(sites::id.eq_any(ids))
            .order((sites::programme, sites::code))
            .load(conn)?),
        None => Ok(sites::table
            .select(Site::as_select())
            .order((sites::programme, sites::code))
            .load(conn)?),
    }
}

/// Up to this many sites, [`list`] looks each up by its id.
const FEW_SITES: usize = 8;

pub fn count(conn: &mut DbConnection) -> AppResult<i64> {
    Ok(sites::table.count().get_result(conn)?)
}

/// The sites both manuals name, created on the first start of an empty
/// database. Editable afterwards like any other site.
pub fn seed_defaults(conn: &mut DbConnection) -> AppResult<usize> {
    let mut created = 0;
    for (programme, code, name, org) in default_sites() {
        if find_by_code(conn, code)?.is_none() {
            create(
                conn,
                NewSite {
                    code: code.to_string(),
                    name: name.to_string(),
                    programme: programme.to_string(),
                    org_code: org.map(str::to_string),
                },
            )?;
            created += 1;
        }
    }
    Ok(created)
}

/// KZ manual §7.1 (the three test locations); BT SOPs §3 (NCWC, the
/// Dzongkhag and Thromde WCWC offices, the CSOs doing case management).
fn default_sites() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
)> {
    let mut list = vec![
        ("kz", "KZ-CSC-NUR", "CSC Nur-Sultan", None),
        ("kz", "KZ-CAM-ALA", "CAM Almaty", None),
        ("kz", "KZ-CAM-SHY", "CAM Shymkent/Turkestan", None),
        ("bt", "BT-NCWC", "NCWC (Thimphu)", Some("NCWC")),
        ("bt", "BT-RENEW", "RENEW", Some("RENEW")),
        ("bt", "BT-NL", "Nazhoen Lamtoen", Some("NL")),
    ];
    const DZONGKHAGS: [(&str, &str, &str); 20] = [
        ("BT-DZ-BUM", "Bumthang Dzongkhag", "BUM"),
        ("BT-DZ-CHU", "Chhukha Dzongkhag", "CHU"),
        ("BT-DZ-DAG", "Dagana Dzongkhag", "DAG"),
        ("BT-DZ-GAS", "Gasa Dzongkhag", "GAS"),
        ("BT-DZ-HAA", "Haa Dzongkhag", "HAA"),
        ("BT-DZ-LHU", "Lhuentse Dzongkhag", "LHU"),
        ("BT-DZ-MON", "Mongar Dzongkhag", "MON"),
        ("BT-DZ-PAR", "Paro Dzongkhag", "PAR"),
        ("BT-DZ-PEM", "Pemagatshel Dzongkhag", "PEM"),
        ("BT-DZ-PUN", "Punakha Dzongkhag", "PUN"),
        ("BT-DZ-SJO", "Samdrup Jongkhar Dzongkhag", "SJO"),
        ("BT-DZ-SAM", "Samtse Dzongkhag", "SAM"),
        ("BT-DZ-SAR", "Sarpang Dzongkhag", "SAR"),
        ("BT-DZ-THI", "Thimphu Dzongkhag", "THI"),
        ("BT-DZ-TGA", "Trashigang Dzongkhag", "TGA"),
        ("BT-DZ-TYA", "Trashiyangtse Dzongkhag", "TYA"),
        ("BT-DZ-TRO", "Trongsa Dzongkhag", "TRO"),
        ("BT-DZ-TSI", "Tsirang Dzongkhag", "TSI"),
        ("BT-DZ-WAN", "Wangdue Phodrang Dzongkhag", "WAN"),
        ("BT-DZ-ZHE", "Zhemgang Dzongkhag", "ZHE"),
    ];
    const THROMDES: [(&str, &str, &str); 4] = [
        ("BT-TH-THI", "Thimphu Thromde", "THT"),
        ("BT-TH-PHU", "Phuentsholing Thromde", "PHT"),
        ("BT-TH-GEL", "Gelephu Thromde", "GET"),
        ("BT-TH-SJO", "Samdrup Jongkhar Thromde", "SJT"),
    ];
    for (code, name, org) in DZONGKHAGS.iter().chain(THROMDES.iter()) {
        list.push(("bt", code, name, Some(org)));
    }
    list
}

//! The stored XForms: one per published form version and programme key,
//! made once and never again (Collect checks the md5 of the exact bytes).
//! Owns the `odk_xforms` table. A key rotation gives each version a new
//! XForm whose ODK version carries a suffix (`2021.1.1~k2`); that suffix
//! maps back to the same JSON-Schema version. So does a change of the
//! XForm writer ([`GENERATOR`]) that changes a version's bytes: the stored
//! XForm stays as it was, and a new one is made beside it.

use diesel::prelude::*;
use md5::{Digest, Md5};
use serde_json::Value;

use crate::crypto::keys;
use crate::db::schema::odk_xforms;
use crate::db::{write_tx, DbConnection};
use crate::error::{AppError, AppResult};
use crate::forms::registry;
use crate::time::now;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = odk_xforms)]
pub struct StoredXform {
    pub form_id: String,
    /// The JSON-Schema version it was made from.
    pub version: String,
    /// The version the XForm states (`<data version>`, `formList`).
    pub odk_version: String,
    /// The programme key it encrypts to.
    pub key_id: String,
    pub xml: String,
    /// Lowercase hex MD5 of `xml`'s bytes (`formList` `hash` is `md5:` + it).
    pub md5: String,
    pub created_at: chrono::NaiveDateTime,
    /// The [`GENERATOR`] that wrote it.
    pub generator: i32,
    /// It reads the phone's case list (`cases.csv`, ODK Entities): its
    /// manifest lists that file.
    pub case_list: bool,
}

/// The generation of the XForm writer. Raise it when `xform` writes a
/// form differently; each version is then written again once, and stored
/// as a new XForm only when its bytes changed. 2: ODK Entities (the case
/// list, `meta/entity`).
pub const GENERATOR: i32 = 2;

/// The ODK version of the `n`-th XForm (from 1) of a JSON-Schema version
/// (a new key or a new writer makes the next).
fn odk_version(version: &str, n: usize) -> String {
    if n <= 1 {
        version.to_string()
    } else {
        format!("{version}~k{n}")
    }
}

/// The XForm of a published version for its programme's current key: the
/// stored one, or made and stored now. A version the generator refuses is
/// an error naming the form, the schema location and why.
pub fn ensure(conn: &mut DbConnection, form_id: &str, version: &str) -> AppResult<StoredXform> {
    let row = registry::version(conn, form_id, version)?;
    let document: Value = serde_json::from_str(&row.document).map_err(AppError::internal)?;
    let programme = document
        .pointer("/x-form/programme")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::internal(format!("{form_id} {version} has no programme")))?
        .to_string();
    let key = keys::current(conn, &programme)?;
    // The newest XForm of this version for this key: current when this
    // writer made it; otherwise the one to compare the new bytes with.
    let stored = odk_xforms::table
        .filter(odk_xforms::form_id.eq(form_id))
        .filter(odk_xforms::version.eq(version))
        .filter(odk_xforms::key_id.eq(&key.kid))
        .order(odk_xforms::generator.desc())
        .select(StoredXform::as_select())
        .first(conn)
        .optional()?;
    if let Some(found) = &stored {
        if found.generator >= GENERATOR {
            return Ok(found.clone());
        }
    }
    let der = {
        use aws_lc_rs::encoding::AsDer;
        let public = keys::public_key_from_jwk(&key.jwk).map_err(AppError::internal)?;
        public
            .as_der()
            .map_err(|_| AppError::internal("the programme key has no DER form"))?
            .as_ref()
            .to_vec()
    };
    let earlier: i64 = odk_xforms::table
        .filter(odk_xforms::form_id.eq(form_id))
        .filter(odk_xforms::version.eq(version))
        .count()
        .get_result(conn)?;
    let refused = |problems: Vec<String>| AppError::Validation {
        detail: format!(
            "{form_id} {version} cannot be put on a phone (ODK Collect): {}",
            problems.join("; ")
        ),
        errors: Vec::new(),
    };
    // The XForm states the ODK version on its root (`<data version>`).
    let mut table = super::nodes::FormTable::build(&document).map_err(refused)?;
    if let Some(old) = &stored {
        // An older writer's XForm: the same bytes again keep it (a form the
        // change does not touch keeps its version on every phone).
        table.meta.version = old.odk_version.clone();
        let xml = super::xform::generate_from(&table, &der).map_err(refused)?;
        if xml == old.xml.as_bytes() {
            let case_list = table.meta.case == crate::forms::model::CaseRole::Updates;
            diesel::update(odk_xforms::table.find((&old.form_id, &old.odk_version)))
                .set((
                    odk_xforms::generator.eq(GENERATOR),
                    odk_xforms::case_list.eq(case_list),
                ))
                .execute(conn)?;
            return Ok(StoredXform {
                generator: GENERATOR,
                case_list,
                ..old.clone()
            });
        }
    }
    table.meta.version = odk_version(version, earlier as usize + 1);
    let xml = super::xform::generate_from(&table, &der).map_err(refused)?;
    let xml = String::from_utf8(xml).map_err(AppError::internal)?;
    let stored = StoredXform {
        form_id: form_id.to_string(),
        version: version.to_string(),
        odk_version: table.meta.version,
        key_id: key.kid.clone(),
        md5: hex::encode(Md5::digest(xml.as_bytes())),
        xml,
        created_at: now(),
        generator: GENERATOR,
        case_list: table.meta.case == crate::forms::model::CaseRole::Updates,
    };
    diesel::insert_into(odk_xforms::table)
        .values(&stored)
        .execute(conn)?;
    Ok(stored)
}

/// Makes the XForms the published versions lack for their programme's
/// current key (at start, after a key rotation). The versions refused are
/// returned with why; the others are stored.
pub fn ensure_all(conn: &mut DbConnection) -> AppResult<Vec<String>> {
    let programmes: Vec<String> = crate::auth::sites::PROGRAMMES
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut refused = Vec::new();
    for (_, info) in registry::published_in(conn, &programmes)? {
        let made = write_tx(conn, |conn| ensure(conn, &info.form_id, &info.version));
        match made {
            Ok(_) => {}
            Err(AppError::Validation { detail, .. }) => refused.push(detail),
            Err(other) => return Err(other),
        }
    }
    Ok(refused)
}

/// What `formList` says of one XForm: everything but its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub form_id: String,
    pub odk_version: String,
    pub md5: String,
    /// The form's title, as text (not XML).
    pub title: String,
    /// It reads the phone's case list: its manifest lists `cases.csv`.
    pub case_list: bool,
}

/// The XForms a phone of `programme` is offered: the newest published
/// version of each form, for the programme's current key. A read of three
/// small queries and no XForm bytes (Collect asks for it often); only
/// where a key rotation left an XForm unmade is one made now.
pub fn offered(conn: &mut DbConnection, programme: &str) -> AppResult<Vec<Listing>> {
    let newest = registry::newest_published_in(conn, programme)?;
    let key = keys::current(conn, programme)?;
    let form_ids: Vec<&str> = newest.iter().map(|n| n.form_id.as_str()).collect();
    let stored: Vec<(String, String, String, String, bool)> = odk_xforms::table
        .filter(odk_xforms::key_id.eq(&key.kid))
        .filter(odk_xforms::form_id.eq_any(&form_ids))
        // An older writer's XForm is written again by `ensure` below.
        .filter(odk_xforms::generator.eq(GENERATOR))
        .select((
            odk_xforms::form_id,
            odk_xforms::version,
            odk_xforms::odk_version,
            odk_xforms::md5,
            odk_xforms::case_list,
        ))
        .load(conn)?;
    newest
        .into_iter()
        .map(|n| {
            let found = stored
                .iter()
                .find(|(form, version, ..)| *form == n.form_id && *version == n.version);
            let (odk_version, md5, case_list) = match found {
                Some((_, _, odk_version, md5, case_list)) => {
                    (odk_version.clone(), md5.clone(), *case_list)
                }
                None => {
                    let made = write_tx(conn, |conn| ensure(conn, &n.form_id, &n.version))?;
                    (made.odk_version, made.md5, made.case_list)
                }
            };
            // An untitled form is named by its id, as its XForm is.
            let title = if n.title.is_empty() {
                n.form_id.clone()
            } else {
                n.title
            };
            Ok(Listing {
                form_id: n.form_id,
                odk_version,
                md5,
                title,
                case_list,
            })
        })
        .collect()
}

/// The XForms `offered` lists, with their bytes.
pub fn current(conn: &mut DbConnection, programme: &str) -> AppResult<Vec<StoredXform>> {
    offered(conn, programme)?
        .into_iter()
        .map(|l| get(conn, &l.form_id, &l.odk_version))
        .collect()
}

/// The XForm `formList` offers for `form_id` of `programme` (its bytes);
/// `None` when the programme offers no such form.
pub fn offered_one(
    conn: &mut DbConnection,
    programme: &str,
    form_id: &str,
) -> AppResult<Option<StoredXform>> {
    let Some(listing) = offered(conn, programme)?
        .into_iter()
        .find(|l| l.form_id == form_id)
    else {
        return Ok(None);
    };
    get(conn, form_id, &listing.odk_version).map(Some)
}

/// One stored XForm by the version it states.
pub fn get(conn: &mut DbConnection, form_id: &str, odk_version: &str) -> AppResult<StoredXform> {
    odk_xforms::table
        .find((form_id, odk_version))
        .select(StoredXform::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            AppError::NotFound(format!("form {form_id:?} has no version {odk_version:?}"))
        })
}

/// The JSON-Schema version an ODK version was made from (`2021.1~k2` →
/// `2021.1`), as submissions name it.
pub fn schema_version(
    conn: &mut DbConnection,
    form_id: &str,
    odk_version: &str,
) -> AppResult<String> {
    Ok(get(conn, form_id, odk_version)?.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_key_suffixes_the_version() {
        assert_eq!(odk_version("2021.1", 1), "2021.1");
        assert_eq!(odk_version("2021.1", 2), "2021.1~k2");
    }
}

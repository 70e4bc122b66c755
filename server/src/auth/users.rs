//! Users: one role each, the sites they work at, an Argon2id password.

use std::collections::BTreeMap;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::passwords::{self, NewPassword};
use super::{tokens, Role};
use crate::db::schema::{user_sites, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult, FieldError};

crate::ids::string_id! {
    /// A user (staff member) of the server.
    UserId
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    username: String,
    display_name: String,
    role: String,
    password_hash: String,
    must_change_password: bool,
    active: bool,
    created_at: chrono::NaiveDateTime,
    updated_at: chrono::NaiveDateTime,
    initials: Option<String>,
}

/// A user as shown to admins and coordinators: never the password hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub site_ids: Vec<String>,
    pub must_change_password: bool,
    pub active: bool,
    /// The initials of the worker's BT case codes (SOP §10.2) when set;
    /// otherwise they come from the display name.
    pub initials: Option<String>,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    pub updated_at: chrono::NaiveDateTime,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Lowercase letters, digits, `.`, `_`, `-`, `@`.
    #[schema(min_length = 3, max_length = 64, pattern = "^[a-z0-9._@-]+$")]
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Two or three capital letters A–Z for the worker's BT case codes,
    /// when the display name gives none (a name in another script).
    #[serde(default)]
    #[schema(pattern = "^[A-Z]{2,3}$")]
    pub initials: Option<String>,
    pub role: Role,
    /// Each by id or code; coordinators, field workers and analysts need one or more.
    #[serde(default)]
    pub site_ids: Vec<String>,
    /// When absent a one-time password is generated and returned once.
    #[serde(default)]
    #[schema(min_length = 10, max_length = 256)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    pub display_name: Option<String>,
    /// Two or three capital letters; an empty text clears them.
    #[schema(pattern = "^([A-Z]{2,3})?$")]
    pub initials: Option<String>,
    pub role: Option<Role>,
    pub site_ids: Option<Vec<String>>,
    pub active: Option<bool>,
}

/// What `create` hands back: the user and, if generated, the one-time password.
pub struct Created {
    pub user: User,
    pub one_time_password: Option<String>,
}

fn parse_role(raw: &str) -> AppResult<Role> {
    raw.parse()
        .map_err(|e: String| AppError::internal(format!("stored role: {e}")))
}

fn to_user(row: UserRow, site_ids: Vec<String>) -> AppResult<User> {
    Ok(User {
        role: parse_role(&row.role)?,
        id: row.id,
        username: row.username,
        display_name: row.display_name,
        site_ids,
        must_change_password: row.must_change_password,
        active: row.active,
        initials: row.initials,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Initials as a BT case code writes them (§10.2, `[A-Z]{2,3}`).
fn initials_problem(text: &str) -> Option<FieldError> {
    let ok = (2..=3).contains(&text.len()) && text.chars().all(|c| c.is_ascii_uppercase());
    (!ok).then(|| {
        FieldError::new(
            "/initials",
            "two or three capital letters A–Z, as they appear in the worker's case codes (e.g. KT)",
        )
    })
}

fn valid_username(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-@".contains(c))
}

/// The sites a user is to work at, each named by id or code (`KZ-CAM-ALA`),
/// as ids; an unknown one is 422 at its place in the list.
fn resolve_sites(conn: &mut DbConnection, role: Role, names: &[String]) -> AppResult<Vec<String>> {
    let needs_site = matches!(role, Role::Coordinator | Role::FieldWorker | Role::Analyst);
    if needs_site && names.is_empty() {
        return Err(AppError::invalid_field(
            "/site_ids",
            format!("a {role} must work at one site or more"),
        ));
    }
    let mut ids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        match super::sites::resolve(conn, name)? {
            Some(site) => ids.push(site.id),
            None => {
                return Err(AppError::invalid_field(
                    &format!("/site_ids/{i}"),
                    format!("no site with id or code {name:?}"),
                ))
            }
        }
    }
    Ok(ids)
}

/// Why `password` is too weak for `username` working at `site_ids`, if it
/// is. The sites' codes are words an attacker tries first in the password
/// of someone who works there.
fn weakness_for(
    conn: &mut DbConnection,
    username: &str,
    site_ids: &[String],
    password: &str,
) -> AppResult<Option<String>> {
    let codes: Vec<String> = super::sites::list(conn, Some(site_ids))?
        .into_iter()
        .map(|s| s.code)
        .collect();
    let personal: Vec<&str> = codes.iter().map(String::as_str).collect();
    Ok(passwords::weakness(password, username, &personal))
}

fn set_sites(conn: &mut DbConnection, user_id: &str, site_ids: &[String]) -> AppResult<()> {
    diesel::delete(user_sites::table.filter(user_sites::user_id.eq(user_id))).execute(conn)?;
    let mut unique: Vec<&String> = site_ids.iter().collect();
    unique.sort();
    unique.dedup();
    // One statement per row: multi-row inserts do not exist across both
    // dialects in diesel's MultiConnection.
    for site_id in unique {
        diesel::insert_into(user_sites::table)
            .values((
                user_sites::user_id.eq(user_id),
                user_sites::site_id.eq(site_id),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Creates a user with `password`, made from `new.password` by the caller
/// before the transaction (`NewPassword::hashed`): a generated one is
/// returned once and must be changed at first login.
pub fn create(conn: &mut DbConnection, new: NewUser, password: NewPassword) -> AppResult<Created> {
    let mut new = new;
    // Refused after the name and password are judged, so one answer names
    // every problem of those; the password check needs the site codes.
    let sites = resolve_sites(conn, new.role, &new.site_ids);
    let mut errors = Vec::new();
    let username = new.username.trim().to_lowercase();
    if !valid_username(&username) {
        errors.push(FieldError::new(
            "/username",
            "must be 3–64 characters: lowercase letters, digits, '.', '_', '-', '@'",
        ));
    }
    if let Some(name) = &new.display_name {
        errors.extend(crate::json::unsafe_text("/display_name", name));
    }
    if let Some(e) = new.initials.as_deref().and_then(initials_problem) {
        errors.push(e);
    }
    if !password.generated {
        let known = sites.as_deref().unwrap_or_default();
        if let Some(why) = weakness_for(conn, &username, known, &password.plain)? {
            errors.push(FieldError::new("/password", why));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation {
            detail: "the user is not valid".into(),
            errors,
        });
    }
    new.site_ids = sites?;

    let NewPassword {
        plain,
        hash,
        generated,
    } = password;
    let one_time_password = generated.then_some(plain);
    let now = crate::time::now();
    let row = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        display_name: new
            .display_name
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| username.clone()),
        username,
        role: new.role.as_str().to_string(),
        password_hash: hash,
        must_change_password: one_time_password.is_some(),
        active: true,
        created_at: now,
        updated_at: now,
        initials: new.initials.clone(),
    };
    diesel::insert_into(users::table)
        .values(&row)
        .execute(conn)
        .map_err(|e| match AppError::from(e) {
            AppError::Conflict(_) => {
                AppError::Conflict(format!("the username {:?} is taken", row.username))
            }
            other => other,
        })?;
    set_sites(conn, &row.id, &new.site_ids)?;
    Ok(Created {
        user: to_user(row, sorted(new.site_ids))?,
        one_time_password,
    })
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn sites_of(
    conn: &mut DbConnection,
    user_ids: &[String],
) -> AppResult<BTreeMap<String, Vec<String>>> {
    let pairs: Vec<(String, String)> = user_sites::table
        .filter(user_sites::user_id.eq_any(user_ids))
        .select((user_sites::user_id, user_sites::site_id))
        .order((user_sites::user_id, user_sites::site_id))
        .load(conn)?;
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, site) in pairs {
        map.entry(user).or_default().push(site);
    }
    Ok(map)
}

pub fn get(conn: &mut DbConnection, id: &str) -> AppResult<User> {
    let row: UserRow = users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AppError::NotFound(format!("no user with id {id:?}")))?;
    // Not `sites_of(&[id])`: SQLite compiles a list of ids in SQL (`IN (…)`)
    // afresh at every call, and this runs for every request signed in.
    let sites: Vec<String> = user_sites::table
        .filter(user_sites::user_id.eq(&row.id))
        .select(user_sites::site_id)
        .order(user_sites::site_id)
        .load(conn)?;
    to_user(row, sites)
}

pub fn find_by_username(conn: &mut DbConnection, username: &str) -> AppResult<Option<User>> {
    let id: Option<String> = users::table
        .filter(users::username.eq(username.trim().to_lowercase()))
        .select(users::id)
        .first(conn)
        .optional()?;
    id.map(|id| get(conn, &id)).transpose()
}

/// The user a person named by their id or their username.
pub fn resolve(conn: &mut DbConnection, name: &str) -> AppResult<Option<User>> {
    let by_id: Option<String> = users::table
        .find(name)
        .select(users::id)
        .first(conn)
        .optional()?;
    match by_id {
        Some(id) => get(conn, &id).map(Some),
        None => find_by_username(conn, name),
    }
}

/// Users ordered by username; restricted to users of the given sites when set.
pub fn list(conn: &mut DbConnection, at_sites: Option<&[String]>) -> AppResult<Vec<User>> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order(users::username)
        .into_boxed();
    if let Some(site_ids) = at_sites {
        let members = user_sites::table
            .filter(user_sites::site_id.eq_any(site_ids.to_vec()))
            .select(user_sites::user_id);
        query = query.filter(users::id.eq_any(members));
    }
    let rows: Vec<UserRow> = query.load(conn)?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut sites = sites_of(conn, &ids)?;
    rows.into_iter()
        .map(|r| {
            let s = sites.remove(&r.id).unwrap_or_default();
            to_user(r, s)
        })
        .collect()
}

/// Users with this role, disabled ones included.
pub fn count_with_role(conn: &mut DbConnection, role: Role) -> AppResult<i64> {
    Ok(users::table
        .filter(users::role.eq(role.as_str()))
        .count()
        .get_result(conn)?)
}

/// Applies an admin's changes. Disabling a user revokes all their tokens.
/// A change of sites goes through `cases::update_user`, which also tells
/// the user's phone of the cases it must drop.
pub fn update(conn: &mut DbConnection, id: &str, changes: UserChanges) -> AppResult<User> {
    let current = get(conn, id)?;
    let role = changes.role.unwrap_or(current.role);
    let mut site_ids = changes.site_ids.clone().unwrap_or(current.site_ids.clone());
    if changes.role.is_some() || changes.site_ids.is_some() {
        site_ids = resolve_sites(conn, role, &site_ids)?;
    }
    if let Some(name) = &changes.display_name {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(AppError::invalid_field(
                "/display_name",
                "must be 1–200 characters",
            ));
        }
        crate::json::refuse_unsafe_text([("/display_name", name.as_str())])?;
    }
    let initials = match changes.initials.as_deref() {
        None => current.initials.clone(),
        Some("") => None,
        Some(text) => {
            if let Some(e) = initials_problem(text) {
                return Err(AppError::Validation {
                    detail: "the user is not valid".into(),
                    errors: vec![e],
                });
            }
            Some(text.to_string())
        }
    };
    let stays_admin = role == Role::Admin && changes.active.unwrap_or(current.active);
    if current.role == Role::Admin && current.active && !stays_admin {
        let other_admins: i64 = users::table
            .filter(users::role.eq(Role::Admin.as_str()))
            .filter(users::active.eq(true))
            .filter(users::id.ne(id))
            .count()
            .get_result(conn)?;
        if other_admins == 0 {
            return Err(AppError::Conflict(
                "the last active admin cannot be disabled or given another role".into(),
            ));
        }
    }
    let now = crate::time::now();
    diesel::update(users::table.find(id))
        .set((
            users::display_name.eq(changes
                .display_name
                .as_deref()
                .map(str::trim)
                .unwrap_or(&current.display_name)),
            users::role.eq(role.as_str()),
            users::active.eq(changes.active.unwrap_or(current.active)),
            users::initials.eq(initials),
            users::updated_at.eq(now),
        ))
        .execute(conn)?;
    if changes.site_ids.is_some() {
        // Site membership is the access boundary: the policy refuses the
        // cases of a site the user left from now on (their phone hears of
        // them from `cases::update_user`).
        set_sites(conn, id, &site_ids)?;
    }
    if changes.active == Some(false) || changes.role.is_some_and(|r| r != current.role) {
        // A disabled user, or one whose powers changed, starts from a fresh login.
        tokens::revoke_all_for_user(conn, id)?;
    }
    get(conn, id)
}

/// Removes the initial admin password file once that password no longer
/// works, so a stale secret does not linger on disk. File I/O: call it off
/// the async threads.
pub fn forget_initial_password(path: &std::path::Path, old_password: &str) {
    if let Ok(contents) = std::fs::read_to_string(path) {
        if contents.trim() == old_password {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!(%err, file = %path.display(), "could not remove the initial password file");
            } else {
                tracing::info!(file = %path.display(), "initial admin password changed; file removed");
            }
        }
    }
}

/// Checks the user's current password (Argon2: call off the write
/// transaction) and answers the hash it matched, for
/// [`change_own_password`].
pub fn verify_own_password(
    conn: &mut DbConnection,
    user_id: &str,
    current_password: &str,
) -> AppResult<String> {
    let stored: String = users::table
        .find(user_id)
        .select(users::password_hash)
        .first(conn)?;
    if !passwords::verify(current_password, &stored) {
        return Err(AppError::invalid_field(
            "/current_password",
            "is not the current password",
        ));
    }
    Ok(stored)
}

/// Sets a password chosen by the user and clears the must-change flag,
/// once [`verify_own_password`] has matched `verified_hash`; a password
/// changed in between is a conflict. Every session of the user ends, the
/// one that asked included (a session opened with a one-time password
/// ends with its change): the caller issues a fresh one. Device tokens
/// stay; the user lists and revokes them on `/me`.
pub fn change_own_password(
    conn: &mut DbConnection,
    user_id: &str,
    verified_hash: &str,
    current_password: &str,
    new: &NewPassword,
) -> AppResult<()> {
    if current_password == new.plain {
        return Err(AppError::invalid_field(
            "/new_password",
            "must differ from the current password",
        ));
    }
    let user = get(conn, user_id)?;
    if let Some(why) = weakness_for(conn, &user.username, &user.site_ids, &new.plain)? {
        return Err(AppError::invalid_field("/new_password", why));
    }
    let changed = diesel::update(
        users::table
            .find(user_id)
            .filter(users::password_hash.eq(verified_hash)),
    )
    .set((
        users::password_hash.eq(&new.hash),
        users::must_change_password.eq(false),
        users::updated_at.eq(crate::time::now()),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Err(AppError::Conflict(
            "the password was changed at the same moment from elsewhere; sign in again".into(),
        ));
    }
    tokens::revoke_sessions_of(conn, user_id)?;
    Ok(())
}

/// An administrator's reset: the user must change it at next login, and all
/// of the user's tokens stop working.
pub fn reset_password(conn: &mut DbConnection, user_id: &str, new: &NewPassword) -> AppResult<()> {
    let user = get(conn, user_id)?;
    if !new.generated {
        if let Some(why) = weakness_for(conn, &user.username, &user.site_ids, &new.plain)? {
            return Err(AppError::invalid_field("/password", why));
        }
    }
    diesel::update(users::table.find(user_id))
        .set((
            users::password_hash.eq(&new.hash),
            users::must_change_password.eq(true),
            users::updated_at.eq(crate::time::now()),
        ))
        .execute(conn)?;
    tokens::revoke_all_for_user(conn, user_id)?;
    Ok(())
}

/// The active user with this username and their password hash, for login.
pub fn credentials(conn: &mut DbConnection, username: &str) -> AppResult<Option<(String, String)>> {
    Ok(users::table
        .filter(users::username.eq(username.trim().to_lowercase()))
        .filter(users::active.eq(true))
        .select((users::id, users::password_hash))
        .first(conn)
        .optional()?)
}

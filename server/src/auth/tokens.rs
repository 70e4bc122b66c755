//! Opaque bearer tokens: 256 random bits, shown once, stored only as their
//! SHA-256. Sessions come from a login; device tokens are made by an admin or
//! coordinator for a field worker's phone and live much longer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{users, Principal, Role};
use crate::db::schema::{tokens, users as users_table};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};

crate::ids::string_id! {
    /// A session or device token, by its id (never its secret).
    TokenId
}

pub const KIND_SESSION: &str = "session";
pub const KIND_DEVICE: &str = "device";

/// Tokens carry this prefix so a leaked one is recognisable in a scan.
pub const PREFIX: &str = "cs_";

/// `last_used_at` is refreshed at most this often, to keep reads cheap.
const LAST_USED_GRANULARITY_MINUTES: i64 = 5;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tokens)]
struct TokenRow {
    id: String,
    user_id: String,
    kind: String,
    token_hash: String,
    label: Option<String>,
    created_by: Option<String>,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    last_used_at: Option<NaiveDateTime>,
    revoked_at: Option<NaiveDateTime>,
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub label: Option<String>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::json::utc")]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc")]
    pub expires_at: NaiveDateTime,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub last_used_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "crate::json::utc_opt")]
    pub revoked_at: Option<NaiveDateTime>,
}

impl From<TokenRow> for TokenInfo {
    fn from(r: TokenRow) -> Self {
        TokenInfo {
            id: r.id,
            user_id: r.user_id,
            kind: r.kind,
            label: r.label,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A freshly issued token: the secret is in `token` and nowhere else.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Issued {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn issue(
    conn: &mut DbConnection,
    user_id: &str,
    kind: &str,
    label: Option<String>,
    created_by: Option<String>,
    lifetime: Duration,
) -> AppResult<Issued> {
    let secret = new_secret();
    let now = crate::time::now();
    let row = TokenRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_string(),
        kind: kind.to_string(),
        token_hash: digest(&secret),
        label,
        created_by,
        created_at: now,
        expires_at: now + lifetime,
        last_used_at: None,
        revoked_at: None,
    };
    diesel::insert_into(tokens::table)
        .values(&row)
        .execute(conn)?;
    Ok(Issued {
        token: secret,
        info: row.into(),
    })
}

pub fn issue_session(conn: &mut DbConnection, user_id: &str, ttl_hours: i64) -> AppResult<Issued> {
    issue(
        conn,
        user_id,
        KIND_SESSION,
        None,
        None,
        Duration::hours(ttl_hours),
    )
}

/// A device token for a field worker's phone, lasting `ttl_days`, at most
/// `max_days` (the server's `device_token_ttl_days`).
pub fn issue_device(
    conn: &mut DbConnection,
    for_user: &str,
    label: &str,
    created_by: Option<&str>,
    ttl_days: i64,
    max_days: i64,
) -> AppResult<Issued> {
    let label = label.trim();
    if label.is_empty() || label.len() > 100 {
        return Err(AppError::invalid_field(
            "/label",
            "must be 1–100 characters",
        ));
    }
    if !(1..=max_days).contains(&ttl_days) {
        return Err(AppError::invalid_field(
            "/expires_in_days",
            format!(
                "must be from 1 to {max_days}: device tokens last at most {max_days} days on this server (device_token_ttl_days)"
            ),
        ));
    }
    let user = users::get(conn, for_user).map_err(|_| {
        AppError::invalid_field("/user_id", format!("no user with id {for_user:?}"))
    })?;
    if user.role != Role::FieldWorker {
        return Err(AppError::invalid_field(
            "/user_id",
            "device tokens are made for field workers only",
        ));
    }
    if !user.active {
        return Err(AppError::invalid_field("/user_id", "the user is disabled"));
    }
    issue(
        conn,
        for_user,
        KIND_DEVICE,
        Some(label.to_string()),
        created_by.map(str::to_string),
        Duration::days(ttl_days),
    )
}

/// Resolves a presented secret to the calling principal, or `None` when the
/// token is unknown, expired or revoked, or its user is disabled. Reads
/// only: it also says whether the token's `last_used_at` is due to be
/// refreshed, which the caller has the committer do with [`touch`]
/// (`http::extract::note_token_use`), so that no request waits for
/// SQLite's write lock beside ingest to stamp its token (#19 item 7).
pub fn authenticate(conn: &mut DbConnection, secret: &str) -> AppResult<Option<(Principal, bool)>> {
    Ok(find(conn, secret)?.map(|(principal, _, stale)| (principal, stale)))
}

/// Records that token `id` was used at `at`.
pub fn touch(conn: &mut DbConnection, id: &str, at: NaiveDateTime) -> AppResult<()> {
    diesel::update(tokens::table.find(id))
        .set(tokens::last_used_at.eq(at))
        .execute(conn)?;
    Ok(())
}

/// The principal of a presented secret, its token's kind, and whether its
/// `last_used_at` is stale. Reads only.
fn find(conn: &mut DbConnection, secret: &str) -> AppResult<Option<(Principal, String, bool)>> {
    if !secret.starts_with(PREFIX) || secret.len() > 100 {
        return Ok(None);
    }
    let now = crate::time::now();
    let found: Option<(TokenRow, bool)> = tokens::table
        .inner_join(users_table::table)
        .filter(tokens::token_hash.eq(digest(secret)))
        .select((TokenRow::as_select(), users_table::active))
        .first(conn)
        .optional()?;
    let Some((token, active)) = found else {
        return Ok(None);
    };
    if !active || token.revoked_at.is_some() || token.expires_at <= now {
        return Ok(None);
    }
    let stale = token
        .last_used_at
        .is_none_or(|t| now - t > Duration::minutes(LAST_USED_GRANULARITY_MINUTES));
    let user = users::get(conn, &token.user_id)?;
    Ok(Some((
        Principal {
            user_id: user.id,
            username: user.username,
            role: user.role,
            site_ids: user.site_ids,
            token_created_by: token.created_by.filter(|_| token.kind == KIND_DEVICE),
            token_id: token.id,
            must_change_password: user.must_change_password,
        },
        token.kind,
        stale,
    )))
}

/// A phone's credentials (OpenRosa: HTTP Basic with the device token as
/// password, or the token in the path): [`authenticate`], then the token
/// must be a device token and, when a username came with it, its user's.
/// One hash lookup, never argon2.
pub fn authenticate_device(
    conn: &mut DbConnection,
    username: Option<&str>,
    secret: &str,
) -> AppResult<Option<(Principal, bool)>> {
    let Some((principal, kind, stale)) = find(conn, secret)? else {
        return Ok(None);
    };
    let same_user = username.is_none_or(|u| u == principal.username);
    Ok((kind == KIND_DEVICE && same_user).then_some((principal, stale)))
}

pub fn get(conn: &mut DbConnection, id: &str) -> AppResult<TokenInfo> {
    tokens::table
        .find(id)
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?
        .map(TokenInfo::from)
        .ok_or_else(|| AppError::NotFound(format!("no token with id {id:?}")))
}

/// Device tokens, newest first; only those of the given users when set.
pub fn list_devices(
    conn: &mut DbConnection,
    of_users: Option<&[String]>,
) -> AppResult<Vec<TokenInfo>> {
    let mut query = tokens::table
        .filter(tokens::kind.eq(KIND_DEVICE))
        .select(TokenRow::as_select())
        .order(tokens::created_at.desc())
        .into_boxed();
    if let Some(ids) = of_users {
        query = query.filter(tokens::user_id.eq_any(ids.to_vec()));
    }
    Ok(query.load(conn)?.into_iter().map(Into::into).collect())
}

/// Revokes one token; revoking an already revoked token is a no-op.
pub fn revoke(conn: &mut DbConnection, id: &str) -> AppResult<TokenInfo> {
    get(conn, id)?;
    diesel::update(tokens::table.find(id).filter(tokens::revoked_at.is_null()))
        .set(tokens::revoked_at.eq(crate::time::now()))
        .execute(conn)?;
    get(conn, id)
}

/// Ends every login session of the user (device tokens stay).
pub fn revoke_sessions_of(conn: &mut DbConnection, user_id: &str) -> AppResult<usize> {
    Ok(diesel::update(
        tokens::table
            .filter(tokens::user_id.eq(user_id))
            .filter(tokens::kind.eq(KIND_SESSION))
            .filter(tokens::revoked_at.is_null()),
    )
    .set(tokens::revoked_at.eq(crate::time::now()))
    .execute(conn)?)
}

pub fn revoke_all_for_user(conn: &mut DbConnection, user_id: &str) -> AppResult<usize> {
    Ok(diesel::update(
        tokens::table
            .filter(tokens::user_id.eq(user_id))
            .filter(tokens::revoked_at.is_null()),
    )
    .set(tokens::revoked_at.eq(crate::time::now()))
    .execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bit_and_hashed() {
        let s = new_secret();
        let raw = URL_SAFE_NO_PAD.decode(&s[PREFIX.len()..]).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(digest(&s).len(), 64);
        assert_ne!(digest(&s), s);
    }
}

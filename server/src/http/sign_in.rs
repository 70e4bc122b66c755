//! Signing in with a username and password, and changing one's own
//! password: one flow each for the JSON API (`POST /api/v1/sessions`,
//! `POST /api/v1/me/password`) and the console's forms. The attempt is
//! reserved against the throttle before the password is checked (so
//! parallel guesses cannot outrun it); repeated failures are slowed, then
//! refused for a while (`AppError::TooManyRequests`).

use actix_web::web;

use crate::app::{AppState, Audited};
use crate::audit::{self, Event, Origin};
use crate::auth::{passwords, throttle, tokens, users, Principal};
use crate::db::write_tx;
use crate::error::AppResult;

/// A new session.
pub struct SignedIn {
    /// The session token (shown once: the caller keeps it).
    pub token: String,
    pub token_id: String,
    pub expires_at: chrono::NaiveDateTime,
    pub user: users::User,
}

/// How a sign-in ended, when it was not refused outright.
pub enum SignIn {
    Ok(Box<SignedIn>),
    WrongCredentials,
}

pub async fn sign_in(
    state: &web::Data<AppState>,
    origin: Origin,
    username: String,
    password: String,
) -> AppResult<SignIn> {
    let keys = throttle::Keys::new(&username, origin.client_ip.as_deref().unwrap_or("unknown"));
    let rules = state.settings.login.clone();

    let verdict = {
        let keys = keys.clone();
        state
            .db(move |conn| throttle::reserve(conn, &keys, &rules, crate::time::now()))
            .await?
    };
    match verdict {
        throttle::Verdict::Locked { retry_after_secs } => {
            let origin = origin.clone();
            state
                .db(move |conn| {
                    audit::record(
                        conn,
                        &origin,
                        Event::new(None, "login_refused").detail("throttled"),
                    )
                })
                .await?;
            return Err(crate::error::AppError::TooManyRequests { retry_after_secs });
        }
        throttle::Verdict::Allow(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
        throttle::Verdict::Allow(_) => {}
    }

    let ttl = state.settings.session_ttl_hours;
    state
        .db(move |conn| {
            let found = users::credentials(conn, &username)?;
            // Verify against a decoy when the user is unknown, so the answer
            // takes as long and says as little either way.
            let (user_id, hash) = match &found {
                Some((id, hash)) => (Some(id.clone()), hash.as_str()),
                None => (None, passwords::decoy_hash()),
            };
            let password_ok = passwords::verify(&password, hash);
            write_tx(conn, |conn| match user_id.filter(|_| password_ok) {
                None => {
                    // The attempt already counts as failed (reserved above);
                    // one row per password verified and found wrong.
                    audit::record(conn, &origin, Event::new(None, "login_failed"))?;
                    Ok(SignIn::WrongCredentials)
                }
                Some(user_id) => {
                    throttle::release(conn, &keys)?;
                    let issued = tokens::issue_session(conn, &user_id, ttl)?;
                    let user = users::get(conn, &user_id)?;
                    audit::record(
                        conn,
                        &origin,
                        Event::new(None, "login").object("user", &user_id),
                    )?;
                    Ok(SignIn::Ok(Box::new(SignedIn {
                        token: issued.token,
                        token_id: issued.info.id,
                        expires_at: issued.info.expires_at,
                        user,
                    })))
                }
            })
        })
        .await
}

/// Changes `me`'s password. Every session of the user ends, the one used
/// here included; the answer is a fresh session. The first admin's
/// one-time password file is removed once that password is changed.
pub async fn change_password(
    state: &web::Data<AppState>,
    origin: Origin,
    me: Principal,
    current_password: String,
    new_password: String,
) -> AppResult<tokens::Issued> {
    let initial_password_file = state.settings.initial_admin_password_path();
    let ttl = state.settings.session_ttl_hours;
    let changed_from = current_password.clone();
    let user_id = me.user_id.clone();
    // Both Argon2 runs on the CPU pool, before the write transaction.
    let verified_hash = {
        let (user_id, current_password) = (user_id.clone(), current_password.clone());
        state
            .cpu_db(0, move |conn| {
                users::verify_own_password(conn, &user_id, &current_password)
            })
            .await?
    };
    let new = state.hashed_password(Some(new_password)).await?;
    let issued = state
        .audited(origin, me, "password_changed", move |conn| {
            users::change_own_password(conn, &user_id, &verified_hash, &current_password, &new)?;
            let issued = tokens::issue_session(conn, &user_id, ttl)?;
            Ok((issued, Audited::object("user", user_id.as_str())))
        })
        .await?;
    let forgotten =
        web::block(move || users::forget_initial_password(&initial_password_file, &changed_from))
            .await;
    if let Err(err) = forgotten {
        tracing::warn!(%err, "could not check the initial password file");
    }
    Ok(issued)
}

//! Staff and where they work: `users`, `sites` and the phones' device
//! `tokens`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::shell::{audit_change, create_private, with_db};
use super::CliError;
use crate::auth::passwords::NewPassword;
use crate::auth::{collect_settings, sites, tokens, users, Role};
use crate::config::Settings;
use crate::db::{write_tx, DbConnection};
use crate::error::AppError;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; prints a one-time password to change at first login.
    Add(AddUser),
    /// List users.
    List,
    /// Disable a user and revoke all their tokens.
    Disable { username: String },
    /// Set a new password (read from standard input, or generated and printed);
    /// the user must change it at next login.
    SetPassword { username: String },
}

#[derive(Debug, Args)]
pub struct AddUser {
    pub username: String,
    #[arg(long)]
    pub role: Role,
    /// Site code (repeatable), e.g. --site KZ-CAM-ALA.
    #[arg(long = "site")]
    pub sites: Vec<String>,
    #[arg(long)]
    pub display_name: Option<String>,
    /// Initials of the worker's BT case codes (two or three capitals),
    /// when the display name gives none.
    #[arg(long)]
    pub initials: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Create a site.
    Add {
        code: String,
        name: String,
        #[arg(long)]
        programme: String,
        /// Organisation acronym used in BT case codes.
        #[arg(long)]
        org_code: Option<String>,
    },
    /// List sites.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a device token for a field worker; printed once.
    Create {
        username: String,
        #[arg(long)]
        label: String,
        #[arg(long)]
        days: Option<i64>,
    },
    /// Make a device token for a field worker and print ODK Collect's
    /// settings QR code for it (shown once): scanning it sets up the phone.
    Qr {
        username: String,
        #[arg(long, default_value = "ODK Collect")]
        label: String,
        #[arg(long)]
        days: Option<i64>,
        /// The programme the phone is for, when the user works in more
        /// than one.
        #[arg(long)]
        programme: Option<String>,
        /// Also write the QR code as a PNG to this file (readable by its
        /// owner only: it holds the token).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// List device tokens.
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

impl clap::builder::ValueParserFactory for Role {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<Role>())
    }
}

pub(super) fn users(settings: &Settings, cmd: UsersCommand) -> Result<(), CliError> {
    with_db(settings, |conn| users_command(conn, cmd))
}

pub(super) fn sites(settings: &Settings, cmd: SitesCommand) -> Result<(), CliError> {
    with_db(settings, |conn| sites_command(conn, cmd))
}

pub(super) fn tokens(settings: &Settings, cmd: TokensCommand) -> Result<(), CliError> {
    let ttl = settings.device_token_ttl_days;
    let public_url = settings.public_url.clone();
    with_db(settings, |conn| {
        tokens_command(conn, cmd, ttl, public_url.as_deref())
    })
}

fn user_by_name(conn: &mut DbConnection, username: &str) -> Result<users::User, CliError> {
    users::resolve(conn, username)?
        .ok_or_else(|| CliError::App(format!("no user with username or id {username:?}")))
}

fn users_command(conn: &mut DbConnection, cmd: UsersCommand) -> Result<(), CliError> {
    match cmd {
        UsersCommand::Add(add) => {
            let mut site_ids = Vec::new();
            for code in &add.sites {
                let site = sites::resolve(conn, code)?
                    .ok_or_else(|| CliError::App(format!("no site with code or id {code:?}")))?;
                site_ids.push(site.id);
            }
            let password = NewPassword::hashed(None);
            let created = write_tx(conn, |conn| {
                let created = users::create(
                    conn,
                    users::NewUser {
                        username: add.username,
                        display_name: add.display_name,
                        initials: add.initials,
                        role: add.role,
                        site_ids,
                        password: None,
                    },
                    password,
                )?;
                audit_change(conn, "user_created", "user", &created.user.id)?;
                Ok::<_, AppError>(created)
            })?;
            println!(
                "created {} ({}); one-time password: {}",
                created.user.username,
                created.user.role,
                created.one_time_password.unwrap_or_default()
            );
        }
        UsersCommand::List => {
            let all_sites = sites::list(conn, None)?;
            println!("{:<24} {:<13} {:<7} sites", "username", "role", "active");
            for u in users::list(conn, None)? {
                let codes: Vec<&str> = u
                    .site_ids
                    .iter()
                    .filter_map(|id| all_sites.iter().find(|s| &s.id == id))
                    .map(|s| s.code.as_str())
                    .collect();
                println!(
                    "{:<24} {:<13} {:<7} {}",
                    u.username,
                    u.role.as_str(),
                    u.active,
                    codes.join(",")
                );
            }
        }
        UsersCommand::Disable { username } => {
            let user = user_by_name(conn, &username)?;
            write_tx(conn, |conn| {
                users::update(
                    conn,
                    &user.id,
                    users::UserChanges {
                        active: Some(false),
                        ..Default::default()
                    },
                )?;
                audit_change(conn, "user_updated", "user", &user.id)
            })?;
            println!("disabled {username}; all of its tokens are revoked");
        }
        UsersCommand::SetPassword { username } => {
            let user = user_by_name(conn, &username)?;
            let stdin = std::io::stdin();
            let chosen = if stdin.is_terminal() {
                None
            } else {
                let mut line = String::new();
                stdin
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| CliError::App(format!("reading the password: {e}")))?;
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                (!line.is_empty()).then_some(line)
            };
            let password = NewPassword::hashed(chosen);
            write_tx(conn, |conn| {
                users::reset_password(conn, &user.id, &password)?;
                audit_change(conn, "password_reset", "user", &user.id)
            })?;
            if password.generated {
                println!("one-time password for {username}: {}", password.plain);
            } else {
                println!("password set for {username}; it must be changed at next login");
            }
        }
    }
    Ok(())
}

fn sites_command(conn: &mut DbConnection, cmd: SitesCommand) -> Result<(), CliError> {
    match cmd {
        SitesCommand::Add {
            code,
            name,
            programme,
            org_code,
        } => {
            let site = write_tx(conn, |conn| {
                let site = sites::create(
                    conn,
                    sites::NewSite {
                        code,
                        name,
                        programme,
                        org_code,
                    },
                )?;
                audit_change(conn, "site_created", "site", &site.id)?;
                Ok::<_, AppError>(site)
            })?;
            println!("created site {} ({})", site.code, site.id);
        }
        SitesCommand::List => {
            println!(
                "{:<14} {:<3} {:<6} {:<7} name",
                "code", "pgm", "org", "active"
            );
            for s in sites::list(conn, None)? {
                println!(
                    "{:<14} {:<3} {:<6} {:<7} {}",
                    s.code,
                    s.programme,
                    s.org_code.as_deref().unwrap_or("-"),
                    s.active,
                    s.name
                );
            }
        }
    }
    Ok(())
}

fn tokens_command(
    conn: &mut DbConnection,
    cmd: TokensCommand,
    default_days: i64,
    public_url: Option<&str>,
) -> Result<(), CliError> {
    match cmd {
        TokensCommand::Create {
            username,
            label,
            days,
        } => {
            let user = user_by_name(conn, &username)?;
            let issued = write_tx(conn, |conn| {
                let issued = tokens::issue_device(
                    conn,
                    &user.id,
                    &label,
                    None,
                    days.unwrap_or(default_days),
                    default_days,
                )?;
                audit_change(conn, "device_token_created", "token", &issued.info.id)?;
                Ok::<_, AppError>(issued)
            })?;
            println!(
                "device token {} for {username}, expires {}; shown once:\n{}",
                issued.info.id, issued.info.expires_at, issued.token
            );
        }
        TokensCommand::Qr {
            username,
            label,
            days,
            programme,
            png,
        } => {
            let public_url = collect_settings::require_public_url(public_url)?;
            let user = user_by_name(conn, &username)?;
            let programme = collect_settings::programme_for(conn, &user, programme.as_deref())?;
            let issued = write_tx(conn, |conn| {
                let issued = tokens::issue_device(
                    conn,
                    &user.id,
                    &label,
                    None,
                    days.unwrap_or(default_days),
                    default_days,
                )?;
                audit_change(conn, "device_token_created", "token", &issued.info.id)?;
                Ok::<_, AppError>(issued)
            })?;
            let settings =
                collect_settings::for_token(public_url, &programme, &user.username, &issued.token);
            if let Some(path) = &png {
                create_private(path)?
                    .write_all(&collect_settings::qr_png(&settings.settings))
                    .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
            }
            let code = qrcode::QrCode::new(settings.settings.as_bytes())
                .map_err(|e| CliError::App(format!("the QR code: {e}")))?;
            println!(
                "device token {} for {username}, expires {}; ODK Collect is set to {}.\n\
                 Scan this in Collect (Settings, Project management, Reconfigure with QR code); shown once:\n\n{}\n\nThe same as text:\n{}",
                issued.info.id,
                issued.info.expires_at,
                settings.server_url,
                code.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build(),
                settings.settings
            );
            if let Some(path) = png {
                println!("PNG written to {}", path.display());
            }
        }
        TokensCommand::List => {
            let all_users = users::list(conn, None)?;
            println!(
                "{:<36} {:<20} {:<20} {:<20} revoked",
                "id", "user", "label", "expires"
            );
            for t in tokens::list_devices(conn, None)? {
                let owner = all_users
                    .iter()
                    .find(|u| u.id == t.user_id)
                    .map(|u| u.username.as_str())
                    .unwrap_or("?");
                println!(
                    "{:<36} {:<20} {:<20} {:<20} {}",
                    t.id,
                    owner,
                    t.label.as_deref().unwrap_or("-"),
                    t.expires_at.format("%Y-%m-%d %H:%M"),
                    t.revoked_at.is_some()
                );
            }
        }
        TokensCommand::Revoke { id } => {
            write_tx(conn, |conn| {
                tokens::revoke(conn, &id)?;
                audit_change(conn, "token_revoked", "token", &id)
            })?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

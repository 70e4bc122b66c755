//! `casesync seed` (hidden; for the benchmarks, never for a real centre):
//! fills the server's data directory with realistic cases fast. Each case
//! is a distinct child opened by a field worker of one of the default
//! sites, then the programme's follow-up forms in a realistic order, their
//! answers the shipped fixtures (`tests/fixtures/forms/<form>/valid.json`)
//! with names, sexes, birth dates and dates varied per case.
//!
//! Nothing is written by hand: every form goes through ingest's own
//! `prepare_opened` (envelope, published version, access, validation,
//! export cells) and `store` (case, timeline, fold, deadlines,
//! reconciliation, consents, audit row) — the server's code — only
//! without HTTP and without the RSA decryption (the envelope is sealed for
//! the programme key as a phone seals it, so the stored record is as
//! large as a real one). Preparing runs on `--jobs` threads; one writer
//! stores `--batch` cases per transaction, each form in a savepoint of its
//! own, so that a form ingest refuses is left out alone. (The group
//! committer takes savepoints only when a member fails; here they cost
//! little, measured at 386,000 referrals.)

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use chrono::{Datelike, Duration, NaiveDate};
use diesel::prelude::*;
use diesel::Connection;
use serde_json::{json, Value};

use super::shell::{audit_change, create_private, shell_actor};
use super::CliError;
use crate::app::AppState;
use crate::audit::Origin;
use crate::auth::{sites, tokens, users, Principal, Role};
use crate::config::Settings;
use crate::crypto::{jwe, keys};
use crate::db::schema::cases;
use crate::db::{write_tx, DbConnection};
use crate::error::AppResult;
use crate::forms::model::{CaseRole, FieldKind};
use crate::forms::registry;
use crate::ingest::{self, Opened, Prepared, ReceivedFile};
use crate::server;
use crate::submissions::envelope::AttachmentDeclaration;

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// How many cases to add (each a new child).
    #[arg(long)]
    pub cases: usize,
    /// Forms per case on average, the opening form included (each case
    /// gets between half and one and a half times as many).
    #[arg(long, default_value_t = 15)]
    pub forms_per_case: usize,
    /// The form fixtures: `<dir>/<form id>/valid.json`.
    #[arg(long, default_value = "tests/fixtures/forms")]
    pub fixtures: PathBuf,
    /// The password of every account the seed creates (`seed-admin`,
    /// `seed-coord-<site>`, `seed-worker-<site>-<n>`).
    #[arg(long, default_value = "Seeded bench passphrase 71")]
    pub password: String,
    /// Field workers per site.
    #[arg(long, default_value_t = 5)]
    pub workers_per_site: usize,
    /// Field workers in all instead, spread over the seeded sites (the
    /// first sites get one more when they do not divide evenly).
    #[arg(long, conflicts_with = "workers_per_site")]
    pub workers: Option<usize>,
    /// Give the cases to the field workers in turn rather than at random:
    /// with `--cases` a multiple of the workers, each holds as many
    /// (`seed --workers 1000 --cases 50000 --in-turn` gives 50 each).
    #[arg(long)]
    pub in_turn: bool,
    /// Close no case (by default about three in ten are closed when they
    /// have more than one form): every case stays on its worker's phone.
    #[arg(long)]
    pub all_open: bool,
    /// Make a device token for each seeded field worker (those that exist
    /// already too) and write `username token` lines to this file, which
    /// only its owner may read: phones of a benchmark sign in without a
    /// password (no Argon2 per phone).
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
    /// Only this programme's sites (`kz` or `bt`); both by default.
    #[arg(long)]
    pub programme: Option<String>,
    /// Cases stored per transaction.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Threads preparing forms beside the one that stores them (default:
    /// the machine's cores less one, at least one).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// The forms of a case after its opening one, per programme: the first
/// ones in the order a case goes, then the recurring ones, then closure
/// for some cases. A form without a fixture is left out.
struct Flow {
    programme: &'static str,
    opens: &'static str,
    first: &'static [&'static str],
    recurring: &'static [&'static str],
    closes: &'static str,
}

const FLOWS: [Flow; 2] = [
    Flow {
        programme: "kz",
        opens: "kz.referral",
        first: &[
            "kz.case_intake",
            "kz.initial_assessment",
            "kz.child",
            "kz.social_assessment",
            "kz.decision",
            "kz.care_plan",
        ],
        recurring: &[
            "kz.monthly_case_report",
            "kz.communication",
            "kz.care_plan_review",
            "kz.file_review",
            "kz.family_tracing",
            "kz.medical_exam",
            "kz.cp_meeting",
            "kz.child_protection_plan",
            "kz.cpp_review",
            "kz.police_coordination",
            "kz.ngo_referral_request",
        ],
        closes: "kz.case_closure",
    },
    Flow {
        programme: "bt",
        opens: "bt.registration",
        first: &[
            "bt.referral",
            "bt.consent_child",
            "bt.consent_caregiver",
            "bt.assessment",
            "bt.case_plan",
        ],
        recurring: &[
            "bt.follow_up",
            "bt.services_provided",
            "bt.review",
            "bt.child_feedback",
            "bt.caregiver_feedback",
            "bt.case_file_checklist",
        ],
        closes: "bt.case_closure",
    },
];

/// Given names (female, male), second names and family names per
/// programme: three parts, so that tens of thousands of children per sex
/// have distinct names.
const KZ_NAMES: [&[&str]; 4] = [
    &[
        "Aigerim", "Dana", "Aruzhan", "Madina", "Zhanel", "Amina", "Aisha", "Kamila", "Sabina",
        "Dilnaz", "Ayana", "Tomiris", "Aliya", "Zarina", "Saule", "Gulnara", "Akbota", "Meruert",
        "Inkar", "Asel", "Nurai", "Adel", "Balnur", "Elnura", "Farida", "Indira", "Karina",
        "Laura", "Malika", "Nazym",
    ],
    &[
        "Timur",
        "Arman",
        "Nurlan",
        "Daniyar",
        "Alikhan",
        "Yerlan",
        "Bolat",
        "Aibek",
        "Askar",
        "Ruslan",
        "Marat",
        "Sanzhar",
        "Dias",
        "Alisher",
        "Miras",
        "Nursultan",
        "Azamat",
        "Beibit",
        "Galym",
        "Kairat",
        "Madi",
        "Olzhas",
        "Rakhat",
        "Serik",
        "Temirlan",
        "Yerzhan",
        "Zhandos",
        "Adil",
        "Bekzat",
        "Chingiz",
    ],
    &[
        "Akhmetovna",
        "Bekovna",
        "Serikovna",
        "Nurlanovna",
        "Maratovna",
        "Askarovna",
        "Timurovna",
        "Kairatovna",
        "Erlanovna",
        "Bolatovna",
        "Ruslanovna",
        "Aibekovna",
        "Galymovna",
        "Daniyarovna",
        "Armanovna",
        "Olzhasovna",
        "Rakhatovna",
        "Sanzharovna",
        "Temirovna",
        "Yerzhanovna",
        "Adilovna",
        "Beibitovna",
        "Diasovna",
        "Madiovna",
        "Zhandosovna",
        "Mirasovna",
        "Azamatovna",
        "Chingizovna",
        "Kanatovna",
        "Muratovna",
    ],
    &[
        "Abenov",
        "Bekov",
        "Dzhaksybekov",
        "Esenov",
        "Zhumabaev",
        "Iskakov",
        "Kaliev",
        "Lukpanov",
        "Mukhamedov",
        "Nurpeisov",
        "Omarov",
        "Pernebekov",
        "Rakhimov",
        "Sadykov",
        "Tulegenov",
        "Utepov",
        "Khamitov",
        "Shaikenov",
        "Yesimov",
        "Akhmetov",
        "Baimukhanov",
        "Dosanov",
        "Ermekov",
        "Zhakupov",
        "Kasymov",
        "Mamyrov",
        "Nazarbekov",
        "Orazov",
        "Sultanov",
        "Tokhtarov",
        "Urazov",
        "Abdrakhmanov",
        "Baigaliev",
        "Seitkali",
        "Kenzhebekov",
        "Myrzakhmetov",
        "Beisenov",
        "Karimov",
        "Zhexenov",
        "Alimov",
    ],
];

const BT_NAMES: [&[&str]; 4] = [
    &[
        "Pema", "Dechen", "Choki", "Yangchen", "Sonam", "Kinley", "Tshering", "Deki", "Karma",
        "Namgay", "Sangay", "Dema", "Tandin", "Jigme", "Chimi", "Ugyen", "Zangmo", "Lhamo",
        "Wangmo", "Dolma", "Pelden", "Rinzin", "Thinley", "Yeshi", "Phuntsho", "Samten", "Norbu",
        "Kezang", "Passang", "Dawa",
    ],
    &[
        "Dorji",
        "Tashi",
        "Wangchuk",
        "Tenzin",
        "Sonam",
        "Kinley",
        "Tshering",
        "Karma",
        "Jigme",
        "Ugyen",
        "Namgay",
        "Sangay",
        "Tandin",
        "Chencho",
        "Phuntsho",
        "Pema",
        "Rinchen",
        "Thinley",
        "Yeshi",
        "Norbu",
        "Nima",
        "Dawa",
        "Kezang",
        "Passang",
        "Samdrup",
        "Lhendup",
        "Gyeltshen",
        "Penjor",
        "Sherab",
        "Tobgay",
    ],
    &[
        "Choden", "Yangzom", "Pelmo", "Dema", "Lham", "Zam", "Bidha", "Om", "Gyem", "Selden",
        "Tshomo", "Drukpa", "Norzom", "Dolkar", "Yuden", "Peldon", "Chozom", "Lhaden", "Wangdi",
        "Dukpa", "Tenzin", "Rabten", "Jamtsho", "Gyelpo", "Dhendup", "Loday", "Tobden", "Zangpo",
        "Namgyel", "Palden",
    ],
    &[
        "Wangmo",
        "Lhamo",
        "Zangmo",
        "Dorji",
        "Tshering",
        "Wangchuk",
        "Gyeltshen",
        "Tenzin",
        "Penjor",
        "Dendup",
        "Phuntsho",
        "Rinzin",
        "Yangchen",
        "Choden",
        "Dema",
        "Peldon",
        "Tshomo",
        "Drukpa",
        "Namgyel",
        "Tobgay",
        "Sherab",
        "Jamtsho",
        "Lhendup",
        "Samdrup",
        "Norbu",
        "Gyamtsho",
        "Tashi",
        "Kinga",
        "Chophel",
        "Letho",
        "Yonten",
        "Rabgay",
        "Dorjee",
        "Jigme",
        "Karchung",
        "Lethro",
        "Nidup",
        "Pelzang",
        "Sonam",
        "Wangdi",
    ],
];

/// A form of a programme with its fixture: what a phone would fill.
struct Template {
    form_id: String,
    version: String,
    data: Value,
    /// The attachments its answers name, each with what the phone sends.
    files: Vec<(String, Vec<u8>)>,
}

/// A site's field workers (who submit) as principals.
struct SiteStaff {
    workers: Vec<Principal>,
}

struct Programme {
    flow: &'static Flow,
    opens: Template,
    first: Vec<Template>,
    recurring: Vec<Template>,
    closes: Option<Template>,
    sites: Vec<SiteStaff>,
    kid: String,
    public: aws_lc_rs::rsa::PublicEncryptingKey,
    names: &'static [&'static [&'static str]; 4],
    /// The programme's UTC offset, for the envelope's times.
    offset: &'static str,
}

/// One form of one case, ready to store.
struct Item {
    who: Principal,
    /// Prepared, or why ingest refused it.
    prepared: Result<Prepared, String>,
    form_id: String,
}

pub fn run(settings: Settings, args: SeedArgs) -> Result<(), CliError> {
    if args.cases == 0 {
        return Err(CliError::App("--cases: give at least 1".into()));
    }
    crate::crypto::kek::create_private_dir(&settings.data_dir)?;
    // No server may write while the seed does: its numbers and the audit
    // chain's head are read once per batch.
    let _alone = server::lock_data_dir(&settings.data_dir, true)?;
    let token_days = settings.device_token_ttl_days;
    // Everything `serve` does first: migrations, first admin, sites,
    // shipped forms, programme keys, XForms.
    let state = server::prepare(settings)?;
    let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
    let programmes = setup(&mut conn, &state, &args)?;
    drop(conn);
    if programmes.is_empty() {
        return Err(CliError::App("no programme has an active site".into()));
    }
    if let Some(path) = &args.device_tokens {
        let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
        let made = device_tokens(&mut conn, &programmes, token_days, path)?;
        println!(
            "made a device token for each of {made} field workers: {}",
            path.display()
        );
    }
    let programmes = Arc::new(programmes);
    let existing: i64 = {
        let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
        cases::table
            .count()
            .get_result(&mut conn)
            .map_err(crate::db::DbError::from)?
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1)
    });
    println!(
        "seeding {} cases (about {} forms each) with {jobs} preparing thread(s) and one writer, {} cases per transaction",
        args.cases, args.forms_per_case, args.batch
    );

    let batches = args.cases.div_ceil(args.batch.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let (sender, receiver) = mpsc::sync_channel::<Vec<Item>>(jobs * 2);
    let problems: Arc<Mutex<BTreeMap<String, (usize, String)>>> = Default::default();
    let mut threads = Vec::new();
    for _ in 0..jobs {
        let (state, programmes, next, sender) = (
            state.clone(),
            programmes.clone(),
            next.clone(),
            sender.clone(),
        );
        let (cases, batch) = (args.cases, args.batch.max(1));
        let shape = Shape {
            per_case: args.forms_per_case,
            in_turn: args.in_turn,
            all_open: args.all_open,
        };
        threads.push(std::thread::spawn(move || -> Result<(), CliError> {
            let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
            let limits = state.submission_limits();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok(());
                }
                let mut items = Vec::new();
                for n in b * batch..((b + 1) * batch).min(cases) {
                    let index = existing as usize + n;
                    for (who, opened, form_id) in one_case(&programmes, index, &shape) {
                        let prepared = ingest::prepare_opened(
                            &mut conn,
                            &state.forms,
                            &limits,
                            &who,
                            opened,
                            &HashSet::new(),
                        )
                        .map_err(describe);
                        items.push(Item {
                            who,
                            prepared,
                            form_id,
                        });
                    }
                }
                if sender.send(items).is_err() {
                    return Ok(());
                }
            }
        }));
    }
    drop(sender);

    let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
    let origin = Origin::default();
    let began = Instant::now();
    let mut last_report = Instant::now();
    let (mut stored, mut refused, mut done_batches) = (0usize, 0usize, 0usize);
    for items in receiver {
        let outcomes = write_tx(&mut conn, |conn| {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in &items {
                outcomes.push(match &item.prepared {
                    Ok(p) => conn
                        .transaction(|c| ingest::store(c, &item.who, &origin, p))
                        .map(|_| ())
                        .map_err(describe),
                    Err(why) => Err(why.clone()),
                });
            }
            Ok::<_, crate::error::AppError>(outcomes)
        })?;
        for (item, outcome) in items.iter().zip(outcomes) {
            match outcome {
                Ok(()) => stored += 1,
                Err(e) => {
                    refused += 1;
                    let mut problems = problems.lock().expect("problems lock");
                    let entry = problems.entry(item.form_id.clone()).or_insert((0, e));
                    entry.0 += 1;
                }
            }
        }
        done_batches += 1;
        if last_report.elapsed().as_secs() >= 10 || done_batches == batches {
            last_report = Instant::now();
            let secs = began.elapsed().as_secs_f64();
            let cases = (done_batches * args.batch).min(args.cases);
            println!(
                "  {cases} cases, {stored} forms stored in {secs:.0} s: {:.0} forms/s",
                stored as f64 / secs
            );
        }
    }
    for thread in threads {
        thread
            .join()
            .map_err(|_| CliError::App("a preparing thread panicked".into()))??;
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "seeded {} cases: {stored} forms stored in {secs:.1} s ({:.0} forms/s, {:.0} cases/s); {} cases now in the database",
        args.cases,
        stored as f64 / secs,
        args.cases as f64 / secs,
        existing as usize + args.cases
    );
    let problems = problems.lock().expect("problems lock");
    if refused > 0 {
        println!("{refused} forms were refused and left out:");
        for (form, (count, why)) in problems.iter() {
            println!("  {form}: {count}× — {why}");
        }
    }
    Ok(())
}

fn describe(err: crate::error::AppError) -> String {
    let text = CliError::from(err).to_string();
    text.chars().take(300).collect()
}

/// The accounts, the forms with their fixtures and the keys of each
/// programme with an active site.
fn setup(
    conn: &mut DbConnection,
    state: &AppState,
    args: &SeedArgs,
) -> Result<Vec<Programme>, CliError> {
    // One Argon2 hash for every account of the run (they share the
    // password): a thousand field workers would otherwise take minutes.
    let password = Hashed(crate::auth::passwords::NewPassword::hashed(Some(
        args.password.clone(),
    )));
    write_tx(conn, |conn| {
        ensure_user(conn, "seed-admin", Role::Admin, Vec::new(), &password)
    })?;
    let all_sites = sites::list(conn, None)?;
    let mut programmes = Vec::new();
    for flow in &FLOWS {
        if args
            .programme
            .as_deref()
            .is_some_and(|p| p != flow.programme)
        {
            continue;
        }
        let mut staff = Vec::new();
        let active: Vec<&sites::Site> = all_sites
            .iter()
            .filter(|s| s.programme == flow.programme && s.active)
            .collect();
        for (k, site) in active.iter().enumerate() {
            let code = site.code.to_lowercase();
            let ids = vec![site.id.clone()];
            let count = match args.workers {
                Some(total) => total / active.len() + usize::from(k < total % active.len()),
                None => args.workers_per_site,
            };
            // A site's accounts in one transaction (one fsync, not one each).
            let workers = write_tx(conn, |conn| {
                ensure_user(
                    conn,
                    &format!("seed-coord-{code}"),
                    Role::Coordinator,
                    ids.clone(),
                    &password,
                )?;
                ensure_user(
                    conn,
                    &format!("seed-analyst-{code}"),
                    Role::Analyst,
                    ids.clone(),
                    &password,
                )?;
                (1..=count.max(1))
                    .map(|n| {
                        let user = ensure_user(
                            conn,
                            &format!("seed-worker-{code}-{n}"),
                            Role::FieldWorker,
                            ids.clone(),
                            &password,
                        )?;
                        Ok(Principal {
                            user_id: user.id,
                            username: user.username,
                            role: Role::FieldWorker,
                            site_ids: ids.clone(),
                            token_id: "seed".into(),
                            token_created_by: None,
                            must_change_password: false,
                        })
                    })
                    .collect::<AppResult<Vec<_>>>()
            })?;
            staff.push(SiteStaff { workers });
        }
        if staff.is_empty() {
            continue;
        }
        let load = |conn: &mut DbConnection, id: &str| template(conn, state, &args.fixtures, id);
        let Some(opens) = load(conn, flow.opens)? else {
            return Err(CliError::App(format!(
                "{}: no fixture {}/valid.json",
                flow.opens,
                args.fixtures.join(flow.opens).display()
            )));
        };
        let mut first = Vec::new();
        for id in flow.first {
            first.extend(load(conn, id)?);
        }
        let mut recurring = Vec::new();
        for id in flow.recurring {
            recurring.extend(load(conn, id)?);
        }
        let closes = load(conn, flow.closes)?;
        let key = keys::current(conn, flow.programme)?;
        let public = keys::public_key_from_jwk(&key.jwk)?;
        programmes.push(Programme {
            flow,
            opens,
            first,
            recurring,
            closes,
            sites: staff,
            kid: key.kid,
            public,
            names: if flow.programme == "kz" {
                &KZ_NAMES
            } else {
                &BT_NAMES
            },
            offset: if flow.programme == "kz" {
                "+05:00"
            } else {
                "+06:00"
            },
        });
    }
    Ok(programmes)
}

/// The seeded accounts' password, hashed once.
struct Hashed(crate::auth::passwords::NewPassword);

/// The account `username`, made (and audited as the shell makes one)
/// when it does not exist yet. Call inside a write transaction.
fn ensure_user(
    conn: &mut DbConnection,
    username: &str,
    role: Role,
    site_ids: Vec<String>,
    password: &Hashed,
) -> AppResult<users::User> {
    if let Some(user) = users::find_by_username(conn, username)? {
        return Ok(user);
    }
    let password = crate::auth::passwords::NewPassword {
        plain: password.0.plain.clone(),
        hash: password.0.hash.clone(),
        generated: false,
    };
    let created = users::create(
        conn,
        users::NewUser {
            username: username.into(),
            display_name: None,
            role,
            site_ids,
            password: None,
            initials: None,
        },
        password,
    )?;
    audit_change(conn, "user_created", "user", &created.user.id)?;
    let _ = shell_actor();
    Ok(created.user)
}

/// A device token for every seeded field worker, in one transaction,
/// audited as `casesync tokens create` audits one; written to `path`
/// (only its owner may read it) as `username token` lines. Returns how
/// many.
fn device_tokens(
    conn: &mut DbConnection,
    programmes: &[Programme],
    days: i64,
    path: &std::path::Path,
) -> Result<usize, CliError> {
    use std::io::Write;
    let workers: Vec<&Principal> = programmes
        .iter()
        .flat_map(|p| p.sites.iter().flat_map(|s| s.workers.iter()))
        .collect();
    let issued = write_tx(conn, |conn| {
        workers
            .iter()
            .map(|who| {
                let issued =
                    tokens::issue_device(conn, &who.user_id, "seeded phone", None, days, days)?;
                audit_change(conn, "device_token_created", "token", &issued.info.id)?;
                Ok((who.username.clone(), issued.token))
            })
            .collect::<AppResult<Vec<_>>>()
    })?;
    let mut out = std::io::BufWriter::new(create_private(path)?);
    for (username, token) in &issued {
        writeln!(out, "{username} {token}")
            .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
    }
    out.flush()
        .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
    Ok(issued.len())
}

/// `form_id`'s current published version with its fixture's answers, or
/// None when the fixture directory has none for it.
fn template(
    conn: &mut DbConnection,
    state: &AppState,
    fixtures: &std::path::Path,
    form_id: &str,
) -> Result<Option<Template>, CliError> {
    let path = fixtures.join(form_id).join("valid.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let data: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::App(format!("{}: {e}", path.display())))?;
    let version = registry::current(conn, form_id)?.version;
    let form = state.forms.get(conn, form_id, &version)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for field in form
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::Attachment)
    {
        for (_, value) in field.values_in(&data) {
            if let Some(name) = value.as_str() {
                if !files.iter().any(|(n, _)| n == name) {
                    // A small picture, as a tablet's signature pad makes.
                    let bytes =
                        format!("\u{89}PNG a signature drawn on a tablet: {name}").into_bytes();
                    files.push((name.to_string(), bytes));
                }
            }
        }
    }
    if form.meta.case == CaseRole::None {
        return Ok(None);
    }
    Ok(Some(Template {
        form_id: form_id.to_string(),
        version,
        data,
        files,
    }))
}

/// A small deterministic generator (splitmix64): the same index makes the
/// same case, and no two cases share a child.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How the cases are made: forms per case, who gets them, whether some
/// close.
struct Shape {
    per_case: usize,
    in_turn: bool,
    all_open: bool,
}

/// Which programme case number `index` belongs to, and its place among
/// that programme's cases: two KZ cases for each BT one when both are
/// seeded.
fn programme_of(programmes: usize, index: usize) -> (usize, usize) {
    match (programmes > 1, index % 3) {
        (false, _) => (0, index),
        (true, 2) => (1, index / 3),
        (true, r) => (0, index / 3 * 2 + r),
    }
}

/// The forms of case number `index`: who sends each, and what.
fn one_case(
    programmes: &[Programme],
    index: usize,
    shape: &Shape,
) -> Vec<(Principal, Opened, String)> {
    let per_case = shape.per_case;
    let mut mix = Mix(index as u64 ^ 0x5EED);
    let (which, place) = programme_of(programmes.len(), index);
    let programme = &programmes[which];
    let staff = &programme.sites[mix.below(programme.sites.len())];
    let mut who = &staff.workers[mix.below(staff.workers.len())];
    if shape.in_turn {
        // The programme's workers site by site, each getting the next case.
        let all: usize = programme.sites.iter().map(|s| s.workers.len()).sum();
        let mut turn = place % all;
        for site in &programme.sites {
            if turn < site.workers.len() {
                who = &site.workers[turn];
                break;
            }
            turn -= site.workers.len();
        }
    }
    let case_id = uuid::Uuid::new_v4().to_string();

    // The child: a name of three parts no other index gets (until the
    // lists run out), a sex, and a birth date within a few years.
    let female = index % 2 == 0;
    let n = index / (if programmes.len() > 1 { 3 } else { 1 }) / 2;
    let names = programme.names;
    let given = names[usize::from(!female)];
    let (a, b, c) = (
        n % given.len(),
        (n / given.len()) % names[2].len(),
        (n / given.len() / names[2].len()) % names[3].len(),
    );
    let child_name = format!("{} {} {}", given[a], names[2][b], names[3][c]);

    // Opened between two years and two months ago; each later form a few
    // days after the one before.
    let today = chrono::Utc::now().date_naive();
    let forms = (per_case / 2 + mix.below(per_case + 1)).max(1);
    let mut day = today - Duration::days(60 + mix.below(670) as i64);
    let dob_shift = mix.below(8 * 365) as i64 - 4 * 365;

    let mut templates: Vec<&Template> = vec![&programme.opens];
    let closes = mix.below(10) < 3 && !shape.all_open;
    let middle = forms.saturating_sub(1 + usize::from(closes));
    for k in 0..middle {
        let t = if k < programme.first.len() {
            &programme.first[k]
        } else if programme.recurring.is_empty() {
            break;
        } else {
            &programme.recurring[mix.below(programme.recurring.len())]
        };
        templates.push(t);
    }
    if closes && forms > 1 {
        templates.extend(programme.closes.as_ref());
    }

    let mut out = Vec::with_capacity(templates.len());
    for (k, t) in templates.into_iter().enumerate() {
        if k > 0 {
            day += Duration::days(1 + mix.below(6) as i64);
        }
        let mut data = t.data.clone();
        shift_dates(&mut data, day);
        if k == 0 {
            let child = data.get_mut("child").and_then(Value::as_object_mut);
            if let Some(child) = child {
                child.insert("child_name".into(), json!(child_name));
                if child.contains_key("child_sex") {
                    child.insert(
                        "child_sex".into(),
                        json!(if female { "female" } else { "male" }),
                    );
                }
                if let Some(dob) = child
                    .get("child_dob")
                    .and_then(Value::as_str)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                {
                    let dob = (dob + Duration::days(dob_shift)).min(day - Duration::days(200));
                    child.insert("child_dob".into(), json!(dob.to_string()));
                }
            }
        }
        let completed = format!(
            "{day}T{:02}:{:02}:00{}",
            9 + k % 8,
            (k * 7) % 60,
            programme.offset
        );
        let started = format!("{day}T08:{:02}:00{}", (k * 3) % 60, programme.offset);
        let declarations: Vec<Value> = t
            .files
            .iter()
            .map(|(name, bytes)| AttachmentDeclaration::of(name, bytes).to_json())
            .collect();
        let envelope = json!({
            "instance_id": uuid::Uuid::new_v4().to_string(),
            "form_id": t.form_id,
            "form_version": t.version,
            "case_id": case_id,
            "device_id": format!("{}-tablet", who.username),
            "started_at": started,
            "completed_at": completed,
            "data": data,
            "attachments": declarations,
        });
        // Sealed as a phone seals it: the stored record is a real one.
        let raw = jwe::encrypt(
            envelope.to_string().as_bytes(),
            &programme.kid,
            &programme.public,
        );
        let files = t
            .files
            .iter()
            .map(|(name, bytes)| ReceivedFile {
                name: name.clone(),
                kid: programme.kid.clone(),
                raw_jwe: jwe::encrypt(bytes, &programme.kid, &programme.public),
            })
            .collect();
        out.push((
            who.clone(),
            Opened {
                envelope,
                kid: programme.kid.clone(),
                key_programme: programme.flow.programme.to_string(),
                raw,
                files,
                quarantine: false,
            },
            t.form_id.clone(),
        ));
    }
    out
}

/// Moves every date of a form's answers by the same number of days, so
/// that its latest date falls on `day`: the answers keep their order
/// (a birth date before the referral, a review after the plan).
fn shift_dates(data: &mut Value, day: NaiveDate) {
    fn date_of(s: &str) -> Option<NaiveDate> {
        let head = s.get(..10)?;
        let rest = &s[10..];
        if !(rest.is_empty() || rest.starts_with('T')) {
            return None;
        }
        NaiveDate::parse_from_str(head, "%Y-%m-%d").ok()
    }
    fn latest(v: &Value, max: &mut Option<NaiveDate>) {
        match v {
            Value::String(s) => {
                if let Some(d) = date_of(s) {
                    // Birth dates are old; a form's own dates are recent.
                    if d.year() >= 2020 && max.is_none_or(|m| d > m) {
                        *max = Some(d);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| latest(i, max)),
            Value::Object(map) => map.values().for_each(|i| latest(i, max)),
            _ => {}
        }
    }
    fn shift(v: &mut Value, by: Duration) {
        match v {
            Value::String(s) => {
                if let Some(d) = date_of(s) {
                    *s = format!("{}{}", d + by, &s[10..]);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| shift(i, by)),
            Value::Object(map) => map.values_mut().for_each(|i| shift(i, by)),
            _ => {}
        }
    }
    let mut max = None;
    latest(data, &mut max);
    if let Some(max) = max {
        shift(data, day - max);
    }
}

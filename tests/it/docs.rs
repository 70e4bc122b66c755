//! The docs say what the code does, so a reader who follows them word for
//! word gets what they say: every `casesync …` command in README.md and
//! docs/ parses with the real command line (the clap definition the binary
//! runs); every link resolves inside the repository; the indicators page
//! shows the programmes' own age bands; exports end lines as docs/api.md
//! says.

use crate::common;

use std::path::{Path, PathBuf};

use casesync::cli::Cli;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use common::phone::{envelope, fixture, phone};
use common::TestApp;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// A Markdown page split into its fenced code blocks (info string, body)
/// and its prose (everything outside them).
fn split(text: &str) -> (Vec<(String, String)>, String) {
    let (mut blocks, mut prose) = (Vec::new(), String::new());
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    (blocks, prose)
}

/// The inline code spans of prose, a span broken over lines joined again.
fn code_spans(prose: &str) -> Vec<String> {
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The words of one shell line as the shell would pass them: quotes
/// removed, a `#` comment dropped. An optional part written `[--flag v]`
/// is kept without its brackets, so it is checked too.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let mut depth = 0;
    words
        .into_iter()
        .map(|w| {
            let mut w = w.as_str();
            if let Some(rest) = w.strip_prefix('[') {
                depth += 1;
                w = rest;
            }
            if depth > 0 {
                if let Some(rest) = w.strip_suffix(']') {
                    depth -= 1;
                    w = rest;
                }
            }
            w.to_string()
        })
        .collect()
}

/// The arguments of a `casesync …` (or `cargo run … -- …`) command line,
/// after any `NAME=value` environment settings; None for other commands.
fn casesync_args(words: &[String]) -> Option<Vec<String>> {
    let start = words.iter().position(|w| !is_assignment(w))?;
    let words = &words[start..];
    match words.first()?.as_str() {
        "casesync" => Some(words.to_vec()),
        "cargo" if words.get(1).is_some_and(|w| w == "run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            let mut args = vec!["casesync".to_string()];
            args.extend(words[dashes + 1..].iter().cloned());
            Some(args)
        }
        _ => None,
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Every command line of a shell code block, continuation lines joined.
fn shell_commands(block: &str) -> Vec<String> {
    block
        .replace("\\\n", " ")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_casesync_command_in_a_readme_code_block_parses_with_the_real_cli() {
    let readme = read(&root().join("README.md"));
    let (blocks, _) = split(&readme);
    let mut checked = Vec::new();
    for (info, body) in blocks.iter().filter(|(info, _)| info == "sh") {
        for line in shell_commands(body) {
            let Some(args) = casesync_args(&shell_words(&line)) else {
                continue;
            };
            if let Err(err) = Cli::try_parse_from(&args) {
                panic!(
                    "README.md ({info} block): `{}` is not a valid command line:\n{err}",
                    line.trim()
                );
            }
            checked.push(args);
        }
    }
    // The README shows the commands a new operator needs: each of them.
    for needed in [
        vec!["users", "add"],
        vec!["tokens", "create"],
        vec!["export", "forms"],
        vec!["collect"],
        vec!["indicators"],
    ] {
        assert!(
            checked.iter().any(|args| args[1..]
                .iter()
                .filter(|a| !a.starts_with('-'))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .windows(needed.len())
                .any(|w| w == needed.as_slice())),
            "README.md shows no `casesync {}` command",
            needed.join(" ")
        );
    }
    // An identifying export in the README carries every term it needs.
    let identifying: Vec<_> = checked
        .iter()
        .filter(|args| args.iter().any(|a| a == "--identifying"))
        .collect();
    assert!(
        !identifying.is_empty(),
        "README.md shows no identifying export"
    );
    for args in identifying {
        for flag in ["--legal-basis", "--recipient", "--purpose"] {
            assert!(
                args.iter().any(|a| a == flag),
                "README.md: `{}` lacks {flag}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn the_readme_shows_every_top_level_command() {
    let readme = read(&root().join("README.md"));
    let (blocks, prose) = split(&readme);
    let lines = blocks
        .iter()
        .filter(|(info, _)| info == "sh")
        .flat_map(|(_, body)| shell_commands(body))
        .chain(code_spans(&prose));
    let shown: Vec<String> = lines
        .filter_map(|line| casesync_args(&shell_words(&line)))
        .filter_map(|args| args.get(1).cloned())
        .collect();
    let missing: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|name| !shown.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md never shows `casesync {}`",
        missing.join("`, `casesync ")
    );
}

/// The README's Layout names every module directory and top-level file of
/// server/src and every page under docs/.
#[test]
fn the_readme_layout_matches_the_tree() {
    let readme = read(&root().join("README.md"));
    let (blocks, _) = split(&readme[readme.find("## Layout").expect("a Layout section")..]);
    let layout = &blocks.first().expect("the Layout's tree").1;
    let mut missing = Vec::new();
    for (dir, suffix) in [("server/src", "/"), ("docs", "")] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let named = if path.is_dir() {
                format!("{file}{suffix}")
            } else {
                file
            };
            if !layout.contains(&named) {
                missing.push(format!("{dir}/{named}"));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "README.md's Layout does not name {}",
        missing.join(", ")
    );
}

/// A `casesync …` in running text may leave out what it does not discuss
/// (`casesync tokens create`), but every command and flag it names exists.
#[test]
fn every_casesync_command_quoted_in_the_docs_names_real_commands_and_flags() {
    let mut problems = Vec::new();
    for page in pages() {
        let (_, prose) = split(&read(&page));
        for span in code_spans(&prose) {
            let Some(args) = casesync_args(&shell_words(&span)) else {
                continue;
            };
            // `casesync …` stands for any command.
            if args.get(1).is_some_and(|a| a.starts_with('…')) {
                continue;
            }
            if let Err(err) = Cli::try_parse_from(&args) {
                if matches!(
                    err.kind(),
                    ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand
                ) {
                    problems.push(format!("{}: `{span}`: {}", name(&page), err.kind()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> Vec<String> {
    let (_, prose) = split(&read(page));
    prose
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of a page's Markdown links, `[text](target)`.
fn link_targets(prose: &str) -> Vec<String> {
    prose
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(t, _)| t.trim().to_string()))
        .collect()
}

#[test]
fn every_link_and_cited_path_in_the_docs_resolves_inside_the_repository() {
    let repo = root().canonicalize().unwrap();
    let mut problems = Vec::new();
    for page in pages() {
        let text = read(&page);
        let (_, prose) = split(&text);
        let dir = page.parent().unwrap();
        let cited_paths = code_spans(&prose)
            .into_iter()
            .filter(|s| s.starts_with("../"));
        for target in link_targets(&prose).into_iter().chain(cited_paths) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            match file.canonicalize() {
                Ok(found) if found.starts_with(&repo) => {
                    if !fragment.is_empty()
                        && found.extension().is_some_and(|x| x == "md")
                        && !anchors(&found).iter().any(|a| a == fragment)
                    {
                        problems.push(format!(
                            "{}: `{target}`: no heading `#{fragment}` there",
                            name(&page)
                        ));
                    }
                }
                Ok(_) => problems.push(format!(
                    "{}: `{target}` is outside the repository",
                    name(&page)
                )),
                Err(_) => problems.push(format!("{}: `{target}` does not exist", name(&page))),
            }
        }
        // Material that lives beside the repository, not in it.
        for outside in ["../shared", "../seeds", "../requirements", "/work/"] {
            if text.contains(outside) {
                problems.push(format!("{} cites `{outside}…`", name(&page)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn programme(p: &str) -> Value {
    serde_json::from_str(&read(
        &root().join(format!("form-definitions/{p}/programme.json")),
    ))
    .unwrap()
}

fn band_ids(bands: &Value) -> Vec<String> {
    bands
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_indicators_page_shows_the_age_bands_the_programmes_use() {
    let page = read(&root().join("docs/indicators.md"));
    let (blocks, prose) = split(&page);
    let (_, example) = blocks
        .iter()
        .find(|(info, body)| info == "json" && body.contains("\"age_bands\""))
        .expect("docs/indicators.md has an example with age_bands");
    let example: Value = serde_json::from_str(example).unwrap();
    assert_eq!(
        example["age_bands"],
        programme("kz")["age_bands"],
        "the example's age bands are not KZ's"
    );
    let prose = prose.split_whitespace().collect::<Vec<_>>().join(" ");
    for p in ["kz", "bt"] {
        let listed = band_ids(&programme(p)["age_bands"])
            .iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            prose.contains(&listed),
            "docs/indicators.md does not list {p}'s age bands as {listed}"
        );
    }
}

/// docs/api.md says exports end their lines with LF, not RFC 4180's CRLF;
/// every CSV the server writes does.
#[test]
fn every_csv_export_ends_its_lines_as_the_api_page_says() {
    let api = read(&root().join("docs/api.md"));
    assert!(
        api.contains("Lines end in LF"),
        "docs/api.md no longer says how CSV lines end"
    );
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, worker) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let (_, coordinator) = app.user(&admin, "manager", "coordinator", &["KZ-CAM-ALA"]);
    let sent = phone(&app, &worker).send(&envelope(
        &uuid::Uuid::new_v4().to_string(),
        fixture("kz.referral"),
    ));
    assert_eq!(sent.status, 201, "{}", sent.text);
    for (path, token) in [
        ("/api/v1/exports/forms/kz.referral.csv", &coordinator),
        ("/api/v1/exports/cases.csv?programme=kz", &coordinator),
        (
            "/api/v1/indicators/kz?from=2026-01-01&to=2026-12-31&format=csv",
            &coordinator,
        ),
        ("/api/v1/exports/audit.csv", &admin),
    ] {
        let res = app.get(path, token);
        assert_eq!(res.status, 200, "{path}: {}", res.text);
        assert!(res.text.lines().count() >= 2, "{path}: {}", res.text);
        assert!(res.text.ends_with('\n'), "{path} does not end in LF");
        assert!(
            !res.text.contains('\r'),
            "{path} holds a CR: {:?}",
            res.text
        );
    }
}

/// README "First login", followed word for word: the one-time password
/// from the file, then the README's own example passphrase as the new one.
#[test]
fn the_readme_first_login_works_as_written() {
    let readme = read(&root().join("README.md"));
    let marker = "\\\"new_password\\\":\\\"";
    let start = readme.find(marker).expect("README shows a new_password") + marker.len();
    let new_password = &readme[start..start + readme[start..].find("\\\"").unwrap()];

    let app = TestApp::spawn();
    let one_time = app.initial_admin_password();
    let session = app.login("admin", &one_time);
    assert_eq!(session.status, 201, "{}", session.text);
    assert_eq!(session.body["password_change_required"], true);
    let token = session.body["token"].as_str().unwrap();
    app.get("/api/v1/users", token)
        .assert_problem(403, "password_change_required");
    let changed = app.post(
        "/api/v1/me/password",
        token,
        serde_json::json!({ "current_password": one_time, "new_password": new_password }),
    );
    assert_eq!(
        changed.status, 200,
        "README's example password {new_password:?}: {}",
        changed.text
    );
    assert!(
        !app.initial_password_file().exists(),
        "the one-time password file stays"
    );
    // The one-time session ended with the change; the answer's token works.
    assert_eq!(app.get("/api/v1/users", token).status, 401);
    let fresh = changed.body["token"].as_str().expect("a fresh token");
    assert_eq!(app.get("/api/v1/users", fresh).status, 200);
}

/// The legal bases of an identifying export, and which of them need a
/// `--provision`, as README.md and docs/api.md list them, are the ones the
/// disclosure rules accept.
#[test]
fn the_docs_list_the_legal_bases_the_server_accepts() {
    use casesync::privacy::disclosures;
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let readme = flat(&read(&root().join("README.md")));
    let api = flat(&read(&root().join("docs/api.md")));
    let between = |text: &str, from: &str, to: &str| -> String {
        let start = text.find(from).unwrap_or_else(|| panic!("no {from:?}"));
        let rest = &text[start..];
        rest[..rest
            .find(to)
            .unwrap_or_else(|| panic!("no {to:?} after {from:?}"))]
            .to_string()
    };
    let readme_bases = between(&readme, "`--legal-basis` (", ")");
    let readme_provision = between(&readme, "`--provision` (", ", and for `consent`");
    let api_bases = between(&api, "Legal bases —", "| |");
    for (programme, label) in [("kz", "KZ"), ("bt", "BT")] {
        let listed = readme_bases
            .split(';')
            .find(|part| part.contains(label))
            .unwrap_or_else(|| panic!("README.md lists no {label} bases"));
        for basis in disclosures::bases(programme) {
            let code = format!("`{}`", basis.code);
            assert!(
                listed.contains(&code),
                "README.md does not list {code} for {label}"
            );
            assert_eq!(
                readme_provision.contains(&code),
                basis.needs_provision,
                "README.md: whether {code} needs --provision"
            );
            assert!(api_bases.contains(&code), "docs/api.md lacks {code}");
            assert_eq!(
                api_bases.contains(&format!("{code} (provision")),
                basis.needs_provision,
                "docs/api.md: whether {code} needs a provision"
            );
        }
    }
}

/// A label is what a phone shows above the question: the paper form's
/// typing instructions ("(DD/MM/YY)" while the value is an ISO date, blanks
/// to write a name on) belong in its description, not in the label.
#[test]
fn shipped_labels_carry_no_printed_form_instructions() {
    fn walk(value: &Value, at: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(title)) = map.get("title") {
                    let upper = title.to_uppercase();
                    if upper.contains("DD/MM") || upper.contains("MM/YY") || title.contains("(...")
                    {
                        found.push(format!("{at}: {title:?}"));
                    }
                }
                for (key, inner) in map {
                    walk(inner, &format!("{at}/{key}"), found);
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    walk(inner, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for programme in ["core", "kz", "bt"] {
        let dir = root().join("form-definitions").join(programme);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let value: Value = serde_json::from_str(&read(&path)).unwrap();
                let name = path.strip_prefix(root()).unwrap().display().to_string();
                walk(&value, &name, &mut found);
            }
        }
    }
    assert!(
        found.is_empty(),
        "labels with printed-form instructions:\n{}",
        found.join("\n")
    );
}

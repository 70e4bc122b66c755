//! The XForms made from the shipped forms, checked by the real engines:
//! ODK Validate (JavaRosa 5.1, ODK Collect's engine, inside the pyxform
//! 4.5.0 wheel) and `@getodk/xforms-engine` 0.22.0 (ODK Web Forms) under
//! Node. Both fill every shipped form with its fixture's answers, and what
//! they send reads back into the same answers, which the server's validator
//! accepts. The Web Forms engine also fills systematic invalid and edge
//! variants of them, and its verdict on each must be the validator's and
//! the server's over HTTP: a disagreement is a bug in the mapping.
//!
//! The tools are found through CASESYNC_TEST_ODK_VALIDATE_JAR (the jar) and
//! CASESYNC_TEST_ODK_NODE_MODULES (a node_modules holding the engine and
//! jsdom). `.ci/run` installs both and sets CASESYNC_TEST_REQUIRE_ODK=1, so
//! CI fails without them; elsewhere a test without its tool says it was
//! skipped. The instance round trip needs no tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use casesync::forms::{check, definitions, CompiledForm};
use casesync::odk::instance;
use casesync::odk::nodes::{FormTable, Kind, Leaf, Node};
use casesync::odk::xform;
use common::odk::{compile_fill, tool, validate_jar};
use serde_json::{Map, Value};

fn node_modules() -> Option<PathBuf> {
    tool("CASESYNC_TEST_ODK_NODE_MODULES", "node")
}

fn engine_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/odk/engine.mjs")
}

/// A throwaway programme key, as DER SubjectPublicKeyInfo.
fn public_key() -> Vec<u8> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

/// Every shipped form version, compiled.
fn shipped() -> Vec<CompiledForm> {
    let set = definitions::shipped();
    set.forms
        .iter()
        .map(|f| check::check(&f.document, &set.resources).unwrap())
        .collect()
}

/// Writes every shipped form's XForm into `dir`, and the KZ referral's
/// once more with `x-labels` (translations: `<itext>`); their paths.
fn write_xforms(dir: &Path) -> Vec<PathBuf> {
    let key = public_key();
    let mut documents: Vec<(String, Value)> = shipped()
        .iter()
        .map(|form| (form.meta.id.clone(), (*form.document).clone()))
        .collect();
    let mut labelled = documents
        .iter()
        .find(|(id, _)| id == "kz.referral")
        .unwrap()
        .1
        .clone();
    let child = "/properties/child/properties";
    for at in [
        "/properties/child".to_string(),
        format!("{child}/child_sex"),
        format!("{child}/siblings"),
        format!("{child}/siblings/items/properties/dob"),
        "/properties/signoff/properties/referrer_signature".to_string(),
    ] {
        labelled.pointer_mut(&at).unwrap()["x-labels"] =
            serde_json::json!({"Russian (ru)": "Метка", "Kazakh (kk)": "Белгі"});
    }
    documents.push(("kz.referral.labelled".into(), labelled));
    documents
        .iter()
        .map(|(id, document)| {
            let xml = xform::generate(document, &key).unwrap();
            let path = dir.join(format!("{id}.xml"));
            std::fs::write(&path, xml).unwrap();
            path
        })
        .collect()
}

fn fixture(form_id: &str) -> Option<Map<String, Value>> {
    let path = format!(
        "{}/tests/fixtures/forms/{form_id}/valid.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

/// Date-times as instants: engines write `…T10:15:00.000+05:00` for
/// `…T10:15:00+05:00`, the same moment.
fn normalise(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                *s = t.with_timezone(&chrono::Utc).to_rfc3339();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::Object(map) => map.values_mut().for_each(normalise),
        _ => {}
    }
}

fn sort_lists(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.iter_mut().for_each(sort_lists);
            items.sort_by_key(|v| v.to_string());
        }
        Value::Object(map) => map.values_mut().for_each(sort_lists),
        _ => {}
    }
}

#[test]
fn every_shipped_xform_passes_odk_validate() {
    let Some(jar) = validate_jar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = write_xforms(dir.path());
    let started = std::time::Instant::now();
    // Two JVMs at a time: the machines have two cores.
    let failures: Vec<String> = std::thread::scope(|s| {
        let halves: Vec<_> = files
            .chunks(files.len().div_ceil(2))
            .map(|chunk| {
                let jar = &jar;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for file in chunk {
                        let out = Command::new("java")
                            .args(["-Djava.awt.headless=true", "-jar"])
                            .arg(jar)
                            .arg(file)
                            .output()
                            .unwrap();
                        let text = String::from_utf8_lossy(&out.stdout).to_string()
                            + &String::from_utf8_lossy(&out.stderr);
                        if !out.status.success() || !text.contains("Xform is valid") {
                            failed.push(format!("{}:\n{text}", file.display()));
                        }
                    }
                    failed
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    println!(
        "ODK Validate: {} XForms in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shipped_fixture_goes_to_instance_xml_and_back_unchanged() {
    let mut checked = 0;
    for form in shipped() {
        let Some(answers) = fixture(&form.meta.id) else {
            continue;
        };
        let table = FormTable::build(&form.document).unwrap();
        let xml = instance::to_xml(
            &table,
            &answers,
            "uuid:00000000-0000-4000-8000-000000000001",
        );
        let back =
            instance::read(&table, &xml).unwrap_or_else(|e| panic!("{}: {e}\n{xml}", form.meta.id));
        assert_eq!(
            Value::Object(back.answers),
            Value::Object(answers),
            "{}: {xml}",
            form.meta.id
        );
        assert_eq!(
            back.meta.instance_id.as_deref(),
            Some("00000000-0000-4000-8000-000000000001")
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} forms have a valid.json");
}

/// Fills `form` in JavaRosa with the fixture's answers; the instance XML.
fn javarosa_fill(
    jar: &Path,
    classes: &Path,
    dir: &Path,
    form: &CompiledForm,
) -> Result<String, String> {
    let table = FormTable::build(&form.document).unwrap();
    let answers = fixture(&form.meta.id).unwrap();
    let form_path = dir.join(format!("{}.xml", form.meta.id));
    std::fs::write(
        &form_path,
        xform::generate(&form.document, &public_key()).unwrap(),
    )
    .unwrap();
    common::odk::javarosa_fill(jar, classes, &form_path, &table, &answers, &[], None)
}

/// JavaRosa fills every shipped form with its fixture's answers, stepping
/// through it as a person does in Collect (relevance and constraints
/// applied); what it sends reads back to the same answers, which the
/// validator accepts.
#[test]
fn javarosa_fills_every_shipped_form_as_its_fixture_says() {
    let Some(jar) = validate_jar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let classes = compile_fill(&jar, dir.path());
    let mut failures = Vec::new();
    let mut filled = 0;
    for form in shipped() {
        let id = form.meta.id.clone();
        if fixture(&id).is_none() {
            continue;
        }
        let xml = match javarosa_fill(&jar, &classes, dir.path(), &form) {
            Ok(xml) => xml,
            Err(why) => {
                failures.push(why);
                continue;
            }
        };
        filled += 1;
        let table = FormTable::build(&form.document).unwrap();
        let read = match instance::read(&table, &xml) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{id}: {e}\n{xml}"));
                continue;
            }
        };
        assert_eq!(read.form_id, id);
        assert_eq!(read.version.as_deref(), Some(form.meta.version.as_str()));
        let id_ok = read
            .meta
            .instance_id
            .as_deref()
            .and_then(|i| uuid::Uuid::parse_str(i).ok());
        assert!(
            id_ok.is_some(),
            "{id}: instanceID {:?}",
            read.meta.instance_id
        );
        assert!(xml.contains("<instanceID>uuid:"), "{xml}");
        assert!(read.meta.time_start.is_some(), "{xml}");
        assert_eq!(
            read.meta.device_id.as_deref(),
            Some("javarosa-fill"),
            "{xml}"
        );
        let mut got = Value::Object(read.answers);
        let mut want = Value::Object(fixture(&id).unwrap());
        normalise(&mut got);
        normalise(&mut want);
        if got != want {
            failures.push(format!(
                "{id}: JavaRosa's instance reads back otherwise\n got: {got}\nwant: {want}\n{xml}"
            ));
        } else if !form.validate(&got).is_empty() {
            failures.push(format!("{id}: {:?}", form.validate(&got)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(filled >= 40, "only {filled} forms filled");
}

/// The forms one run of `tests/odk/engine.mjs` loads, each with the
/// variants it fills (`{"answers", "items", "hidden"}`).
struct EngineJob {
    xform: PathBuf,
    variants: Vec<Value>,
}

/// Runs the engine over `jobs` in `processes` Node processes at once, the
/// forms shared out by their number of variants; each process parses its
/// forms once. Its output lines, `form` renumbered to index `jobs`.
fn run_engine(modules: &Path, dir: &Path, jobs: &[EngineJob], processes: usize) -> Vec<Value> {
    let mut batches: Vec<Vec<usize>> = vec![Vec::new(); processes];
    let mut load = vec![0usize; processes];
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].variants.len()));
    for i in order {
        let lightest = (0..processes).min_by_key(|&b| load[b]).unwrap();
        load[lightest] += jobs[i].variants.len() + 1;
        batches[lightest].push(i);
    }
    std::thread::scope(|s| {
        let runs: Vec<_> = batches
            .iter()
            .enumerate()
            .filter(|(_, batch)| !batch.is_empty())
            .map(|(b, batch)| {
                let forms: Vec<Value> = batch
                    .iter()
                    .map(|&i| serde_json::json!({"xform": jobs[i].xform, "variants": jobs[i].variants}))
                    .collect();
                let path = dir.join(format!("jobs-{b}.json"));
                std::fs::write(&path, serde_json::json!({ "forms": forms }).to_string()).unwrap();
                s.spawn(move || {
                    let out = Command::new("node")
                        .arg(engine_script())
                        .arg(&path)
                        .env("CASESYNC_TEST_ODK_NODE_MODULES", modules)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "the engine stopped: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    String::from_utf8(out.stdout)
                        .unwrap()
                        .lines()
                        .map(|line| {
                            let mut v: Value = serde_json::from_str(line)
                                .unwrap_or_else(|e| panic!("{e}: {line}"));
                            let local = v["form"].as_u64().unwrap() as usize;
                            v["form"] = batch[local].into();
                            v
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    })
}

#[test]
fn every_shipped_xform_loads_in_the_web_forms_engine() {
    let Some(modules) = node_modules() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jobs: Vec<EngineJob> = write_xforms(dir.path())
        .into_iter()
        .map(|xform| EngineJob {
            xform,
            variants: Vec::new(),
        })
        .collect();
    let lines = run_engine(&modules, dir.path(), &jobs, 1);
    let failed: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let file = jobs[l["form"].as_u64()? as usize].xform.display();
            l["failed"].as_str().map(|why| format!("{file}: {why}"))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let loaded = lines
        .iter()
        .filter(|l| l["loaded"].as_u64().is_some_and(|n| n > 3))
        .count();
    assert_eq!(loaded, jobs.len(), "{lines:?}");
}

/// One variant of a fixture's answers: what was changed, the answers, and
/// repeats left with exactly so many items (the engine's default items of a
/// `minItems` repeat are removed this way).
struct Variant {
    what: String,
    answers: Map<String, Value>,
    items: Vec<(String, usize)>,
}

/// A field of the form where the fixture's answers are.
struct Site<'a> {
    node: &'a Node,
    /// JSON pointer into the answers (repeat items from 0).
    pointer: String,
    /// Element path (repeat items from 1), as `answer_paths` writes it.
    xml: String,
    value: Option<&'a Value>,
    /// Whether the object holding it is in the answers.
    parent: bool,
}

/// Every field the fixture's answers reach: repeats through their first
/// item.
fn sites<'a>(
    nodes: &'a [Node],
    answers: Option<&'a Map<String, Value>>,
    pointer: &str,
    xml: &str,
    out: &mut Vec<Site<'a>>,
) {
    for node in nodes {
        let p = format!("{pointer}/{}", node.name);
        let x = format!("{xml}/{}", node.name);
        let value = answers.and_then(|a| a.get(&node.name));
        out.push(Site {
            node,
            pointer: p.clone(),
            xml: x.clone(),
            value,
            parent: answers.is_some(),
        });
        match &node.kind {
            Kind::Group { children, .. } => {
                sites(children, value.and_then(Value::as_object), &p, &x, out)
            }
            Kind::Repeat { children, .. } => {
                if let Some(first) = value.and_then(Value::as_array).and_then(|a| a.first()) {
                    sites(
                        children,
                        first.as_object(),
                        &format!("{p}/0"),
                        &format!("{x}[1]"),
                        out,
                    )
                }
            }
            _ => {}
        }
    }
}

/// Sets `pointer` in `root`, making the objects on its way.
fn put(root: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if root.pointer(parent).is_none() {
        put(root, parent, Value::Object(Map::new()));
    }
    match root.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => panic!("{pointer}: {other} holds no field"),
    }
}

fn remove_pointer(value: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.shift_remove(key);
    }
}

/// The schema of a field's value: for an "or unknown" union, its typed side.
fn typed_schema(schema: &Value) -> &Value {
    schema
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|any| any.iter().find(|s| s.get("const").is_none()))
        .unwrap_or(schema)
}

/// A plausible answer of a question, where one can be made up.
fn sample(leaf: &Leaf, schema: &Value, table: &FormTable) -> Option<Value> {
    let bound = |word: &str| schema.get(word).and_then(Value::as_f64);
    let number = bound("minimum").or(bound("maximum")).unwrap_or(1.0);
    Some(match leaf {
        Leaf::Date => "2024-01-15".into(),
        Leaf::DateTime => "2024-01-15T10:00:00+05:00".into(),
        Leaf::Integer => (number as i64).into(),
        Leaf::Decimal => serde_json::json!(number),
        Leaf::Boolean => true.into(),
        Leaf::One(list) => table.list(list)?.items.first()?.0.clone().into(),
        Leaf::Many(list) => serde_json::json!([table.list(list)?.items.first()?.0]),
        Leaf::Text if schema.get("pattern").is_none() && schema.get("format").is_none() => {
            "made up".into()
        }
        Leaf::Text | Leaf::Upload { .. } => return None,
    })
}

/// The variants of a form's fixture answers (docs/odk.md, "How this is
/// tested"): the answers as they are, then one change each — a required
/// answer left empty, a number below its minimum or above its maximum, a
/// text over its maxLength or off its pattern, a value not among the
/// choices, an "or unknown" answered the other way, an answer to a question
/// the fixture leaves out because it does not apply (or is optional), a
/// repeat with one item fewer than its minItems or one more than its
/// maxItems, an optional section with required questions toggled off, or
/// on and left empty.
fn variants(form: &CompiledForm, table: &FormTable, fixture: &Map<String, Value>) -> Vec<Variant> {
    let base = Value::Object(fixture.clone());
    let mut out = vec![Variant {
        what: "the fixture's answers".into(),
        answers: fixture.clone(),
        items: Vec::new(),
    }];
    let mut candidates: Vec<(&'static str, Variant)> = Vec::new();
    let mut push =
        |kind: &'static str, what: String, answers: Value, items: Vec<(String, usize)>| {
            let Value::Object(answers) = answers else {
                unreachable!()
            };
            candidates.push((
                kind,
                Variant {
                    what,
                    answers,
                    items,
                },
            ));
        };
    let set = |pointer: &str, value: Value| {
        let mut v = base.clone();
        put(&mut v, pointer, value);
        v
    };
    let mut found = Vec::new();
    sites(&table.nodes, Some(fixture), "", "/data", &mut found);
    for site in found {
        let at = &site.pointer;
        let schema = form
            .document
            .pointer(&site.node.pointer)
            .unwrap_or(&Value::Null);
        let typed = typed_schema(schema);
        match (&site.node.kind, site.value) {
            (Kind::Question { leaf, unknown, .. }, Some(value)) => {
                if site.node.required {
                    let mut v = base.clone();
                    remove_pointer(&mut v, at);
                    push(
                        "required",
                        format!("{at} left empty (required)"),
                        v,
                        Vec::new(),
                    );
                }
                let constant = unknown
                    .as_ref()
                    .filter(|u| value.as_str() == Some(u.value.as_str()));
                match (unknown, constant) {
                    (Some(_), Some(_)) => {
                        if let Some(known) = sample(leaf, typed, table) {
                            push(
                                "unknown",
                                format!("{at} known: {known}"),
                                set(at, known),
                                Vec::new(),
                            );
                        }
                        continue;
                    }
                    (Some(u), None) => push(
                        "unknown",
                        format!("{at} {}", u.value),
                        set(at, u.value.clone().into()),
                        Vec::new(),
                    ),
                    _ => {}
                }
                for (word, step) in [("minimum", -1.0), ("maximum", 1.0)] {
                    let Some(n) = typed.get(word).and_then(Value::as_f64) else {
                        continue;
                    };
                    let beyond = match leaf {
                        Leaf::Integer => serde_json::json!(n as i64 + step as i64),
                        _ => serde_json::json!(n + step / 2.0),
                    };
                    push(
                        word,
                        format!("{at} = {beyond}, beyond its {word}"),
                        set(at, beyond),
                        Vec::new(),
                    );
                }
                if let (Leaf::Text, Some(n)) =
                    (leaf, typed.get("maxLength").and_then(Value::as_u64))
                {
                    let long = "x".repeat(n as usize + 1);
                    push(
                        "maxLength",
                        format!("{at} over its maxLength {n}"),
                        set(at, long.into()),
                        Vec::new(),
                    );
                }
                if typed.get("pattern").is_some() {
                    push(
                        "pattern",
                        format!("{at} off its pattern"),
                        set(at, "~?~".into()),
                        Vec::new(),
                    );
                }
                match leaf {
                    Leaf::One(_) | Leaf::Boolean => push(
                        "choice",
                        format!("{at} not among its choices"),
                        set(at, "not_a_choice".into()),
                        Vec::new(),
                    ),
                    Leaf::Many(_) => {
                        let mut more = value.as_array().cloned().unwrap_or_default();
                        more.push("not_a_choice".into());
                        push(
                            "choice",
                            format!("{at} with a value not among its choices"),
                            set(at, more.into()),
                            Vec::new(),
                        );
                    }
                    _ => {}
                }
            }
            (Kind::Question { leaf, .. }, None) if site.parent => {
                if let Some(answer) = sample(leaf, typed, table) {
                    let why = if site.node.relevant.is_some() {
                        "which may not apply"
                    } else {
                        "optional"
                    };
                    push(
                        "answered",
                        format!("{at} answered ({why}): {answer}"),
                        set(at, answer),
                        Vec::new(),
                    );
                }
            }
            (
                Kind::Repeat { min, max, .. } | Kind::List { min, max, .. },
                Some(Value::Array(items)),
            ) => {
                if *min > 0 && !items.is_empty() {
                    let fewer: Vec<Value> = items[..(*min - 1).min(items.len())].to_vec();
                    let n = fewer.len();
                    push(
                        "minItems",
                        format!("{at} with {n} items, fewer than its minItems {min}"),
                        set(at, fewer.into()),
                        vec![(site.xml.clone(), n)],
                    );
                }
                // Up to 10: repeats of 50 or 100 items cost the engine
                // seconds, and their constraint is written the same way.
                if let (Some(max @ ..=10), Some(last)) = (max, items.last()) {
                    let mut more = items.clone();
                    while more.len() <= *max {
                        more.push(last.clone());
                    }
                    push(
                        "maxItems",
                        format!(
                            "{at} with {} items, more than its maxItems {max}",
                            more.len()
                        ),
                        set(at, more.into()),
                        Vec::new(),
                    );
                }
            }
            (Kind::Group { toggle: true, .. }, Some(_)) => {
                let mut v = base.clone();
                remove_pointer(&mut v, at);
                push("toggle", format!("{at} toggled off"), v, Vec::new());
            }
            (Kind::Group { toggle: true, .. }, None) if site.parent => push(
                "toggle",
                format!("{at} toggled on and left empty"),
                set(at, Value::Object(Map::new())),
                Vec::new(),
            ),
            _ => {}
        }
    }
    // Of each kind, the first and the last place in form order: the CI
    // budget keeps it to two (the last is often in a repeat or deeper).
    for kind in [
        "required",
        "unknown",
        "minimum",
        "maximum",
        "maxLength",
        "pattern",
        "choice",
        "answered",
        "minItems",
        "maxItems",
        "toggle",
    ] {
        let of_kind: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].0 == kind)
            .collect();
        let mut keep = of_kind
            .first()
            .into_iter()
            .chain(of_kind.last())
            .copied()
            .collect::<Vec<_>>();
        keep.dedup();
        out.extend(keep.into_iter().map(|i| Variant {
            what: candidates[i].1.what.clone(),
            answers: candidates[i].1.answers.clone(),
            items: candidates[i].1.items.clone(),
        }));
    }
    out
}

/// Mapping disagreements that cannot be fixed in the XForm, each with why
/// (docs/odk.md, "What the phone cannot check"): (form, variant, reason).
const KNOWN_EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// The file names the upload questions of `nodes` hold in `answers`.
fn uploads(nodes: &[Node], answers: &Value, out: &mut Vec<String>) {
    for node in nodes {
        let Some(value) = answers.get(&node.name) else {
            continue;
        };
        match &node.kind {
            Kind::Question {
                leaf: Leaf::Upload { .. },
                ..
            } => out.extend(value.as_str().map(str::to_string)),
            Kind::List {
                value: Leaf::Upload { .. },
                ..
            } => out.extend(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string)),
            ),
            Kind::Group { children, .. } => uploads(children, value, out),
            Kind::Repeat { children, .. } => {
                for item in value.as_array().into_iter().flatten() {
                    uploads(children, item, out);
                }
            }
            _ => {}
        }
    }
}

/// What an OpenRosa submission of `xml` sends: the instance and every file
/// its answers name.
fn submission_parts(table: &FormTable, xml: &str, answers: &Value) -> Vec<common::odk::Part> {
    let mut parts = vec![("xml_submission_file".to_string(), xml.as_bytes().to_vec())];
    let mut names = Vec::new();
    uploads(&table.nodes, answers, &mut names);
    for name in names {
        if !parts.iter().any(|(n, _)| *n == name) {
            let content = crate::common::phone::attachment_content(&name);
            parts.push((name, content));
        }
    }
    parts
}

/// Issue #17 §4: for every shipped form, the Web Forms engine fills its
/// fixture's answers and systematic variants of them (`variants`), applying
/// relevance, required and constraints itself; each instance it sends reads
/// back (`odk::instance::read`) into answers, and the engine's verdict
/// (ready to send, or violations) must be the server's JSON-Schema
/// validator's. Each instance is then posted over HTTP as Web Forms would
/// (plaintext OpenRosa, loopback, `odk_allow_plaintext`) and must be stored
/// in the case (201) exactly when the validator accepts it, and otherwise
/// held for a coordinator outside the case (202, quarantined: a form that
/// left the phone is never dropped).
/// The engine fills the XForms the server serves. A disagreement is a bug
/// in the mapping, unless it is one of KNOWN_EXCEPTIONS.
#[test]
fn the_web_forms_engine_and_the_server_agree_on_every_variant_of_every_shipped_form() {
    use crate::common::{agent, Response, TestApp};
    use common::odk::{basic, device_token, multipart_body, post_body};
    let Some(modules) = node_modules() else {
        return;
    };
    let started = std::time::Instant::now();
    let app = TestApp::spawn_with(|s| s.odk_allow_plaintext = true);
    let admin = app.admin_token();
    let (worker, _) = app.user(&admin, "nomad", "field_worker", &["KZ-CAM-ALA", "BT-NCWC"]);
    let auth = basic("nomad", &device_token(&app, &admin, &worker));
    // CASESYNC_TEST_ODK_WORK_DIR keeps the XForms and the engine's jobs
    // for a look after a failure.
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("CASESYNC_TEST_ODK_WORK_DIR").map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());

    /// A form, its mapping, its fixture's answers and their variants.
    type Filled = (CompiledForm, FormTable, Map<String, Value>, Vec<Variant>);
    let forms: Vec<Filled> = shipped()
        .into_iter()
        .filter_map(|form| {
            let answers = fixture(&form.meta.id)?;
            let table = FormTable::build(&form.document).unwrap();
            let variants = variants(&form, &table, &answers);
            Some((form, table, answers, variants))
        })
        .collect();
    assert!(
        forms.len() >= 40,
        "only {} forms have a valid.json",
        forms.len()
    );
    let mut jobs = Vec::new();
    for (form, table, _, variants) in &forms {
        let (id, programme) = (&form.meta.id, &form.meta.programme);
        // The XForm the server serves, byte for byte.
        let res = Response::from(
            agent()
                .get(app.url(&format!("/odk/{programme}/forms/{id}.xml")))
                .header("Authorization", &auth)
                .call()
                .unwrap(),
        );
        assert_eq!(res.status, 200, "{id}: {}", res.text);
        let xform = dir.join(format!("{id}.xml"));
        std::fs::write(&xform, &res.bytes).unwrap();
        let variants = variants
            .iter()
            .map(|variant| {
                let paths = instance::answer_paths(table, &variant.answers);
                let pair = |a: &instance::PathAnswer| serde_json::json!([a.path, a.value]);
                // A follow-up picks its case from the case list the engine
                // is given (one case the server has not seen): held for it
                // (stored) when the answers are valid.
                let hidden: Vec<Value> = paths.iter().filter(|a| !a.asked).map(pair).collect();
                serde_json::json!({
                    "answers": paths.iter().filter(|a| a.asked).map(pair).collect::<Vec<_>>(),
                    "items": variant.items,
                    "hidden": hidden,
                })
            })
            .collect();
        jobs.push(EngineJob { xform, variants });
    }
    let lines = run_engine(&modules, dir, &jobs, 2);
    let engine_time = started.elapsed();

    let mut disagreements = Vec::new();
    let mut excepted = Vec::new();
    let (mut valid, mut invalid, mut stored, mut held) = (0, 0, 0, 0);
    let (before, held_before) = (app.stored_submissions(), app.quarantined_submissions());
    for line in lines.iter().filter(|l| l.get("variant").is_some()) {
        let (form, table, answers, variants) = &forms[line["form"].as_u64().unwrap() as usize];
        let variant = &variants[line["variant"].as_u64().unwrap() as usize];
        let id = &form.meta.id;
        let label = format!("{id}: {}", variant.what);
        let xml = line["xml"].as_str().unwrap();
        let engine_valid = line["valid"].as_bool().unwrap();
        let read = match instance::read(table, xml) {
            Ok(read) => read,
            Err(e) => {
                disagreements.push(format!(
                    "{label}: the server cannot read the engine's instance: {e}\n{xml}"
                ));
                continue;
            }
        };
        let got = Value::Object(read.answers);
        let errors = form.validate(&got);
        let accepted = errors.is_empty();
        if accepted {
            valid += 1;
        } else {
            invalid += 1;
        }
        if variant.what == "the fixture's answers" {
            let (mut g, mut want) = (got.clone(), Value::Object(answers.clone()));
            for v in [&mut g, &mut want] {
                normalise(v);
                // Web Forms writes a multiple choice in its choices' order.
                sort_lists(v);
            }
            if g != want || !engine_valid {
                disagreements.push(format!(
                    "{label}: read back otherwise or refused by the engine ({})\n got: {g}\nwant: {want}",
                    line["violations"]
                ));
            }
        }
        if engine_valid != accepted {
            let why =
                format!(
                "{label}: the engine says {}, the validator {}\n engine: {} {}\n validator: {:?}",
                if engine_valid { "valid" } else { "invalid" },
                if accepted { "valid" } else { "invalid" },
                line["violations"],
                line["unset"],
                errors.iter().map(|e| format!("{} {}", e.pointer, e.message)).collect::<Vec<_>>(),
            );
            match KNOWN_EXCEPTIONS
                .iter()
                .find(|(f, what, _)| f == id && variant.what.contains(what))
            {
                Some((_, _, reason)) => excepted.push(format!("{label}: {reason}")),
                None => disagreements.push(why),
            }
        }
        // Over HTTP, as ODK Web Forms sends it.
        let parts = submission_parts(table, xml, &got);
        let res = post_body(
            &app,
            &format!("/odk/{}/submission", form.meta.programme),
            &auth,
            &multipart_body(&parts),
        );
        let want = if accepted { 201 } else { 202 };
        if res.status != want {
            disagreements.push(format!(
                "{label}: the server answered {} where the validator says {}: {}",
                res.status,
                if accepted { "valid" } else { "invalid" },
                res.text
            ));
        }
        match res.status {
            201 => stored += 1,
            202 => held += 1,
            _ => {}
        }
    }
    let filled = valid + invalid;
    println!(
        "{} forms, {filled} instances ({valid} valid, {invalid} invalid), {} known exceptions; engine {:.1} s, all {:.1} s",
        forms.len(),
        excepted.len(),
        engine_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for e in &excepted {
        println!("known exception: {e}");
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n\n")
    );
    let expected: usize = forms.iter().map(|f| f.3.len()).sum();
    assert_eq!(filled, expected, "every variant filled");
    assert!(
        valid >= 100 && invalid >= 200,
        "{valid} valid, {invalid} invalid"
    );
    assert_eq!(app.stored_submissions() - before, (stored + held) as i64);
    assert_eq!(app.quarantined_submissions() - held_before, held as i64);
    assert_eq!(stored, valid, "every valid instance is in its case");
}

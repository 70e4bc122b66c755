//! The XForms made from the shipped forms, checked by the real engines:
//! ODK Validate (JavaRosa 5.1, ODK Collect's engine, inside the pyxform
//! 4.5.0 wheel) and `@getodk/xforms-engine` 0.22.0 (ODK Web Forms) under
//! Node. Both fill every shipped form with its fixture's answers, and what
//! they send reads back into the same answers, which the server's validator
//! accepts: a disagreement is a bug in the mapping.
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
use casesync::odk::{instance, nodes::FormTable, xform};
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
fn every_shipped_xform_loads_in_the_web_forms_engine() {
    let Some(modules) = node_modules() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = write_xforms(dir.path());
    let out = Command::new("node")
        .arg(engine_script())
        .arg("load")
        .args(&files)
        .env("CASESYNC_TEST_ODK_NODE_MODULES", &modules)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{text}"
    );
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

/// A data pointer for a path of `answer_paths` (`/data/a/kids[2]/b` →
/// `/a/kids/1/b`).
fn pointer_of(path: &str) -> String {
    path.split('/')
        .skip(2)
        .map(|step| match step.split_once('[') {
            Some((name, index)) => {
                let i: usize = index.trim_end_matches(']').parse().unwrap();
                format!("/{name}/{}", i - 1)
            }
            None => format!("/{step}"),
        })
        .collect()
}

fn remove_pointer(value: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.shift_remove(key);
    }
}

/// The Web Forms engine fills every shipped form (answers set by path,
/// relevance and constraints applied by the engine); what it sends reads
/// back to the fixture's answers, which the validator accepts. The engine
/// cannot set hidden values (references entities will fill), so they are
/// left out of the comparison.
#[test]
fn the_web_forms_engine_fills_every_shipped_form_into_answers_the_validator_accepts() {
    let Some(modules) = node_modules() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = public_key();
    let mut failures = Vec::new();
    let mut filled = 0;
    for form in shipped() {
        let id = form.meta.id.clone();
        let Some(answers) = fixture(&id) else {
            continue;
        };
        let table = FormTable::build(&form.document).unwrap();
        let form_path = dir.path().join(format!("{id}.xml"));
        std::fs::write(&form_path, xform::generate(&form.document, &key).unwrap()).unwrap();
        let all = instance::answer_paths(&table, &answers);
        let mut want = Value::Object(answers);
        let mut hidden = false;
        for a in all.iter().filter(|a| !a.asked) {
            remove_pointer(&mut want, &pointer_of(&a.path));
            hidden = true;
        }
        let pairs: Vec<[&str; 2]> = all
            .iter()
            .filter(|a| a.asked)
            .map(|a| [a.path.as_str(), a.value.as_str()])
            .collect();
        let answers_path = dir.path().join(format!("{id}.json"));
        std::fs::write(&answers_path, serde_json::to_string(&pairs).unwrap()).unwrap();
        let out = Command::new("node")
            .arg(engine_script())
            .arg("fill")
            .arg(&form_path)
            .arg(&answers_path)
            .env("CASESYNC_TEST_ODK_NODE_MODULES", &modules)
            .output()
            .unwrap();
        let xml = String::from_utf8(out.stdout).unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{id}: the engine refused answers:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        filled += 1;
        let read = match instance::read(&table, &xml) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{id}: {e}\n{xml}"));
                continue;
            }
        };
        assert!(read.meta.instance_id.is_some(), "{xml}");
        let mut got = Value::Object(read.answers);
        if !hidden && !form.validate(&got).is_empty() {
            failures.push(format!("{id}: {:?}", form.validate(&got)));
        }
        normalise(&mut got);
        normalise(&mut want);
        // Web Forms writes a multiple choice in the order of its choices.
        sort_lists(&mut got);
        sort_lists(&mut want);
        if got != want {
            failures.push(format!(
                "{id}: the engine's instance reads back otherwise\n got: {got}\nwant: {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(filled >= 40, "only {filled} forms filled");
}

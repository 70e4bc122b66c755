//! Validations per second of realistic, fully filled forms: the KZ care plan
//! and the BT initial screening and registration form (their fixtures).
//! Target: 20,000 validations/s or more on one core.
//!
//! `cargo bench --bench validate`

use std::path::Path;

use casesync::forms::{check, definitions, CompiledForm};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

fn load(id: &str) -> (CompiledForm, Value) {
    let set = definitions::shipped();
    let file = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == id)
        .unwrap_or_else(|| panic!("{id} is shipped"));
    let form = check::check(&file.document, &set.resources).expect("the form checks");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/forms")
        .join(id)
        .join("valid.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(form.validate(&data).is_empty(), "the fixture is valid");
    (form, data)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(1));
    for id in ["kz.care_plan", "bt.registration"] {
        let (form, data) = load(id);
        group.bench_function(id, |b| b.iter(|| assert!(form.validate(&data).is_empty())));
        // The slow path: an invalid submission collects every error.
        let mut broken = data.clone();
        if let Some(map) = broken.as_object_mut() {
            let first = map.keys().next().cloned().unwrap();
            map.shift_remove(&first);
            map.insert("not_a_field".into(), Value::Bool(true));
        }
        group.bench_function(format!("{id} (invalid)"), |b| {
            b.iter(|| assert!(!form.validate(&broken).is_empty()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

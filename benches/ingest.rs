//! The CPU cost of taking in one submission, without HTTP or the database:
//! opening the JWE (one RSA-2048 OAEP private operation, then AES-256-GCM)
//! and validating the KZ referral inside it. Compare the decrypt figure with
//! `openssl speed rsa2048`; `scripts/bench-ingest.sh` measures the whole
//! path over loopback into SQLite.
//!
//! `cargo bench --bench ingest`

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use casesync::crypto::jwe;
use casesync::forms::{check, definitions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

fn bench(c: &mut Criterion) {
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let public = key.public_key();
    let der = public.as_der().unwrap();
    let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(der.as_ref()).unwrap();
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/forms/kz.referral/valid.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let envelope = json!({
        "instance_id": uuid::Uuid::new_v4().to_string(),
        "form_id": "kz.referral", "form_version": "2021.1.1",
        "case_id": uuid::Uuid::new_v4().to_string(),
        "device_id": "bench", "completed_at": "2026-03-02T10:40:00+05:00",
        "data": data.clone(), "attachments": []
    });
    let compact = jwe::encrypt(envelope.to_string().as_bytes(), "kz-bench", &public);
    let set = definitions::shipped();
    let file = set
        .forms
        .iter()
        .find(|f| f.document["x-form"]["id"] == "kz.referral")
        .unwrap();
    let form = check::check(&file.document, &set.resources).unwrap();

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open JWE (RSA-OAEP-256 + A256GCM)", |b| {
        b.iter(|| jwe::parse(&compact).unwrap().decrypt(&key).unwrap())
    });
    group.bench_function("open JWE + parse + validate referral", |b| {
        b.iter(|| {
            let plain = jwe::parse(&compact).unwrap().decrypt(&key).unwrap();
            let value: Value = serde_json::from_slice(&plain).unwrap();
            assert!(form.validate(&value["data"]).is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

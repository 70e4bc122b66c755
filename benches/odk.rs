//! XForm generation: every shipped form version made into its XForm (what
//! a start with an empty `odk_xforms` table does, less the database), and
//! one large form alone. No target: made once per version and key.
//!
//! `cargo bench --bench odk`

use casesync::forms::{check, definitions};
use casesync::odk::xform;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

fn bench(c: &mut Criterion) {
    let set = definitions::shipped();
    let forms: Vec<(String, Value)> = set
        .forms
        .iter()
        .map(|f| {
            let form = check::check(&f.document, &set.resources).expect("the form checks");
            (form.meta.id.clone(), (*form.document).clone())
        })
        .collect();
    // The size of an RSA-2048 SubjectPublicKeyInfo; the generator only encodes it.
    let key = vec![0x30u8; 294];
    let mut group = c.benchmark_group("odk_xform");
    group.throughput(Throughput::Elements(forms.len() as u64));
    group.bench_function("all shipped forms", |b| {
        b.iter(|| {
            for (_, document) in &forms {
                xform::generate(document, &key).expect("generates");
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    let (_, care_plan) = forms.iter().find(|(id, _)| id == "kz.care_plan").unwrap();
    group.bench_function("kz.care_plan", |b| {
        b.iter(|| xform::generate(care_plan, &key).expect("generates"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

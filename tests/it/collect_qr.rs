//! ODK Collect's settings QR code (docs/odk.md, "Setting up a phone (QR
//! code)"): `POST /api/v1/tokens/collect-settings` and `casesync tokens qr`
//! make a new device token and the code that sets a phone up with it. The
//! text inflates to Collect's JSON, the PNG reads back as a QR code of that
//! text, and the token in it works.

use crate::common;

use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::TestApp;
use serde_json::{json, Value};

/// base64 → zlib → JSON, as Collect reads a settings code.
pub(crate) fn inflate(settings: &str) -> Value {
    let zlib = STANDARD.decode(settings).expect("base64");
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(&zlib[..])
        .read_to_string(&mut text)
        .expect("zlib");
    serde_json::from_str(&text).expect("JSON")
}

/// The text of the one QR code in a PNG.
pub(crate) fn read_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).expect("its pixels");
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("a readable QR code").1
}

pub(crate) fn png_of(data_url: &str) -> Vec<u8> {
    let b64 = data_url
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    STANDARD.decode(b64).unwrap()
}

#[test]
fn a_coordinator_makes_a_token_with_its_collect_qr_code() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (_, coordinator) = app.user(&admin, "almaty", "coordinator", &["KZ-CAM-ALA"]);
    let (worker_id, _) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);

    let res = app.post(
        "/api/v1/tokens/collect-settings",
        &coordinator,
        json!({ "user_id": worker_id, "label": "Collect on the Samsung" }),
    );
    assert_eq!(res.status, 201, "{}", res.text);
    let token = res.body["token"].as_str().unwrap();
    assert!(token.starts_with("cs_"));
    assert_eq!(res.body["user_id"], worker_id.as_str());
    assert_eq!(res.body["kind"], "device");
    let qr = &res.body["collect_settings"];
    assert_eq!(qr["programme"], "kz");
    assert_eq!(qr["server_url"], "https://casesync.test/odk/kz");

    let settings = qr["settings"].as_str().unwrap();
    let json = inflate(settings);
    assert_eq!(
        json["general"]["server_url"],
        "https://casesync.test/odk/kz"
    );
    assert_eq!(json["general"]["username"], "aigerim");
    assert_eq!(json["general"]["password"], token);
    assert_eq!(json["admin"], json!({}));
    assert!(json["project"]["name"].as_str().unwrap().contains("kz"));

    assert_eq!(read_qr(&png_of(qr["png"].as_str().unwrap())), settings);

    // The token in the code is a working device token of the worker.
    assert_eq!(app.get("/api/v1/me", token).body["username"], "aigerim");
    // Audited as any device token is, and listed without its secret.
    let audit = app.get("/api/v1/audit?action=device_token_created&limit=1", &admin);
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert_eq!(audit.body["items"][0]["object_id"], res.body["id"]);
    let listed = app.get("/api/v1/tokens", &coordinator);
    assert!(!listed.text.contains(token));
}

#[test]
fn the_programme_must_be_one_the_worker_has() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    let (both, _) = app.user(&admin, "nomad", "field_worker", &["KZ-CAM-ALA", "BT-NCWC"]);
    let body = |programme: Option<&str>| {
        let mut b = json!({ "user_id": both, "label": "phone" });
        if let Some(p) = programme {
            b["programme"] = json!(p);
        }
        b
    };
    let ambiguous = app.post("/api/v1/tokens/collect-settings", &admin, body(None));
    ambiguous.assert_problem(422, "validation");
    assert_eq!(ambiguous.error_pointers(), ["/programme"]);
    let bt = app.post("/api/v1/tokens/collect-settings", &admin, body(Some("bt")));
    assert_eq!(bt.status, 201, "{}", bt.text);
    assert_eq!(
        bt.body["collect_settings"]["server_url"],
        "https://casesync.test/odk/bt"
    );
    let (kz_only, _) = app.user(&admin, "kz-only", "field_worker", &["KZ-CAM-ALA"]);
    let wrong = app.post(
        "/api/v1/tokens/collect-settings",
        &admin,
        json!({ "user_id": kz_only, "label": "phone", "programme": "bt" }),
    );
    wrong.assert_problem(422, "validation");
    // Nothing was made by the refusals: only the bt token exists.
    let tokens = app.get("/api/v1/tokens", &admin);
    assert_eq!(
        tokens.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        tokens.text
    );
}

#[test]
fn without_a_public_url_no_code_is_made() {
    let app = TestApp::spawn_with(|s| s.public_url = None);
    let admin = app.admin_token();
    let (worker_id, _) = app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let res = app.post(
        "/api/v1/tokens/collect-settings",
        &admin,
        json!({ "user_id": worker_id, "label": "phone" }),
    );
    let problem = res.assert_problem(409, "conflict");
    assert!(problem["detail"].as_str().unwrap().contains("public_url"));
    assert_eq!(
        app.get("/api/v1/tokens", &admin).body["items"],
        json!([]),
        "no token was made"
    );
}

#[test]
fn the_command_line_prints_the_code_and_writes_the_png() {
    let app = TestApp::spawn();
    let admin = app.admin_token();
    app.user(&admin, "aigerim", "field_worker", &["KZ-CAM-ALA"]);
    let png_path = app.data_dir().join("aigerim-qr.png");
    let out = app
        .shell()
        .env("CASESYNC_PUBLIC_URL", "https://cases.example.org/")
        .args(["tokens", "qr", "aigerim", "--png"])
        .arg(&png_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("https://cases.example.org/odk/kz"),
        "{stdout}"
    );
    let settings = stdout
        .lines()
        .rev()
        .find(|l| !l.starts_with("PNG"))
        .unwrap()
        .trim();
    let json = inflate(settings);
    assert_eq!(json["general"]["username"], "aigerim");
    assert_eq!(
        json["general"]["server_url"],
        "https://cases.example.org/odk/kz"
    );
    let token = json["general"]["password"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", token).body["username"], "aigerim");
    assert_eq!(read_qr(&std::fs::read(&png_path).unwrap()), settings);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&png_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the PNG holds a token: owner only");
}

//! ODK Collect's settings QR code for a new device token (docs/odk.md,
//! "Setting up a phone (QR code)"): base64 of the zlib-compressed JSON
//! `{"general":{"server_url","username","password"},"admin":{},"project":{"name"}}`,
//! which Collect reads when a coordinator scans it. The password is the
//! device token, so the code exists only in the answer that made the token.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use qrcode::{Color, EcLevel, QrCode};
use serde::Serialize;

use super::{sites, users};
use crate::db::DbConnection;
use crate::error::{AppError, AppResult};

/// Pixels per QR module, and the quiet zone in modules around the code.
const MODULE_PIXELS: usize = 8;
const QUIET_MODULES: usize = 4;

/// What a coordinator shows the phone.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CollectSettings {
    /// The OpenRosa address Collect is set to: `<public_url>/odk/<programme>`.
    pub server_url: String,
    pub programme: String,
    /// The QR code's text: base64(zlib(JSON)). It holds the device token.
    pub settings: String,
    /// The QR code as `data:image/png;base64,…`.
    pub png: String,
}

/// The one programme the user's phone is set up for: `requested`, which
/// must be one the user works in, or the only one the user works in.
pub fn programme_for(
    conn: &mut DbConnection,
    user: &users::User,
    requested: Option<&str>,
) -> AppResult<String> {
    let mut programmes: Vec<String> = sites::list(conn, Some(&user.site_ids))?
        .into_iter()
        .map(|s| s.programme)
        .collect();
    programmes.sort();
    programmes.dedup();
    match (requested, programmes.as_slice()) {
        (Some(p), all) if all.iter().any(|a| a == p) => Ok(p.to_string()),
        (Some(p), _) => Err(AppError::invalid_field(
            "/programme",
            format!("the user works at no site of programme {p:?}"),
        )),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(AppError::invalid_field(
            "/user_id",
            "the user works at no site, so no programme's forms",
        )),
        (None, all) => Err(AppError::invalid_field(
            "/programme",
            format!(
                "the user works in programmes {}: say which one this phone is for",
                all.join(", ")
            ),
        )),
    }
}

/// Collect's OpenRosa address for a programme under the server's public URL.
pub fn server_url(public_url: &str, programme: &str) -> String {
    format!("{}/odk/{programme}", public_url.trim_end_matches('/'))
}

/// The settings text Collect scans: base64(zlib(JSON)).
pub fn encode(server_url: &str, username: &str, password: &str, project: &str) -> String {
    let json = serde_json::json!({
        "general": { "server_url": server_url, "username": username, "password": password },
        "admin": {},
        "project": { "name": project },
    });
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::best());
    zlib.write_all(json.to_string().as_bytes())
        .expect("writing to memory");
    STANDARD.encode(zlib.finish().expect("writing to memory"))
}

/// A black-on-white PNG of the QR code of `text` (error correction M,
/// a quiet zone of four modules).
pub fn qr_png(text: &str) -> Vec<u8> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .expect("a settings text fits a QR code");
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * MODULE_PIXELS;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET_MODULES, i / modules + QUIET_MODULES);
        for y in my * MODULE_PIXELS..(my + 1) * MODULE_PIXELS {
            pixels[y * side + mx * MODULE_PIXELS..y * side + (mx + 1) * MODULE_PIXELS].fill(0);
        }
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("writing to memory");
    writer.write_image_data(&pixels).expect("writing to memory");
    writer.finish().expect("writing to memory");
    png
}

/// The settings for `user`'s new device token `token`, for `programme`.
pub fn for_token(
    public_url: &str,
    programme: &str,
    username: &str,
    token: &str,
) -> CollectSettings {
    let server_url = server_url(public_url, programme);
    let settings = encode(
        &server_url,
        username,
        token,
        &format!("casesync {programme} · {username}"),
    );
    let png = format!(
        "data:image/png;base64,{}",
        STANDARD.encode(qr_png(&settings))
    );
    CollectSettings {
        server_url,
        programme: programme.to_string(),
        settings,
        png,
    }
}

/// The server's public URL, or why a QR code cannot be made without it.
pub fn require_public_url(public_url: Option<&str>) -> AppResult<&str> {
    public_url.ok_or_else(|| {
        AppError::Conflict(
            "this server does not know its public address: an admin sets public_url in the configuration (README, Configuration) before phones can be set up by QR code".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn settings_inflate_to_collects_json() {
        let text = encode(
            "https://cs.example.org/odk/kz",
            "aigerim",
            "cs_secret",
            "casesync kz",
        );
        let zlib = STANDARD.decode(&text).unwrap();
        let mut json = String::new();
        flate2::read::ZlibDecoder::new(&zlib[..])
            .read_to_string(&mut json)
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            json["general"]["server_url"],
            "https://cs.example.org/odk/kz"
        );
        assert_eq!(json["general"]["username"], "aigerim");
        assert_eq!(json["general"]["password"], "cs_secret");
        assert_eq!(json["admin"], serde_json::json!({}));
        assert_eq!(json["project"]["name"], "casesync kz");
        assert_eq!(
            server_url("https://cs.example.org/base/", "bt"),
            "https://cs.example.org/base/odk/bt"
        );
    }
}

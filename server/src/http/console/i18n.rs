//! The console's words, from catalogues (`server/i18n/<lang>.json`): a
//! language is added by adding its file here, without touching a page.
//! A key a catalogue lacks falls back to English, then to the key itself.

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::HttpRequest;

/// The languages the console speaks, English first (the fallback).
const CATALOGUES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/en.json")),
    ("ru", include_str!("../../../i18n/ru.json")),
];

/// The cookie a language choice is kept in.
pub const LANG_COOKIE: &str = "casesync_lang";

pub struct Catalogue {
    pub lang: &'static str,
    strings: HashMap<String, String>,
}

static LOADED: LazyLock<Vec<Catalogue>> = LazyLock::new(|| {
    CATALOGUES
        .iter()
        .map(|(lang, text)| Catalogue {
            lang,
            strings: serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("server/i18n/{lang}.json is not a JSON object of strings: {e}")
            }),
        })
        .collect()
});

impl Catalogue {
    /// The text of `key` in this language.
    pub fn s<'a>(&'a self, key: &'a str) -> &'a str {
        self.strings
            .get(key)
            .or_else(|| LOADED[0].strings.get(key))
            .map_or(key, String::as_str)
    }

    /// Every catalogue, English first.
    pub fn all() -> &'static [Catalogue] {
        &LOADED
    }

    fn by_code(code: &str) -> Option<&'static Catalogue> {
        LOADED.iter().find(|c| c.lang.eq_ignore_ascii_case(code))
    }

    /// The language of a request: the one chosen (cookie), else the first
    /// of the browser's `Accept-Language` the console speaks, else English.
    pub fn of(req: &HttpRequest) -> &'static Catalogue {
        if let Some(found) = req
            .cookie(LANG_COOKIE)
            .and_then(|c| Catalogue::by_code(c.value()))
        {
            return found;
        }
        let accepted = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        accepted
            .split(',')
            .filter_map(|part| part.split(';').next())
            .filter_map(|tag| tag.trim().split('-').next())
            .find_map(Catalogue::by_code)
            .unwrap_or(&LOADED[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_has_every_english_key_and_no_other() {
        let english = &Catalogue::all()[0];
        assert_eq!(english.lang, "en");
        for other in &Catalogue::all()[1..] {
            let mut missing: Vec<&String> = english
                .strings
                .keys()
                .filter(|k| !other.strings.contains_key(*k))
                .collect();
            missing.sort();
            assert!(missing.is_empty(), "{} lacks {missing:?}", other.lang);
            let extra: Vec<&String> = other
                .strings
                .keys()
                .filter(|k| !english.strings.contains_key(*k))
                .collect();
            assert!(
                extra.is_empty(),
                "{} has keys English lacks: {extra:?}",
                other.lang
            );
        }
    }

    #[test]
    fn the_browsers_language_is_spoken_when_the_console_has_it() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "kk-KZ, ru;q=0.8, en;q=0.5"))
            .to_http_request();
        assert_eq!(Catalogue::of(&req).lang, "ru");
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::ACCEPT_LANGUAGE, "dz"))
            .to_http_request();
        assert_eq!(Catalogue::of(&req).lang, "en");
        assert_eq!(Catalogue::of(&req).s("no.such.key"), "no.such.key");
    }
}

//! Query strings, filters and cursors: any text is a filter or a clear
//! refusal, never a panic; a cursor the server made reads back.

use casesync::cases::views::{self, CaseFilter, DeadlineFilter};
use casesync::http::extract::carries_credential;
use casesync::{audit, changes, exports, indicators};

fn parse<T: serde::de::DeserializeOwned>(query: &str) -> Option<T> {
    serde_urlencoded::from_str::<T>(query).ok()
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = carries_credential(text);
    let _ = parse::<CaseFilter>(text);
    let _ = parse::<DeadlineFilter>(text);
    let _ = parse::<exports::forms::FormFilter>(text);
    let _ = parse::<exports::cases::CaseFilter>(text);
    let _ = parse::<indicators::ReportQuery>(text);
    if let Some(query) = parse::<audit::AuditQuery>(text) {
        let _ = query.cursor();
    }
    let _ = audit::parse_bound("from", text, false);
    let _ = audit::parse_bound("to", text, true);
    let _ = indicators::periods::Grain::parse(Some(text));
    for sort in [
        views::CaseSort::Oldest,
        views::CaseSort::Newest,
        views::CaseSort::Due,
    ] {
        let _ = views::decode_cursor(text, sort);
    }
    if let Ok(seq) = changes::decode_cursor(text) {
        assert_eq!(
            changes::decode_cursor(&changes::encode_cursor(seq)).ok(),
            Some(seq)
        );
    }
}

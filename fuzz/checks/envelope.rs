//! The one JSON parser (`json::parse_json`) and the submission envelope:
//! any bytes are refused or read without a panic; what is read is never
//! more than serde_json reads (a key twice, a NUL, trailing bytes are
//! refused), and reads back to the same value.

use casesync::http::extract::Batch;
use casesync::json;
use casesync::submissions::Envelope;
use serde_json::Value;

pub fn check(data: &[u8]) {
    let _ = Batch::parse(data);
    let Ok(value) = json::parse_json::<Value>(data) else {
        return;
    };
    let plain: Value = serde_json::from_slice(data).expect("accepted only what serde_json accepts");
    assert_eq!(value, plain);
    let again = serde_json::to_vec(&value).expect("a value serialises");
    let reread = json::parse_json::<Value>(&again).expect("its own output reads back");
    assert_eq!(reread, value);
    if let Ok(envelope) = json::from_value::<Envelope>(&value) {
        // Every identifier of an accepted envelope is text a person can read.
        let _ = json::unsafe_text("/form_id", &envelope.form_id);
        let _ = json::unsafe_text("/device_id", &envelope.device_id);
    }
}

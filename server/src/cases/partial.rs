//! Reads only some keys of a stored JSON object: a report needs a handful
//! of a case's facts, and parsing every answer of 100,000 cases would cost
//! more than counting them.

use std::fmt;
use std::marker::PhantomData;

use crate::json::BorrowedStr;
use foldhash::{HashMap, HashMapExt, HashSet};
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The entries of the JSON object `text` whose keys are in `wanted`.
pub fn entries<V: DeserializeOwned>(
    text: &str,
    wanted: &HashSet<String>,
) -> serde_json::Result<HashMap<String, V>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let out = Wanted(wanted, PhantomData).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

struct Wanted<'a, V>(&'a HashSet<String>, PhantomData<V>);

impl<'de, V: DeserializeOwned> DeserializeSeed<'de> for Wanted<'_, V> {
    type Value = HashMap<String, V>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, V: DeserializeOwned> Visitor<'de> for Wanted<'_, V> {
    type Value = HashMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut out = HashMap::new();
        while let Some(BorrowedStr(key)) = map.next_key::<BorrowedStr<'de>>()? {
            if self.0.contains(key.as_ref()) {
                out.insert(key.into_owned(), map.next_value::<V>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn only_the_wanted_keys_are_kept() {
        let text = json!({
            "child.sex": "female",
            "child.name": {"deep": [1, 2, {"x": "y"}]},
            "a\"quoted": true,
            "risk": 3
        })
        .to_string();
        let wanted: HashSet<String> = ["child.sex", "risk", "a\"quoted", "absent"]
            .map(String::from)
            .into_iter()
            .collect();
        let got: HashMap<String, Value> = entries(&text, &wanted).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got["child.sex"], json!("female"));
        assert_eq!(got["risk"], json!(3));
        assert_eq!(got["a\"quoted"], json!(true));
        assert!(entries::<Value>("[1]", &wanted).is_err());
    }
}

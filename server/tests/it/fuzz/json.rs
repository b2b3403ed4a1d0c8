//! Structured mutations of valid JSON bodies: remove, replace, rename or wrap one node.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// One change to a JSON document.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Drops a member or an array element.
    Remove(Index),
    /// Puts another value in its place.
    Replace(Index, Value),
    /// Gives a member another name.
    Rename(Index, String),
    /// Wraps the value in an array.
    Wrap(Index),
}

/// Every node below the root as a JSON pointer (RFC 6901).
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)).collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    for (token, child) in children {
        let pointer = format!("{prefix}/{token}");
        out.push(pointer.clone());
        pointers(child, &pointer, out);
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

impl JsonEdit {
    fn apply(&self, doc: &mut Value) {
        let mut all = Vec::new();
        pointers(doc, "", &mut all);
        if all.is_empty() {
            return;
        }
        let index = match self {
            JsonEdit::Remove(i) | JsonEdit::Replace(i, _) | JsonEdit::Rename(i, _) | JsonEdit::Wrap(i) => i,
        };
        let pointer = &all[index.index(all.len())];
        let (parent, token) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let token = unescape(token);
        match self {
            JsonEdit::Replace(_, new) => {
                if let Some(node) = doc.pointer_mut(pointer) {
                    *node = new.clone();
                }
            }
            JsonEdit::Wrap(_) => {
                if let Some(node) = doc.pointer_mut(pointer) {
                    *node = Value::Array(vec![node.take()]);
                }
            }
            JsonEdit::Remove(_) | JsonEdit::Rename(..) => match doc.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    let old = map.remove(&token);
                    if let (JsonEdit::Rename(_, name), Some(old)) = (self, old) {
                        map.insert(name.clone(), old);
                    }
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = token.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            },
        }
    }
}

/// Base64 of bytes of the lengths the keys have, and their neighbours; often with a
/// plausible type byte first (`0x05` EC, `0x08` Kyber1024).
fn key_like_base64() -> impl Strategy<Value = String> {
    let len = proptest::sample::select(vec![0usize, 1, 31, 32, 33, 34, 63, 64, 65, 1568, 1569, 1570]);
    let type_byte = proptest::sample::select(vec![None, Some(0x05u8), Some(0x08)]);
    (len, type_byte).prop_flat_map(|(len, type_byte)| {
        proptest::collection::vec(any::<u8>(), len).prop_map(move |mut bytes| {
            if let (Some(first), Some(t)) = (bytes.first_mut(), type_byte) {
                *first = t;
            }
            STANDARD.encode(bytes)
        })
    })
}

/// Any JSON value, weighted towards the shapes the API uses.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::sample::select(vec![0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u32::MAX as u64 + 1])
            .prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[a-z0-9_.]{0,40}".prop_map(Value::String),
        key_like_base64().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        4 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        1 => (any::<Index>(), "[a-z_]{0,16}").prop_map(|(i, n)| JsonEdit::Rename(i, n)),
        1 => any::<Index>().prop_map(JsonEdit::Wrap),
    ]
}

/// The serialized `valid` document after one to three structured edits.
pub fn edited(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(json_edit(), 1..4).prop_map(move |edits| {
        let mut doc = valid.clone();
        for edit in &edits {
            edit.apply(&mut doc);
        }
        serde_json::to_vec(&doc).unwrap()
    })
}

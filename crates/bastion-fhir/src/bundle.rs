//! Bundle assembly that splices stored resource bytes in as they are, without parsing them
//! again: a search or history page is built as text around the stored JSON.
//!
//! Only the bytes of resources that the store produced (valid JSON by construction) may be
//! passed as raw; everything else goes in as a `serde_json::Value`.

use serde_json::Value;

use crate::labels::Confidentiality;

/// Writes one Bundle as JSON text.
pub struct BundleWriter {
    out: Vec<u8>,
    entries: usize,
    in_entries: bool,
    /// Where `meta` ends, for the high-water mark written at `finish`.
    meta_end: usize,
    /// The highest confidentiality of the entries so far (an OperationOutcome is `U`).
    confidentiality: Confidentiality,
}

impl BundleWriter {
    /// Starts `{"resourceType":"Bundle","id":..,"meta":..,"type":..` with optional `total`
    /// and the given `link`s (relation, url).
    pub fn new(id: &str, last_updated: &str, bundle_type: &str, total: Option<u64>, links: &[(&str, String)]) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"id\":");
        push_json(&mut out, &Value::String(id.into()));
        out.extend_from_slice(b",\"meta\":{\"lastUpdated\":");
        push_json(&mut out, &Value::String(last_updated.into()));
        let meta_end = out.len();
        out.extend_from_slice(b"},\"type\":");
        push_json(&mut out, &Value::String(bundle_type.into()));
        if let Some(t) = total {
            out.extend_from_slice(format!(",\"total\":{t}").as_bytes());
        }
        if !links.is_empty() {
            out.extend_from_slice(b",\"link\":[");
            for (i, (rel, url)) in links.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json(&mut out, &serde_json::json!({"relation": rel, "url": url}));
            }
            out.push(b']');
        }
        BundleWriter { out, entries: 0, in_entries: false, meta_end, confidentiality: Confidentiality::U }
    }

    fn begin_entry(&mut self) {
        if !self.in_entries {
            self.out.extend_from_slice(b",\"entry\":[");
            self.in_entries = true;
        } else {
            self.out.push(b',');
        }
        self.entries += 1;
    }

    /// Adds an entry: `fullUrl`, the resource as stored bytes (if any), then the other
    /// entry fields (`search`, `request`, `response`) from `rest`, an object.
    pub fn entry_raw(&mut self, full_url: Option<&str>, resource: Option<&[u8]>, rest: &Value) {
        self.begin_entry();
        self.out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        if let Some(u) = full_url {
            sep(&mut self.out);
            self.out.extend_from_slice(b"\"fullUrl\":");
            push_json(&mut self.out, &Value::String(u.into()));
        }
        if let Some(r) = resource {
            sep(&mut self.out);
            self.out.extend_from_slice(b"\"resource\":");
            self.out.extend_from_slice(r);
        }
        if let Value::Object(fields) = rest {
            for (k, v) in fields {
                sep(&mut self.out);
                push_json(&mut self.out, &Value::String(k.clone()));
                self.out.push(b':');
                push_json(&mut self.out, v);
            }
        }
        self.out.push(b'}');
    }

    /// Adds an entry whose resource is a Value (an OperationOutcome, say).
    pub fn entry_value(&mut self, full_url: Option<&str>, resource: &Value, rest: &Value) {
        let bytes = serde_json::to_vec(resource).unwrap_or_default();
        self.entry_raw(full_url, Some(&bytes), rest);
    }

    /// Counts an entry of confidentiality `c` into the Bundle's high-water mark (R4: "the
    /// confidentiality of a bundle is always as confidential as the most confidential
    /// resource in the bundle").
    pub fn raise_confidentiality(&mut self, c: Confidentiality) {
        self.confidentiality = self.confidentiality.max(c);
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The Bundle, with its high-water mark in `meta.security`: the confidentiality only,
    /// never a sensitivity or caveat of an entry (DS4P: they would reveal what is inside).
    pub fn finish(mut self) -> Vec<u8> {
        if self.in_entries {
            self.out.push(b']');
        }
        self.out.push(b'}');
        let mut label = b",\"security\":[".to_vec();
        push_json(&mut label, &self.confidentiality.coding());
        label.push(b']');
        self.out.splice(self.meta_end..self.meta_end, label);
        self.out
    }
}

fn push_json(out: &mut Vec<u8>, v: &Value) {
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spliced_bundle_is_valid_json() {
        let mut w = BundleWriter::new(
            "b1",
            "2026-01-01T00:00:00.000Z",
            "searchset",
            Some(2),
            &[("self", "http://x/fhir/Patient".into())],
        );
        w.entry_raw(
            Some("http://x/fhir/Patient/1"),
            Some(br#"{"resourceType":"Patient","id":"1"}"#),
            &json!({"search":{"mode":"match"}}),
        );
        w.entry_raw(None, None, &json!({"response":{"status":"204"}}));
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["total"], 2);
        assert_eq!(v["entry"][0]["resource"]["id"], "1");
        assert_eq!(v["entry"][0]["search"]["mode"], "match");
        assert_eq!(v["entry"][1]["response"]["status"], "204");
        assert_eq!(v["link"][0]["relation"], "self");
    }

    #[test]
    fn empty_bundle_has_no_entry_array() {
        let w = BundleWriter::new("b", "t", "history", None, &[]);
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert!(v.get("entry").is_none());
    }

    #[test]
    fn bundle_carries_the_highest_confidentiality_of_its_entries() {
        let empty: Value =
            serde_json::from_slice(&BundleWriter::new("b", "t", "searchset", None, &[]).finish()).unwrap();
        assert_eq!(empty["meta"]["security"][0]["code"], "U", "nothing inside: unrestricted");
        let mut w = BundleWriter::new("b", "t", "searchset", None, &[]);
        w.raise_confidentiality(Confidentiality::N);
        w.raise_confidentiality(Confidentiality::R);
        w.raise_confidentiality(Confidentiality::L);
        let v: Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["meta"]["security"], json!([Confidentiality::R.coding()]));
        assert_eq!(v["meta"]["lastUpdated"], "t");
        assert_eq!(v["type"], "searchset");
    }
}

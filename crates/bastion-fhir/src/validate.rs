//! Structural validation of a resource against the R4 StructureDefinitions: known
//! `resourceType`, known element names, choice types, cardinality, JSON shapes, primitive
//! formats (with real calendar dates), extensions, contained resources, nesting depth.
//!
//! Not checked here: invariants (FHIRPath constraints), terminology bindings, profiles, the
//! content of the narrative (a later, dedicated validator). The value is never modified:
//! what passes is stored byte for byte as the client's JSON was parsed.

use serde_json::{Map, Value};

use crate::definitions::{self, ElementDef, TypeDef};
use crate::{Issue, IssueType};

/// Limits on what a resource body may be.
#[derive(Debug, Clone, Copy)]
pub struct ValidationLimits {
    /// Deepest nesting of JSON objects accepted.
    pub max_depth: usize,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits { max_depth: 64 }
    }
}

/// More issues than this are not worth reporting: the client has enough to fix.
const MAX_ISSUES: usize = 100;

/// Validates a whole resource; every issue names its element in `expression`.
pub fn validate_resource(resource: &Value, limits: &ValidationLimits) -> Result<(), Vec<Issue>> {
    let mut v = Validator { issues: Vec::new(), limits: *limits, too_deep: false };
    v.resource(resource, None, 0);
    if v.issues.is_empty() { Ok(()) } else { Err(v.issues) }
}

struct Validator {
    issues: Vec<Issue>,
    limits: ValidationLimits,
    too_deep: bool,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Validator {
    fn issue(&mut self, code: IssueType, at: &str, msg: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::error(code, msg).at(at));
        }
    }

    /// A resource: top level (`at` = None) or nested (`contained`, `Bundle.entry.resource`).
    fn resource(&mut self, v: &Value, at: Option<&str>, depth: usize) {
        let here = |s: &str| at.map_or(s.to_string(), |a| format!("{a}.{s}"));
        let Some(obj) = v.as_object() else {
            self.issue(
                IssueType::Structure,
                &at.map_or("resourceType".into(), str::to_string),
                format!("a resource must be a JSON object, not {}", json_kind(v)),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.issue(
                    IssueType::Invalid,
                    &here("resourceType"),
                    format!("resourceType must be a string, not {}", json_kind(other)),
                );
                return;
            }
            None => {
                self.issue(IssueType::Required, &here("resourceType"), "resourceType is missing");
                return;
            }
        };
        let Some(def) = definitions::is_resource_type(rt).then(|| definitions::type_definition(rt)).flatten() else {
            self.issue(IssueType::Invalid, &here("resourceType"), format!("'{rt}' is not an R4 resource type"));
            return;
        };
        // Expressions name the resource type (`Patient.name`), prefixed for nested ones.
        let display = at.map_or(rt.to_string(), |a| a.to_string());
        self.object(obj, def, rt, &display, depth + 1, true);
    }

    fn object(
        &mut self,
        obj: &Map<String, Value>,
        def: &TypeDef,
        table_path: &str,
        at: &str,
        depth: usize,
        is_resource: bool,
    ) {
        if depth > self.limits.max_depth {
            if !self.too_deep {
                self.too_deep = true;
                self.issue(
                    IssueType::Structure,
                    at,
                    format!("the resource is nested too deeply (more than {} levels)", self.limits.max_depth),
                );
            }
            return;
        }
        let Some(table) = def.table(table_path) else {
            self.issue(IssueType::Structure, at, "this element cannot have children");
            return;
        };
        if obj.is_empty() {
            self.issue(
                IssueType::Invalid,
                at,
                "an element must have content (empty objects are not allowed in FHIR JSON)",
            );
            return;
        }
        let mut choices_seen: Vec<&str> = Vec::new();
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let child_at = format!("{at}.{key}");
            if let Some(base) = key.strip_prefix('_') {
                match table.lookup(base) {
                    Some((el, choice))
                        if is_primitive_code(choice.unwrap_or_else(|| el.types.first().map_or("", String::as_str))) =>
                    {
                        self.primitive_extension(obj, base, el, value, &child_at, depth);
                    }
                    _ => self.issue(IssueType::Structure, &child_at, format!("unknown element '{key}'")),
                }
                continue;
            }
            let Some((el, choice_type)) = table.lookup(key) else {
                self.issue(IssueType::Structure, &child_at, format!("unknown element '{key}'"));
                continue;
            };
            if el.choice {
                if choices_seen.contains(&el.name.as_str()) {
                    self.issue(IssueType::Structure, &child_at, format!("only one of {}[x] may be present", el.name));
                }
                choices_seen.push(&el.name);
            }
            let type_code = choice_type.or_else(|| el.types.first().map(String::as_str)).unwrap_or("");
            self.element(obj, def, el, key, type_code, value, &child_at, depth);
        }
        for el in &table.elements {
            if el.min == 0 {
                continue;
            }
            let present = if el.choice {
                obj.keys().any(|k| table.lookup(k.trim_start_matches('_')).is_some_and(|(e, _)| e.name == el.name))
            } else {
                obj.contains_key(&el.name) || obj.contains_key(&format!("_{}", el.name))
            };
            if !present {
                let suffix = if el.choice { "[x]" } else { "" };
                self.issue(
                    IssueType::Required,
                    &format!("{at}.{}{suffix}", el.name),
                    format!("{}{suffix} is required", el.name),
                );
            }
        }
        if table_path == "Extension" {
            let has_value = obj.keys().any(|k| k.starts_with("value"));
            let has_children = obj.contains_key("extension");
            if has_value == has_children {
                self.issue(
                    IssueType::Invariant,
                    at,
                    "an extension must have either a value[x] or nested extensions, not both",
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn element(
        &mut self,
        parent: &Map<String, Value>,
        def: &TypeDef,
        el: &ElementDef,
        key: &str,
        type_code: &str,
        value: &Value,
        at: &str,
        depth: usize,
    ) {
        match (value, el.is_repeating()) {
            (Value::Array(items), true) => {
                if items.is_empty() {
                    self.issue(IssueType::Structure, at, "an array must not be empty");
                    return;
                }
                let partner = parent.get(&format!("_{key}")).and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let item_at = format!("{at}[{i}]");
                    if item.is_null() {
                        // Allowed only where the aligned `_key` array carries the element.
                        let covered = partner.and_then(|p| p.get(i)).is_some_and(Value::is_object);
                        if !covered {
                            self.issue(IssueType::Structure, &item_at, "null is not allowed here");
                        }
                        continue;
                    }
                    self.item(def, el, type_code, item, &item_at, depth);
                }
            }
            (Value::Array(_), false) => {
                self.issue(IssueType::Structure, at, format!("{} takes a single value, not an array", el.name))
            }
            (_, true) => {
                self.issue(IssueType::Structure, at, format!("{} repeats: its value must be an array", el.name))
            }
            (Value::Null, false) => self.issue(IssueType::Structure, at, "null is not allowed"),
            (v, false) => self.item(def, el, type_code, v, at, depth),
        }
    }

    fn item(&mut self, def: &TypeDef, el: &ElementDef, type_code: &str, v: &Value, at: &str, depth: usize) {
        if let Some(backbone) = &el.backbone {
            match v.as_object() {
                Some(o) => self.object(o, def, backbone, at, depth + 1, false),
                None => self.issue(IssueType::Structure, at, format!("expected an object, found {}", json_kind(v))),
            }
            return;
        }
        if type_code == "Resource" {
            self.resource(v, Some(at), depth);
            return;
        }
        if is_primitive_code(type_code) {
            if let Err(msg) = check_primitive(type_code, v) {
                self.issue(IssueType::Value, at, msg);
            }
            return;
        }
        let Some(tdef) = definitions::type_definition(type_code) else {
            // A type the definitions do not describe: accept its shape as an object.
            if !v.is_object() {
                self.issue(IssueType::Structure, at, format!("expected an object, found {}", json_kind(v)));
            }
            return;
        };
        match v.as_object() {
            Some(o) => self.object(o, tdef, type_code, at, depth + 1, false),
            None => self.issue(
                IssueType::Structure,
                at,
                format!("a {type_code} must be a JSON object, not {}", json_kind(v)),
            ),
        }
    }

    /// `_given` next to `given`: an Element (id + extension), or an array aligned with it.
    fn primitive_extension(
        &mut self,
        parent: &Map<String, Value>,
        base: &str,
        el: &ElementDef,
        value: &Value,
        at: &str,
        depth: usize,
    ) {
        let Some(element_def) = definitions::type_definition("Element") else { return };
        let check = |me: &mut Self, v: &Value, at: &str| match v.as_object() {
            Some(o) => me.object(o, element_def, "Element", at, depth + 1, false),
            None => me.issue(IssueType::Structure, at, "a primitive's extension part must be an object"),
        };
        match (value, el.is_repeating()) {
            (Value::Array(items), true) => {
                let values = parent.get(base).and_then(Value::as_array);
                if values.is_some_and(|v| v.len() != items.len()) {
                    self.issue(IssueType::Structure, at, format!("_{base} must have as many entries as {base}"));
                }
                for (i, item) in items.iter().enumerate() {
                    let item_at = format!("{at}[{i}]");
                    if item.is_null() {
                        if values.and_then(|v| v.get(i)).is_none_or(Value::is_null) {
                            self.issue(IssueType::Structure, &item_at, "null in both the value and its extension");
                        }
                        continue;
                    }
                    check(self, item, &item_at);
                }
            }
            (Value::Array(_), false) => {
                self.issue(IssueType::Structure, at, format!("_{base} takes a single object, not an array"))
            }
            (_, true) => self.issue(IssueType::Structure, at, format!("_{base} must be an array aligned with {base}")),
            (v, false) => check(self, v, at),
        }
    }
}

fn is_primitive_code(code: &str) -> bool {
    code == "xhtml" || definitions::type_definition(code).is_some_and(TypeDef::is_primitive)
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, a real date.
fn check_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let ok_len = |p: &str, n: usize| p.len() == n && digits(p);
    match parts.as_slice() {
        [y] => ok_len(y, 4),
        [y, m] => ok_len(y, 4) && ok_len(m, 2) && (1..=12).contains(&m.parse::<u32>().unwrap_or(0)),
        [y, m, d] => {
            if !(ok_len(y, 4) && ok_len(m, 2) && ok_len(d, 2)) {
                return false;
            }
            let (y, m, d): (u32, u32, u32) = (y.parse().unwrap_or(0), m.parse().unwrap_or(0), d.parse().unwrap_or(0));
            (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
        }
        _ => false,
    }
}

/// `hh:mm:ss(.fraction)?`
fn check_time(s: &str) -> bool {
    let (main, frac) = s.split_once('.').map_or((s, None), |(a, b)| (a, Some(b)));
    if frac.is_some_and(|f| !digits(f)) {
        return false;
    }
    let p: Vec<&str> = main.split(':').collect();
    let [h, m, sec] = p.as_slice() else { return false };
    [h, m, sec].iter().all(|x| x.len() == 2 && digits(x))
        && h.parse::<u32>().unwrap_or(99) <= 23
        && m.parse::<u32>().unwrap_or(99) <= 59
        && sec.parse::<u32>().unwrap_or(99) <= 60
}

fn check_zone(z: &str) -> bool {
    if z == "Z" {
        return true;
    }
    let Some(rest) = z.strip_prefix('+').or_else(|| z.strip_prefix('-')) else { return false };
    let Some((h, m)) = rest.split_once(':') else { return false };
    h.len() == 2
        && m.len() == 2
        && digits(h)
        && digits(m)
        && h.parse::<u32>().unwrap_or(99) <= 14
        && m.parse::<u32>().unwrap_or(99) <= 59
}

/// `date`, or a full `dateTime` with time and zone; `require_time` for `instant`.
fn check_date_time(s: &str, require_time: bool) -> bool {
    match s.split_once('T') {
        None => !require_time && check_date(s),
        Some((date, rest)) => {
            if date.len() != 10 || !check_date(date) {
                return false;
            }
            let zone_at = rest.find(['Z', '+', '-']);
            let Some(i) = zone_at else { return false };
            check_time(&rest[..i]) && check_zone(&rest[i..])
        }
    }
}

fn check_decimal_text(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if let Some(e) = exp {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if !digits(e) {
            return false;
        }
    }
    let (int, frac) = mantissa.split_once('.').map_or((mantissa, None), |(a, b)| (a, Some(b)));
    digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(digits)
}

fn check_base64(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    compact.len() % 4 == 0 && compact.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn check_string_chars(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n')) && !s.trim().is_empty()
}

/// Checks one primitive value; the error says what form was expected.
pub fn check_primitive(code: &str, v: &Value) -> Result<(), String> {
    let want_string = |what: &str| format!("must be {what} (a JSON string), found {}", json_kind(v));
    match code {
        "boolean" => {
            v.is_boolean().then_some(()).ok_or_else(|| format!("must be true or false, found {}", json_kind(v)))
        }
        "integer" | "positiveInt" | "unsignedInt" => {
            let Value::Number(n) = v else { return Err(format!("must be a JSON number, found {}", json_kind(v))) };
            let text = n.to_string();
            let Ok(i) = text.parse::<i64>() else { return Err(format!("'{text}' is not an integer")) };
            let min = match code {
                "positiveInt" => 1,
                "unsignedInt" => 0,
                _ => i64::from(i32::MIN),
            };
            if i < min || i > i64::from(i32::MAX) {
                return Err(format!("{i} is out of range for {code}"));
            }
            Ok(())
        }
        "decimal" => match v {
            // With arbitrary_precision the number keeps the client's text: check that text.
            Value::Number(n) if check_decimal_text(&n.to_string()) => Ok(()),
            Value::Number(n) => Err(format!("'{n}' is not a valid decimal")),
            _ => Err(format!("must be a JSON number, found {}", json_kind(v))),
        },
        _ => {
            let Value::String(s) = v else { return Err(want_string(code)) };
            let ok = match code {
                "string" | "markdown" | "xhtml" => check_string_chars(s),
                "code" => {
                    !s.is_empty()
                        && !s.starts_with(' ')
                        && !s.ends_with(' ')
                        && !s.contains("  ")
                        && s.chars().all(|c| c == ' ' || !c.is_whitespace())
                }
                "id" => crate::primitives::is_valid_id(s),
                "uri" | "url" | "canonical" => !s.is_empty() && !s.chars().any(char::is_whitespace),
                "oid" => s.strip_prefix("urn:oid:").is_some_and(|r| {
                    let parts: Vec<&str> = r.split('.').collect();
                    parts.len() >= 2
                        && parts.iter().all(|p| digits(p) && (p.len() == 1 || !p.starts_with('0')))
                        && matches!(parts[0], "0" | "1" | "2")
                }),
                "uuid" => s.strip_prefix("urn:uuid:").is_some_and(|r| {
                    r.len() == 36
                        && r.char_indices().all(|(i, c)| {
                            if matches!(i, 8 | 13 | 18 | 23) {
                                c == '-'
                            } else {
                                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
                            }
                        })
                }),
                "base64Binary" => check_base64(s),
                "date" => check_date(s),
                "dateTime" => check_date_time(s, false),
                "instant" => check_date_time(s, true),
                "time" => check_time(s),
                _ => check_string_chars(s),
            };
            if ok { Ok(()) } else { Err(format!("'{}' is not a valid {code}", truncate(s))) }
        }
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 { s.chars().take(40).collect::<String>() + "…" } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), Vec<Issue>> {
        validate_resource(&v, &ValidationLimits::default())
    }

    fn expressions(v: Value) -> Vec<String> {
        check(v).unwrap_err().into_iter().filter_map(|i| i.expression).collect()
    }

    #[test]
    fn accepts_realistic_patient_with_extensions_and_contained() {
        check(json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z", "profile": ["http://x/p"]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "extension": [{"url": "http://x/ext", "valueCodeableConcept": {"text": "a"}},
                          {"url": "http://x/complex", "extension": [{"url": "a", "valueString": "b"}]}],
            "identifier": [{"system": "urn:mrn", "value": "1"}],
            "name": [{"family": "X", "given": ["A", "B"], "_given": [null, {"extension": [{"url": "http://x", "valueBoolean": true}]}]}],
            "birthDate": "1980-02-29", "_birthDate": {"extension": [{"url": "http://x/t", "valueDateTime": "1980-02-29T10:00:00+01:00"}]},
            "deceasedBoolean": false,
            "contact": [{"name": {"family": "C"}, "telecom": [{"system": "phone", "value": "1"}]}],
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}],
            "managingOrganization": {"reference": "#o"}
        }))
        .unwrap();
    }

    #[test]
    fn accepts_observation_components_and_transaction_bundle_and_nested_questionnaire() {
        check(json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"text": "sys"}, "valueQuantity": {"value": 120, "unit": "mmHg"}}],
            "effectivePeriod": {"start": "2026-01-01"}})).unwrap();
        check(json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6f1c9a2e-0c4f-4a35-9d0e-1b2c3d4e5f60", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]})).unwrap();
        check(json!({"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "group",
            "item": [{"linkId": "1.1", "type": "string", "item": [{"linkId": "1.1.1", "type": "display"}]}]}]}))
        .unwrap();
    }

    #[test]
    fn rejects_unknown_element() {
        assert_eq!(expressions(json!({"resourceType": "Patient", "nmae": []})), vec!["Patient.nmae"]);
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "name": [{"famly": "x"}]})),
            vec!["Patient.name[0].famly"]
        );
    }

    #[test]
    fn rejects_unknown_or_missing_resource_type() {
        assert_eq!(expressions(json!({"resourceType": "Patinet"})), vec!["resourceType"]);
        assert_eq!(expressions(json!({"id": "x"})), vec!["resourceType"]);
        assert_eq!(expressions(json!({"resourceType": 3})), vec!["resourceType"]);
        assert!(check(json!({"resourceType": "DomainResource"})).is_err());
    }

    #[test]
    fn rejects_choice_type_not_allowed_and_two_choices() {
        assert_eq!(
            expressions(
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueHumanName": {}})
            ),
            vec!["Observation.valueHumanName"]
        );
        let e = expressions(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "a", "valueBoolean": true}),
        );
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn rejects_array_for_single_element_and_single_for_array() {
        assert_eq!(expressions(json!({"resourceType": "Patient", "gender": ["male"]})), vec!["Patient.gender"]);
        assert_eq!(expressions(json!({"resourceType": "Patient", "name": {"family": "x"}})), vec!["Patient.name"]);
    }

    #[test]
    fn rejects_missing_required_element() {
        let e = expressions(json!({"resourceType": "Observation", "valueString": "x"}));
        assert!(e.contains(&"Observation.status".to_string()) && e.contains(&"Observation.code".to_string()), "{e:?}");
        assert_eq!(
            expressions(json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]})),
            vec!["Patient.extension[0].url"]
        );
    }

    #[test]
    fn rejects_feb_30_and_other_impossible_dates() {
        for bad in [
            "1990-02-30",
            "1990-13-01",
            "1990-1-01",
            "2023-02-29",
            "90-01-01",
            "1990-01-01T24:00:00Z",
            "1990-01-01T10:00:00",
        ] {
            let e = expressions(json!({"resourceType": "Patient", "birthDate": bad}));
            assert_eq!(e, vec!["Patient.birthDate"], "{bad}");
        }
        check(json!({"resourceType": "Patient", "birthDate": "2024-02-29"})).unwrap();
        check(json!({"resourceType": "Patient", "birthDate": "1990"})).unwrap();
        assert!(
            check(
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "issued": "2026-01-01"})
            )
            .is_err(),
            "instant needs a time"
        );
        check(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "issued": "2026-01-01T10:00:00.123+05:30", "effectiveDateTime": "2026-01"})).unwrap();
    }

    #[test]
    fn rejects_wrong_primitive_json_types() {
        for (field, v) in [
            ("active", json!("true")),
            ("gender", json!("")),
            ("gender", json!(" male")),
            ("multipleBirthInteger", json!(1.5)),
            ("multipleBirthInteger", json!("1")),
        ] {
            assert_eq!(
                expressions(json!({"resourceType": "Patient", field: v})),
                vec![format!("Patient.{field}")],
                "{field} {v}"
            );
        }
        assert_eq!(expressions(json!({"resourceType": "Patient", "id": "a/b"})), vec!["Patient.id"]);
        assert!(check(json!({"resourceType": "Patient", "photo": [{"data": "not base64!"}]})).is_err());
        assert!(check(json!({"resourceType": "Patient", "name": [{"family": "a\u{0007}b"}]})).is_err());
    }

    #[test]
    fn rejects_null_empty_object_and_empty_array() {
        assert_eq!(expressions(json!({"resourceType": "Patient", "gender": null})), vec!["Patient.gender"]);
        assert_eq!(expressions(json!({"resourceType": "Patient", "name": []})), vec!["Patient.name"]);
        assert_eq!(expressions(json!({"resourceType": "Patient", "name": [{}]})), vec!["Patient.name[0]"]);
        assert!(check(json!({"resourceType": "Patient", "name": [{"given": [null]}]})).is_err());
    }

    #[test]
    fn accepts_primitive_extension_given() {
        check(json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [null, {"id": "g2"}]}]}))
            .unwrap();
        assert!(
            check(json!({"resourceType": "Patient", "name": [{"given": ["A"], "_given": [null, {"id": "x"}]}]}))
                .is_err(),
            "misaligned"
        );
        assert!(check(json!({"resourceType": "Patient", "_name": {}})).is_err(), "no _ form for complex elements");
    }

    #[test]
    fn rejects_extension_with_value_and_children() {
        let e = expressions(
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "a", "extension": [{"url": "b", "valueString": "c"}]}]}),
        );
        assert_eq!(e, vec!["Patient.extension[0]"]);
    }

    #[test]
    fn keeps_decimal_precision() {
        let v: Value = serde_json::from_str(
            r#"{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":1.50}}"#,
        )
        .unwrap();
        check(v.clone()).unwrap();
        assert!(serde_json::to_string(&v).unwrap().contains("1.50"));
        let bad: Value = serde_json::from_str(
            r#"{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":"1.5"}}"#,
        )
        .unwrap();
        assert!(check(bad).is_err());
    }

    #[test]
    fn validates_contained_and_bundle_resources_by_their_own_type() {
        assert_eq!(
            expressions(
                json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "nmae": "x"}]})
            ),
            vec!["Patient.contained[0].nmae"]
        );
        let e = expressions(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "birthDate": "x"}}]}),
        );
        assert_eq!(e, vec!["Bundle.entry[0].resource.birthDate"]);
    }

    #[test]
    fn rejects_too_deep_nesting_without_stack_overflow() {
        // Bodies come from serde_json, which stops at 128 levels; between the configured
        // depth and that, validation stops at the limit instead of walking on.
        let mut v = json!({"url": "http://x", "valueString": "leaf"});
        for _ in 0..120 {
            v = json!({"url": "http://x", "extension": [v]});
        }
        let issues = check(json!({"resourceType": "Patient", "extension": [v]})).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].diagnostics.contains("nested too deeply"));
        let shallow = ValidationLimits { max_depth: 200 };
        let mut v = json!({"url": "http://x", "valueString": "leaf"});
        for _ in 0..100 {
            v = json!({"url": "http://x", "extension": [v]});
        }
        validate_resource(&json!({"resourceType": "Patient", "extension": [v]}), &shallow).unwrap();
    }

    #[test]
    fn caps_the_number_of_issues() {
        let names: Vec<Value> = (0..500).map(|_| json!({"x": 1})).collect();
        assert_eq!(check(json!({"resourceType": "Patient", "name": names})).unwrap_err().len(), MAX_ISSUES);
    }
}

//! Deterministic synthetic FHIR R4 data: patients with encounters, observations (vital
//! signs and labs, LOINC + UCUM), conditions (SNOMED CT), medication requests (RxNorm) and
//! procedures. The same seed gives the same bytes.
//!
//! Two shapes of the same records: transaction Bundles (`POST` entries, `urn:uuid:` fullUrls
//! and references) and NDJSON, one file per resource type, where each resource has an `id`
//! (the uuid of its fullUrl) and references are rewritten to `Type/id`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

/// splitmix64: small, fast, and good enough to make data look varied.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next_u64() as f64 / u64::MAX as f64) * (hi - lo)
    }

    fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

const GIVEN_F: &[&str] = &["Emma", "Olivia", "Ava", "Sophia", "Mia", "Amelia", "Harper", "Ingrid", "Leila", "Yuki"];
const GIVEN_M: &[&str] = &["Liam", "Noah", "Oliver", "Elijah", "James", "Lucas", "Mateo", "Arjun", "Kofi", "Henrik"];
const FAMILY: &[&str] = &[
    "Smith", "Johnson", "Garcia", "Müller", "Nguyen", "Okafor", "Rossi", "Kowalski", "Tanaka", "Silva", "Brown",
    "Dubois",
];

/// (LOINC, display, UCUM unit, low, high, category)
const OBSERVATIONS: &[(&str, &str, &str, f64, f64, &str)] = &[
    ("8867-4", "Heart rate", "/min", 50.0, 110.0, "vital-signs"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 95.0, 170.0, "vital-signs"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55.0, 100.0, "vital-signs"),
    ("29463-7", "Body weight", "kg", 45.0, 130.0, "vital-signs"),
    ("8302-2", "Body height", "cm", 150.0, 200.0, "vital-signs"),
    ("8310-5", "Body temperature", "Cel", 36.0, 39.5, "vital-signs"),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70.0, 220.0, "laboratory"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 11.0, "laboratory"),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120.0, 300.0, "laboratory"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 9.0, 17.5, "laboratory"),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 2.5, "laboratory"),
];

const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("55822004", "Hyperlipidemia"),
    ("709044004", "Chronic kidney disease"),
    ("35489007", "Depressive disorder"),
];

const MEDICATIONS: &[(&str, &str)] = &[
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 40 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("312938", "sertraline 50 MG Oral Tablet"),
];

const PROCEDURES: &[(&str, &str)] = &[
    ("73761001", "Colonoscopy"),
    ("386053000", "Evaluation procedure"),
    ("430193006", "Medication reconciliation"),
    ("710824005", "Assessment of health and social care needs"),
];

fn date(rng: &mut Rng, from_year: u64, span_years: u64) -> String {
    let y = from_year + rng.below(span_years);
    let m = 1 + rng.below(12);
    let d = 1 + rng.below(28);
    format!("{y:04}-{m:02}-{d:02}")
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

/// One patient's record, each resource with the `urn:uuid:` it is known by in a Bundle.
pub fn patient_record(rng: &mut Rng, index: u64) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let pid = format!("urn:uuid:{}", rng.uuid());
    let female = rng.below(2) == 0;
    let given = *rng.pick(if female { GIVEN_F } else { GIVEN_M });
    let family = *rng.pick(FAMILY);
    out.push((
        pid.clone(),
        json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:bastion:bench:mrn", "value": format!("MRN{index:08}")}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": if female { "female" } else { "male" },
            "birthDate": date(rng, 1935, 70),
            "address": [{"city": "Springfield", "postalCode": format!("{:05}", rng.below(99999))}]}),
    ));
    let encounters = 2 + rng.below(3);
    for _ in 0..encounters {
        let eid = format!("urn:uuid:{}", rng.uuid());
        let day = date(rng, 2015, 11);
        out.push((
            eid.clone(),
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
                "type": [coding("http://snomed.info/sct", "185349003", "Encounter for check up")],
                "subject": {"reference": pid}, "period": {"start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:30:00Z")}}),
        ));
        for _ in 0..(8 + rng.below(6)) {
            let (code, display, unit, lo, hi, category) = *rng.pick(OBSERVATIONS);
            let value = (rng.range(lo, hi) * 10.0).round() / 10.0;
            out.push((
                format!("urn:uuid:{}", rng.uuid()),
                json!({"resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                    "code": coding("http://loinc.org", code, display),
                    "subject": {"reference": pid}, "encounter": {"reference": eid},
                    "effectiveDateTime": format!("{day}T09:1{}:00Z", rng.below(10)),
                    "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}),
            ));
        }
        if rng.below(2) == 0 {
            let (code, display) = *rng.pick(PROCEDURES);
            out.push((
                format!("urn:uuid:{}", rng.uuid()),
                json!({"resourceType": "Procedure", "status": "completed", "code": coding("http://snomed.info/sct", code, display),
                    "subject": {"reference": pid}, "encounter": {"reference": eid}, "performedDateTime": format!("{day}T09:20:00Z")}),
            ));
        }
    }
    for _ in 0..(1 + rng.below(3)) {
        let (code, display) = *rng.pick(CONDITIONS);
        out.push((
            format!("urn:uuid:{}", rng.uuid()),
            json!({"resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": coding("http://snomed.info/sct", code, display), "subject": {"reference": pid}, "onsetDateTime": date(rng, 2000, 20)}),
        ));
    }
    for _ in 0..(1 + rng.below(3)) {
        let (code, display) = *rng.pick(MEDICATIONS);
        out.push((
            format!("urn:uuid:{}", rng.uuid()),
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationCodeableConcept": coding("http://www.nlm.nih.gov/research/umls/rxnorm", code, display),
                "subject": {"reference": pid}, "authoredOn": date(rng, 2015, 11)}),
        ));
    }
    out
}

/// A transaction Bundle of POST entries for these records.
pub fn transaction(records: &[(String, Value)]) -> Value {
    let entries: Vec<Value> = records
        .iter()
        .map(|(url, r)| json!({"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}))
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// `patients` patients, `per_bundle` to a transaction Bundle.
pub fn dataset(seed: u64, patients: u64, per_bundle: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut bundles = Vec::new();
    let mut current = Vec::new();
    for i in 0..patients {
        current.extend(patient_record(&mut rng, i));
        if (i + 1) % per_bundle.max(1) == 0 {
            bundles.push(transaction(&current));
            current.clear();
        }
    }
    if !current.is_empty() {
        bundles.push(transaction(&current));
    }
    bundles
}

/// All records of the dataset, patient after patient, in generation order.
pub fn records(seed: u64, patients: u64) -> Vec<(String, Value)> {
    let mut rng = Rng::new(seed);
    (0..patients).flat_map(|i| patient_record(&mut rng, i)).collect()
}

/// Replaces every `reference` found in `map` (an `urn:uuid:` -> `Type/id` map), at any depth.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference" {
                    if let Some(to) = child.as_str().and_then(|r| map.get(r)) {
                        *child = Value::String(to.clone());
                    }
                } else {
                    rewrite_references(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_references(c, map)),
        _ => {}
    }
}

/// The dataset as NDJSON: resource type -> resources, each with an `id` and `Type/id`
/// references (the same records as [`dataset`] for the same seed).
pub fn ndjson(seed: u64, patients: u64) -> BTreeMap<String, Vec<Value>> {
    let records = records(seed, patients);
    let map: HashMap<String, String> = records
        .iter()
        .map(|(url, r)| {
            let id = url.trim_start_matches("urn:uuid:");
            (url.clone(), format!("{}/{id}", r["resourceType"].as_str().unwrap_or_default()))
        })
        .collect();
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (url, mut r) in records {
        rewrite_references(&mut r, &map);
        let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
        // `id` first, after `resourceType`, as FHIR JSON is usually written.
        let mut o = serde_json::Map::new();
        o.insert("resourceType".into(), json!(rtype));
        o.insert("id".into(), json!(url.trim_start_matches("urn:uuid:")));
        if let Value::Object(rest) = r {
            for (k, v) in rest {
                if k != "resourceType" {
                    o.insert(k, v);
                }
            }
        }
        out.entry(rtype).or_default().push(Value::Object(o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        assert_eq!(dataset(7, 5, 2), dataset(7, 5, 2));
        assert_ne!(dataset(7, 5, 2), dataset(8, 5, 2));
    }

    #[test]
    fn every_reference_points_inside_its_bundle() {
        for b in dataset(1, 20, 3) {
            let entries = b["entry"].as_array().unwrap();
            let urls: Vec<&str> = entries.iter().map(|e| e["fullUrl"].as_str().unwrap()).collect();
            for e in entries {
                assert!(e["resource"]["resourceType"].is_string());
                for key in ["subject", "encounter"] {
                    if let Some(r) = e["resource"][key]["reference"].as_str() {
                        assert!(urls.contains(&r), "{r}");
                    }
                }
            }
        }
    }

    #[test]
    fn about_forty_resources_per_patient() {
        let n: usize = dataset(3, 100, 10).iter().map(|b| b["entry"].as_array().unwrap().len()).sum();
        assert!((2500..=6000).contains(&n), "{n}");
    }

    /// Every reference string in a resource, at any depth.
    fn references(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    match (k.as_str(), c.as_str()) {
                        ("reference", Some(r)) => out.push(r.to_string()),
                        _ => references(c, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| references(c, out)),
            _ => {}
        }
    }

    #[test]
    fn ndjson_is_deterministic_and_every_reference_resolves_in_the_dataset() {
        let a = ndjson(11, 30);
        assert_eq!(a, ndjson(11, 30));
        let mut known = std::collections::HashSet::new();
        for (t, rs) in &a {
            for r in rs {
                assert_eq!(r["resourceType"].as_str(), Some(t.as_str()));
                let id = r["id"].as_str().expect("id");
                assert!(id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
                assert!(known.insert(format!("{t}/{id}")), "duplicate {t}/{id}");
            }
        }
        let mut n = 0;
        for r in a.values().flatten() {
            let mut refs = Vec::new();
            references(r, &mut refs);
            for x in refs {
                assert!(known.contains(&x), "dangling reference {x}");
                n += 1;
            }
        }
        assert!(n > 30 * 30, "{n}");
        let total: usize = a.values().map(Vec::len).sum();
        let bundled: usize = dataset(11, 30, 7).iter().map(|b| b["entry"].as_array().unwrap().len()).sum();
        assert_eq!(total, bundled, "the two formats carry the same records");
    }

    fn is_real_date(d: &str) -> bool {
        let p: Vec<u32> = d.get(..10).unwrap_or("").split('-').filter_map(|x| x.parse().ok()).collect();
        let [y, m, day] = p[..] else { return false };
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1900..=2026).contains(&y) && (1..=12).contains(&m) && day >= 1 && day <= days[(m - 1) as usize]
    }

    #[test]
    fn only_known_r4_elements_and_real_dates() {
        // The top-level elements of each R4 resource the generator may use.
        let allowed: HashMap<&str, &[&str]> = HashMap::from([
            ("Patient", &["resourceType", "id", "identifier", "name", "gender", "birthDate", "address"][..]),
            ("Encounter", &["resourceType", "id", "status", "class", "type", "subject", "period"][..]),
            (
                "Observation",
                &[
                    "resourceType",
                    "id",
                    "status",
                    "category",
                    "code",
                    "subject",
                    "encounter",
                    "effectiveDateTime",
                    "valueQuantity",
                ][..],
            ),
            ("Procedure", &["resourceType", "id", "status", "code", "subject", "encounter", "performedDateTime"][..]),
            ("Condition", &["resourceType", "id", "clinicalStatus", "code", "subject", "onsetDateTime"][..]),
            (
                "MedicationRequest",
                &["resourceType", "id", "status", "intent", "medicationCodeableConcept", "subject", "authoredOn"][..],
            ),
        ]);
        for r in ndjson(5, 50).values().flatten() {
            let t = r["resourceType"].as_str().unwrap();
            let ok = allowed.get(t).unwrap_or_else(|| panic!("unexpected type {t}"));
            for (k, v) in r.as_object().unwrap() {
                assert!(ok.contains(&k.as_str()), "{t}.{k}");
                if matches!(
                    k.as_str(),
                    "birthDate" | "effectiveDateTime" | "performedDateTime" | "onsetDateTime" | "authoredOn"
                ) {
                    assert!(is_real_date(v.as_str().unwrap()), "{t}.{k} = {v}");
                }
            }
            if t == "Observation" {
                let q = &r["valueQuantity"];
                assert_eq!(q["system"], "http://unitsofmeasure.org");
                assert!(q["value"].is_number() && q["code"].is_string());
                assert_eq!(r["code"]["coding"][0]["system"], "http://loinc.org");
            }
            if t == "Patient" {
                assert!(r["identifier"][0]["value"].as_str().unwrap().starts_with("MRN"));
            }
        }
    }
}

//! Structural validation: one test per rule, named after what it rejects, and acceptance tests
//! on realistic resources.

use bastion_fhir::definitions;
use bastion_fhir::validate::{MAX_ISSUES, ValidationLimits, check_primitive, validate_resource};
use bastion_fhir::{Issue, IssueType};
use serde_json::{Value, json};

fn check(v: &Value) -> Result<(), Vec<Issue>> {
    validate_resource(v, &ValidationLimits::default())
}

fn ok(v: Value) {
    if let Err(issues) = check(&v) {
        panic!("expected valid, got {issues:#?}");
    }
}

fn issues(v: Value) -> Vec<Issue> {
    check(&v).expect_err("expected issues")
}

/// The expressions of the issues, in order.
fn at(v: Value) -> Vec<String> {
    issues(v).into_iter().map(|i| i.expression.expect("every issue has an expression")).collect()
}

fn one(v: Value) -> Issue {
    let mut i = issues(v);
    assert_eq!(i.len(), 1, "{i:#?}");
    i.remove(0)
}

/// `{"url": "http://x", "extension": [inner]}`, built without `json!` (which would serialise
/// `inner` again, recursively).
fn wrap_in_extension(inner: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("url".into(), Value::String("http://x".into()));
    m.insert("extension".into(), Value::Array(vec![inner]));
    Value::Object(m)
}

fn object_with(key: &str, value: Value) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(key.into(), value);
    Value::Object(m)
}

/// Drops a deeply nested value without recursing once per level.
fn drop_deep(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

fn obs(extra: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Realistic resources that must pass.

#[test]
fn accepts_patient_with_names_extensions_and_contained() {
    ok(json!({
        "resourceType": "Patient",
        "id": "p1",
        "_id": {"extension": [{"url": "http://example.org/source-id", "valueString": "legacy-1"}]},
        "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z", "profile": ["http://example.org/p"],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
                 "tag": [{"code": "vip"}]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jane</div>"},
        "extension": [
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
             "extension": [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"}},
                           {"url": "text", "valueString": "White"}]},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
             "valueAddress": {"city": "Lyon", "country": "FR"}}
        ],
        "modifierExtension": [{"url": "http://example.org/m", "valueBoolean": false}],
        "identifier": [{"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345",
                        "period": {"start": "2001-05-06"}, "assigner": {"display": "Acme Healthcare"}}],
        "active": true,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"],
             "_given": [null, {"extension": [{"url": "http://example.org/preferred", "valueBoolean": true}]}]},
            {"use": "maiden", "family": "Windsor", "given": ["Jim"], "period": {"end": "2002"}}
        ],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                      "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]},
        "multipleBirthInteger": 2,
        "photo": [{"contentType": "image/gif", "data": "R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs="}],
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
                     "name": {"family": "du Marché", "_family": {"extension": [{"url": "http://example.org/own-prefix", "valueString": "VV"}]},
                              "given": ["Bénédicte"]},
                     "telecom": [{"system": "phone", "value": "+33 (237) 998327"}],
                     "gender": "female", "period": {"start": "2012"}}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}, "preferred": true}],
        "generalPractitioner": [{"reference": "#gp"}],
        "managingOrganization": {"reference": "Organization/1"},
        "contained": [
            {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Careful", "prefix": ["Dr"]}]},
            {"resourceType": "Organization", "id": "o", "name": "Gastroenterology", "active": true}
        ],
        "link": [{"other": {"reference": "Patient/pat2"}, "type": "seealso"}]
    }));
}

#[test]
fn accepts_observation_with_value_quantity_and_components() {
    ok(json!({
        "resourceType": "Observation",
        "id": "blood-pressure",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2012-09-17",
        "issued": "2013-04-03T15:30:10.123+01:00",
        "performer": [{"reference": "Practitioner/example"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "L"}]}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 107, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 60.0, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
             "interpretation": [{"text": "low"}]},
            {"code": {"text": "position"}, "valueCodeableConcept": {"text": "sitting"}},
            {"code": {"text": "absent"}, "dataAbsentReason": {"text": "not measured"}}
        ]
    }));
    ok(obs(json!({
        "valueQuantity": {"value": 6.3, "comparator": "<", "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.1, "unit": "mmol/l"}, "high": {"value": 6.2, "unit": "mmol/l"},
                            "appliesTo": [{"text": "adults"}], "age": {"low": {"value": 18, "unit": "a"}}}],
        "effectivePeriod": {"start": "2013-04-02T09:30:10+01:00", "end": "2013-04-05T10:30:10+01:00"}
    })));
}

#[test]
fn accepts_transaction_bundle_with_entries() {
    ok(json!({
        "resourceType": "Bundle",
        "id": "bundle-transaction",
        "meta": {"lastUpdated": "2014-08-18T01:43:30Z"},
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "active": true, "name": [{"family": "Shaw", "given": ["Amy"]}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=http:/example.org/fhir/ids|234234"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                          "valueQuantity": {"value": 72.5, "unit": "kg"}},
             "request": {"method": "PUT", "url": "Observation/abc", "ifMatch": "W/\"1\""}},
            {"request": {"method": "DELETE", "url": "Patient/234"}},
            {"request": {"method": "GET", "url": "Patient?name=peter"}}
        ]
    }));
    ok(json!({
        "resourceType": "Bundle", "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": "Patient/1/_history/1", "etag": "W/\"1\"",
                                "lastModified": "2014-08-18T01:43:33Z",
                                "outcome": {"resourceType": "OperationOutcome",
                                            "issue": [{"severity": "information", "code": "informational"}]}}}]
    }));
    ok(json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "gender": "other"}},
        {"name": "count", "valueInteger": 3},
        {"name": "nested", "part": [{"name": "a", "valueString": "b"}]}
    ]}));
}

#[test]
fn accepts_questionnaire_with_nested_items_through_content_reference() {
    ok(json!({
        "resourceType": "Questionnaire",
        "url": "http://example.org/Questionnaire/3141",
        "status": "draft",
        "subjectType": ["Patient"],
        "item": [{
            "linkId": "1", "code": [{"system": "http://example.org/system/code/sections", "code": "COMORBIDITY"}],
            "type": "group",
            "item": [{
                "linkId": "1.1", "prefix": "1", "type": "choice",
                "answerOption": [{"valueCoding": {"code": "Y"}}, {"valueCoding": {"code": "N"}}],
                "item": [{
                    "linkId": "1.1.1", "type": "group",
                    "enableWhen": [{"question": "1.1", "operator": "=", "answerCoding": {"code": "Y"}}],
                    "item": [{"linkId": "1.1.1.1", "type": "boolean", "required": true,
                              "initial": [{"valueBoolean": false}]},
                             {"linkId": "1.1.1.2", "type": "decimal", "maxLength": 10}]
                }]
            }]
        }]
    }));
    ok(json!({
        "resourceType": "QuestionnaireResponse", "status": "completed",
        "item": [{"linkId": "1", "item": [{"linkId": "1.1", "answer": [{"valueCoding": {"code": "Y"},
                  "item": [{"linkId": "1.1.1", "answer": [{"valueBoolean": true}]}]}]}]}]
    }));
}

#[test]
fn every_resource_type_validates_and_reports_only_its_required_elements_when_empty() {
    for rt in definitions::resource_types() {
        let def = definitions::type_definition(rt).unwrap();
        let required: Vec<String> =
            def.root_table().elements.iter().filter(|c| c.min > 0).map(|c| format!("{rt}.{}", c.spec_name())).collect();
        match check(&json!({"resourceType": rt})) {
            Ok(()) => assert!(required.is_empty(), "{rt}"),
            Err(found) => {
                assert!(found.iter().all(|i| i.code == IssueType::Required), "{rt}: {found:?}");
                let found: Vec<String> = found.into_iter().map(|i| i.expression.unwrap()).collect();
                assert_eq!(found, required, "{rt}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// resourceType.

#[test]
fn rejects_unknown_missing_or_non_string_resource_type() {
    for v in [
        json!({"resourceType": "Patinet"}),
        json!({"id": "x"}),
        json!({"resourceType": 3}),
        json!({"resourceType": "DomainResource"}),
        json!({"resourceType": "HumanName"}),
        json!({"resourceType": "SubscriptionStatus"}),
    ] {
        let i = one(v.clone());
        assert_eq!((i.code, i.expression.as_deref()), (IssueType::Invalid, Some("resourceType")), "{v}");
    }
    assert_eq!(one(json!(["not", "an", "object"])).code, IssueType::Structure);
}

#[test]
fn rejects_wrong_resource_type_inside_a_resource() {
    assert_eq!(
        at(json!({"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]})),
        ["Patient.contained[0].resourceType"]
    );
    assert_eq!(
        at(json!({"resourceType": "Patient", "contained": [{"id": "x"}]})),
        ["Patient.contained[0].resourceType"]
    );
    let bundle = json!({"resourceType": "Bundle", "type": "batch-response",
        "entry": [{"response": {"status": "200", "outcome": {"resourceType": "Patient"}}}]});
    assert_eq!(at(bundle), ["Bundle.entry[0].response.outcome.resourceType"]);
}

// ---------------------------------------------------------------------------------------------
// Element names and choice types.

#[test]
fn rejects_unknown_element() {
    let i = one(json!({"resourceType": "Patient", "nmae": [{"family": "x"}]}));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Structure, Some("Patient.nmae")));
    assert!(i.diagnostics.contains("unknown element"));
    assert_eq!(at(json!({"resourceType": "Patient", "name": [{"famly": "x"}]})), ["Patient.name[0].famly"]);
    assert_eq!(at(json!({"resourceType": "Patient", "resourcetype": "Patient"})), ["Patient.resourcetype"]);
    // `resourceType` is only a property of resources.
    assert_eq!(
        at(json!({"resourceType": "Patient", "name": [{"resourceType": "HumanName", "family": "x"}]})),
        ["Patient.name[0].resourceType"]
    );
    assert_eq!(at(json!({"resourceType": "Patient", "fhir_comments": ["x"]})), ["Patient.fhir_comments"]);
}

#[test]
fn rejects_medplum_only_elements() {
    for name in ["project", "compartment", "account", "author"] {
        let v = json!({"resourceType": "Patient", "meta": {name: {"reference": "Project/1"}}});
        assert_eq!(at(v), [format!("Patient.meta.{name}")]);
    }
}

#[test]
fn rejects_choice_type_not_allowed() {
    let i = one(obs(json!({"valueHumanName": {"family": "x"}})));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Structure, Some("Observation.valueHumanName")));
    assert!(i.diagnostics.contains("HumanName") && i.diagnostics.contains("Quantity"), "{}", i.diagnostics);
    // Choice names are case-sensitive: `valuequantity` is simply unknown.
    assert_eq!(at(obs(json!({"valuequantity": {"value": 1}}))), ["Observation.valuequantity"]);
    // Extension.value[x] admits every type; Observation.effective[x] does not admit Quantity.
    assert_eq!(at(obs(json!({"effectiveQuantity": {"value": 1}}))), ["Observation.effectiveQuantity"]);
}

#[test]
fn rejects_bare_choice_name() {
    let i = one(obs(json!({"value": 3})));
    assert_eq!(i.expression.as_deref(), Some("Observation.value"));
    assert!(i.diagnostics.contains("value[x]"));
}

#[test]
fn rejects_two_variants_of_one_choice() {
    let i = one(obs(json!({"valueString": "a", "valueBoolean": true})));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Structure, Some("Observation.valueBoolean")));
    assert_eq!(at(obs(json!({"valueString": "a", "_valueBoolean": {"id": "b"}}))), ["Observation._valueBoolean"]);
    // A value and its own extension part are one variant.
    ok(obs(json!({"valueString": "a", "_valueString": {"id": "b"}})));
}

// ---------------------------------------------------------------------------------------------
// Cardinality and JSON shapes.

#[test]
fn rejects_array_for_single_element() {
    let i = one(json!({"resourceType": "Patient", "gender": ["male"]}));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Structure, Some("Patient.gender")));
    assert_eq!(at(json!({"resourceType": "Patient", "maritalStatus": [{"text": "M"}]})), ["Patient.maritalStatus"]);
}

#[test]
fn rejects_single_value_for_repeating_element() {
    assert_eq!(at(json!({"resourceType": "Patient", "name": {"family": "x"}})), ["Patient.name"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": [{"given": "Jo"}]})), ["Patient.name[0].given"]);
}

#[test]
fn rejects_missing_required_element() {
    let found = issues(json!({"resourceType": "Observation", "valueString": "x"}));
    let exprs: Vec<&str> = found.iter().map(|i| i.expression.as_deref().unwrap()).collect();
    assert_eq!(exprs, ["Observation.status", "Observation.code"]);
    assert!(found.iter().all(|i| i.code == IssueType::Required));
    // In a backbone element, a datatype, and a nested resource.
    assert_eq!(at(obs(json!({"component": [{"valueString": "x"}]}))), ["Observation.component[0].code"]);
    assert_eq!(at(json!({"resourceType": "Patient", "link": [{"type": "seealso"}]})), ["Patient.link[0].other"]);
    assert_eq!(at(json!({"resourceType": "Bundle"})), ["Bundle.type"]);
    assert_eq!(
        at(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation", "status": "final"}}]})
        ),
        ["Bundle.entry[0].resource.code"]
    );
    // A required choice: any variant will do.
    assert_eq!(
        at(json!({"resourceType": "Patient", "deceasedBoolean": true, "link": [{"other": {"display": "x"}}]})),
        ["Patient.link[0].type"]
    );
    let dr = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}});
    assert_eq!(at(dr.clone()), ["MedicationRequest.medication[x]"]);
    let mut dr = dr;
    dr["medicationReference"] = json!({"reference": "Medication/1"});
    ok(dr);
}

#[test]
fn accepts_required_primitive_given_only_by_its_extension() {
    // data-absent-reason on a required primitive: the value may be replaced by an extension.
    ok(json!({"resourceType": "Observation", "code": {"text": "x"},
              "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}}));
}

#[test]
fn rejects_null_values() {
    assert_eq!(at(json!({"resourceType": "Patient", "gender": null})), ["Patient.gender"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": null})), ["Patient.name"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": [null]})), ["Patient.name[0]"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": [{"given": ["a", null]}]})), ["Patient.name[0].given[1]"]);
}

#[test]
fn rejects_empty_objects_arrays_and_strings() {
    assert_eq!(at(json!({"resourceType": "Patient", "name": []})), ["Patient.name"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": [{}]})), ["Patient.name[0]"]);
    assert_eq!(at(json!({"resourceType": "Patient", "maritalStatus": {}})), ["Patient.maritalStatus"]);
    assert_eq!(at(json!({"resourceType": "Patient", "gender": ""})), ["Patient.gender"]);
    assert_eq!(at(json!({"resourceType": "Patient", "name": [{"given": [""]}]})), ["Patient.name[0].given[0]"]);
}

#[test]
fn rejects_object_where_a_primitive_belongs_and_the_reverse() {
    assert_eq!(at(json!({"resourceType": "Patient", "gender": {"code": "male"}})), ["Patient.gender"]);
    assert_eq!(at(json!({"resourceType": "Patient", "maritalStatus": "M"})), ["Patient.maritalStatus"]);
    assert_eq!(at(json!({"resourceType": "Patient", "contact": ["x"]})), ["Patient.contact[0]"]);
}

#[test]
fn rejects_comparator_on_simple_quantity() {
    let v = obs(json!({"referenceRange": [{"low": {"value": 1, "comparator": "<"}}]}));
    assert_eq!(at(v), ["Observation.referenceRange[0].low.comparator"]);
}

// ---------------------------------------------------------------------------------------------
// Primitive formats.

#[test]
fn rejects_feb_30() {
    let i = one(json!({"resourceType": "Patient", "birthDate": "2023-02-30"}));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Value, Some("Patient.birthDate")));
}

#[test]
fn rejects_impossible_or_malformed_dates() {
    for bad in [
        "2023-02-29",
        "1990-13-01",
        "1990-00-10",
        "1990-04-31",
        "1990-01-00",
        "1990-1-01",
        "90-01-01",
        "0000",
        "1990-01-01T10:00:00Z",
        "1990/01/01",
        "1990-01-01 ",
        "",
    ] {
        assert_eq!(at(json!({"resourceType": "Patient", "birthDate": bad})), ["Patient.birthDate"], "{bad:?}");
    }
    for good in ["2024-02-29", "2000-02-29", "1990", "1990-07", "0001-01-01"] {
        ok(json!({"resourceType": "Patient", "birthDate": good}));
    }
    assert!(check(&json!({"resourceType": "Patient", "birthDate": "1900-02-29"})).is_err(), "1900 is no leap year");
}

#[test]
fn rejects_impossible_or_malformed_date_times_instants_and_times() {
    for bad in [
        "2026-01-01T24:00:00Z",
        "2026-01-01T10:60:00Z",
        "2026-01-01T10:00:61Z",
        "2026-01-01T10:00:00",
        "2026-01-01T10:00Z",
        "2026-01-01T10:00:00+14:30",
        "2026-01-01T10:00:00+15:00",
        "2026-01-01T10:00:00.Z",
        "2026-02-30T10:00:00Z",
        "2026-01-01T",
        "2026-01-01T10:00:00z",
    ] {
        assert_eq!(at(obs(json!({"effectiveDateTime": bad}))), ["Observation.effectiveDateTime"], "{bad:?}");
    }
    for good in [
        "2026",
        "2026-01",
        "2026-01-01",
        "2026-01-01T10:00:00Z",
        "2026-01-01T23:59:60.999+14:00",
        "2026-01-01T00:00:00-13:59",
    ] {
        ok(obs(json!({"effectiveDateTime": good})));
    }
    // instant needs the full date, time and zone.
    for bad in ["2026-01-01", "2026-01", "2026-01-01T10:00:00"] {
        assert_eq!(at(obs(json!({"issued": bad}))), ["Observation.issued"], "{bad:?}");
    }
    ok(obs(json!({"issued": "2026-01-01T10:00:00.123456+05:30"})));
    for bad in ["24:00:00", "10:00", "1:00:00", "10:00:00Z", "10:00:00."] {
        assert_eq!(at(obs(json!({"valueTime": bad}))), ["Observation.valueTime"], "{bad:?}");
    }
    ok(obs(json!({"valueTime": "23:59:59.5"})));
}

#[test]
fn rejects_wrong_json_types_for_primitives() {
    for (field, v) in [
        ("active", json!("true")),
        ("active", json!(1)),
        ("birthDate", json!(1990)),
        ("multipleBirthInteger", json!(1.5)),
        ("multipleBirthInteger", json!(1.0)),
        ("multipleBirthInteger", json!("1")),
        ("multipleBirthInteger", json!(2147483648i64)),
        ("multipleBirthBoolean", json!("false")),
    ] {
        let i = one(json!({"resourceType": "Patient", field: v.clone()}));
        assert_eq!((i.code, i.expression.unwrap()), (IssueType::Value, format!("Patient.{field}")), "{field} {v}");
    }
    ok(json!({"resourceType": "Patient", "multipleBirthInteger": -2147483648i64}));
    // positiveInt / unsignedInt ranges.
    assert!(check_primitive("positiveInt", &json!(0)).is_err());
    assert!(check_primitive("positiveInt", &json!(1)).is_ok());
    assert!(check_primitive("unsignedInt", &json!(-1)).is_err());
    assert!(check_primitive("unsignedInt", &json!(0)).is_ok());
    assert!(check_primitive("unsignedInt", &json!(2147483647)).is_ok());
    assert!(check_primitive("unsignedInt", &json!(2147483648u64)).is_err());
    let e: Value = serde_json::from_str("1e2").unwrap();
    assert!(check_primitive("integer", &e).is_err(), "1e2 is not an integer literal");
    assert!(check_primitive("decimal", &e).is_ok());
    assert!(check_primitive("decimal", &json!("1.5")).is_err());
}

#[test]
fn rejects_malformed_string_based_primitives() {
    for (code, bad) in [
        ("id", "a/b"),
        ("id", "a_b"),
        ("id", &"x".repeat(65)),
        ("code", " male"),
        ("code", "male "),
        ("code", "a  b"),
        ("uri", "http://x y"),
        ("url", "http://x\ty"),
        ("canonical", "http://x|1 "),
        ("oid", "1.2.3"),
        ("oid", "urn:oid:3.1"),
        ("oid", "urn:oid:1.02"),
        ("uuid", "urn:uuid:6F1C9A2E-0C4F-4A35-9D0E-1B2C3D4E5F60"),
        ("uuid", "6f1c9a2e-0c4f-4a35-9d0e-1b2c3d4e5f60"),
        ("base64Binary", "not base64!"),
        ("base64Binary", "abc"),
        ("xhtml", "<p>no div</p>"),
        ("string", "bell\u{0007}"),
        ("string", "nul\u{0000}"),
        ("markdown", "esc\u{001b}[31m"),
    ] {
        assert!(check_primitive(code, &json!(bad)).is_err(), "{code} {bad:?}");
    }
    for (code, good) in [
        ("id", "a-B.9"),
        ("code", "a b"),
        ("uri", "urn:uuid:x"),
        ("oid", "urn:oid:2.16.840.1.113883"),
        ("uuid", "urn:uuid:6f1c9a2e-0c4f-4a35-9d0e-1b2c3d4e5f60"),
        ("base64Binary", "aGVs bG8="),
        ("xhtml", "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>"),
        ("string", "tab\tcr\rlf\n ünïcødé"),
        ("string", "   "),
    ] {
        assert!(check_primitive(code, &json!(good)).is_ok(), "{code} {good:?}");
    }
    assert!(check_primitive("string", &json!("x".repeat(1024 * 1024 + 1))).is_err());
}

#[test]
fn diagnostics_do_not_echo_the_value() {
    let i = one(json!({"resourceType": "Patient", "birthDate": "SECRET-1234"}));
    assert!(!i.diagnostics.contains("SECRET"), "{}", i.diagnostics);
    assert!(i.diagnostics.contains("date"));
}

#[test]
fn keeps_decimal_precision() {
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"code":{"text":"c"},"valueQuantity":{"value":0.000000000000000000000000001e-5}}]}"#;
    let v: Value = serde_json::from_str(text).unwrap();
    ok(v.clone());
    let out = serde_json::to_string(&v).unwrap();
    assert!(out.contains(r#""value":1.50"#), "{out}");
    assert!(out.contains("0.000000000000000000000000001e-5"), "{out}");
    assert_eq!(out, text, "validation leaves the value untouched");
}

// ---------------------------------------------------------------------------------------------
// Primitive extensions.

#[test]
fn accepts_primitive_extension_given() {
    ok(
        json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [null, {"id": "g2", "extension": [{"url": "http://x", "valueString": "y"}]}]}]}),
    );
    // Only the extension part, no value at all.
    ok(
        json!({"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}}),
    );
    ok(
        json!({"resourceType": "Patient", "name": [{"_given": [{"extension": [{"url": "http://x", "valueString": "y"}]}]}]}),
    );
    // id only is fine next to a value.
    ok(json!({"resourceType": "Patient", "birthDate": "1990", "_birthDate": {"id": "bd"}}));
}

#[test]
fn rejects_misaligned_primitive_extension_arrays() {
    assert_eq!(
        at(json!({"resourceType": "Patient", "name": [{"given": ["A"], "_given": [null, {"id": "x"}]}]})),
        ["Patient.name[0]._given"]
    );
    assert_eq!(
        at(json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [null, null]}]})),
        ["Patient.name[0].given[1]", "Patient.name[0]._given[1]"]
    );
    assert_eq!(
        at(json!({"resourceType": "Patient", "name": [{"given": ["A"], "_given": {"id": "x"}}]})),
        ["Patient.name[0]._given"]
    );
    assert_eq!(
        at(json!({"resourceType": "Patient", "birthDate": "1990", "_birthDate": [{"id": "x"}]})),
        ["Patient._birthDate"]
    );
}

#[test]
fn rejects_extension_part_without_value_or_extension() {
    assert_eq!(at(json!({"resourceType": "Patient", "_birthDate": {"id": "x"}})), ["Patient._birthDate"]);
    assert_eq!(at(json!({"resourceType": "Patient", "_birthDate": {}})), ["Patient._birthDate"]);
    assert_eq!(
        at(json!({"resourceType": "Patient", "_birthDate": {"foo": 1}})),
        ["Patient._birthDate.foo", "Patient._birthDate"]
    );
}

#[test]
fn rejects_extension_part_on_non_primitive_elements() {
    assert_eq!(at(json!({"resourceType": "Patient", "_name": [{"id": "x"}]})), ["Patient._name"]);
    assert_eq!(at(json!({"resourceType": "Patient", "_nmae": {"id": "x"}})), ["Patient._nmae"]);
    // Element.id and Extension.url are plain JSON values: no `_id` / `_url`.
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "name": [{"id": "n", "_id": {"extension": [{"url": "u", "valueString": "x"}]}, "family": "F"}]})
        ),
        ["Patient.name[0]._id"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "_url": {"id": "u"}, "valueString": "s"}]})
        ),
        ["Patient.extension[0]._url"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>", "_div": {"id": "d"}}})
        ),
        ["Patient.text._div"]
    );
}

// ---------------------------------------------------------------------------------------------
// Extensions.

#[test]
fn rejects_extension_without_url() {
    let i = one(json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]}));
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Required, Some("Patient.extension[0].url")));
}

#[test]
fn rejects_extension_with_both_value_and_nested_extensions_or_neither() {
    let both = json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "a", "extension": [{"url": "b", "valueString": "c"}]}]});
    let i = one(both);
    assert_eq!((i.code, i.expression.as_deref()), (IssueType::Invariant, Some("Patient.extension[0]")));
    let neither = json!({"resourceType": "Patient", "modifierExtension": [{"url": "http://x"}]});
    assert_eq!(at(neither), ["Patient.modifierExtension[0]"]);
}

#[test]
fn rejects_bad_extension_values_by_their_type() {
    assert_eq!(
        at(json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueDateTime": "2023-02-30"}]})),
        ["Patient.extension[0].valueDateTime"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "extension": [{"url": "a", "valueQuantity": {"vaule": 1}}]}]})
        ),
        ["Patient.extension[0].extension[0].valueQuantity.vaule"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "name": [{"family": "F", "extension": [{"url": "http://x", "valueFoo": 1}]}]})
        ),
        ["Patient.name[0].extension[0].valueFoo"]
    );
    // Extensions of extension parts.
    assert_eq!(
        at(
            json!({"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueBoolean": "yes"}]}})
        ),
        ["Patient._birthDate.extension[0].valueBoolean"]
    );
}

// ---------------------------------------------------------------------------------------------
// Resources inside resources.

#[test]
fn validates_contained_and_bundle_resources_by_their_own_type() {
    assert_eq!(
        at(json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "nmae": "x"}]})),
        ["Patient.contained[0].nmae"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "birthDate": "x"}}]})
        ),
        ["Bundle.entry[0].resource.birthDate"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Parameters", "parameter": [{"name": "r", "resource": {"resourceType": "Observation", "status": "final"}}]})
        ),
        ["Parameters.parameter[0].resource.code"]
    );
    assert_eq!(
        at(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "gender": ["x"]}}]}}]})
        ),
        ["Bundle.entry[0].resource.entry[0].resource.gender"]
    );
}

// ---------------------------------------------------------------------------------------------
// Depth and volume.

#[test]
fn rejects_too_deep_nesting_without_stack_overflow() {
    let mut v = json!({"url": "http://x", "valueString": "leaf"});
    for _ in 0..10_000 {
        v = wrap_in_extension(v);
    }
    let mut resource = object_with("extension", Value::Array(vec![v]));
    resource["resourceType"] = json!("Patient");
    let found = check(&resource).unwrap_err();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].code, IssueType::Structure);
    assert!(found[0].diagnostics.contains("nesting too deep"));
    // The walk is iterative: even with no practical limit, 10,000 levels do not overflow.
    validate_resource(&resource, &ValidationLimits { max_depth: usize::MAX }).unwrap();
    drop_deep(resource);

    // Deep nesting under an unknown element is not walked at all.
    let mut v = json!(1);
    for _ in 0..10_000 {
        v = object_with("a", Value::Array(vec![v]));
    }
    let mut resource = object_with("unknown", v);
    resource["resourceType"] = json!("Patient");
    let found = check(&resource).unwrap_err();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].expression.as_deref(), Some("Patient.unknown"));
    drop_deep(resource);
}

#[test]
fn accepts_nesting_up_to_the_limit() {
    // Patient (1) > extension array (2) > extension (3) > ... each level adds 2.
    let build = |levels: usize| {
        let mut v = json!({"url": "http://x", "valueString": "leaf"});
        for _ in 1..levels {
            v = wrap_in_extension(v);
        }
        json!({"resourceType": "Patient", "extension": [v]})
    };
    let limits = ValidationLimits { max_depth: 21 };
    validate_resource(&build(10), &limits).unwrap(); // deepest object at depth 21
    let found = validate_resource(&build(11), &limits).unwrap_err();
    assert_eq!(found.len(), 1);
    assert!(found[0].diagnostics.contains("nesting too deep"));
}

#[test]
fn collects_all_issues_up_to_a_cap() {
    let found = issues(json!({"resourceType": "Patient", "gender": 1, "birthDate": "x", "nmae": 1, "active": "y"}));
    let exprs: Vec<&str> = found.iter().map(|i| i.expression.as_deref().unwrap()).collect();
    assert_eq!(exprs, ["Patient.gender", "Patient.birthDate", "Patient.nmae", "Patient.active"]);
    let names: Vec<Value> = (0..500).map(|_| json!({"x": 1})).collect();
    assert_eq!(issues(json!({"resourceType": "Patient", "name": names})).len(), MAX_ISSUES);
}

#[test]
fn every_issue_is_an_error_with_an_expression() {
    let found = issues(json!({"resourceType": "Observation", "valueHumanName": {}, "issued": "x", "component": [{}],
        "extension": [{"valueString": ""}], "_status": [1], "contained": [{"resourceType": "X"}]}));
    assert!(found.len() >= 6, "{found:#?}");
    for i in &found {
        assert_eq!(i.severity, bastion_fhir::IssueSeverity::Error);
        assert!(i.expression.as_deref().is_some_and(|e| e.starts_with("Observation")), "{i:?}");
        assert!(!i.diagnostics.is_empty());
    }
}

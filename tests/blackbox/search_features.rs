//! Token modifiers (`:not`, `:text`, `:of-type`), composite parameters, `_text` and
//! `_content`, `_list`, system-level search, wildcard includes and `_summary=true`.

use crate::both_backends;
use crate::harness::*;
use crate::search::{ids, put};

const LOINC: &str = "http://loinc.org";

fn blood_pressure(id: &str, patient: &str, systolic: f64, diastolic: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}], "text": "BP"},
    "subject": {"reference": format!("Patient/{patient}")},
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
         "valueQuantity": {"value": systolic, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
         "valueQuantity": {"value": diastolic, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    ]})
}

fn weight(id: &str, patient: &str, kg: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
}

both_backends!(token_not_matches_other_codes_and_resources_without_one, |srv| {
    put(&srv, json!({"resourceType": "Patient", "id": "f", "gender": "female"})).await;
    put(&srv, json!({"resourceType": "Patient", "id": "m", "gender": "male"})).await;
    put(&srv, json!({"resourceType": "Patient", "id": "u"})).await;
    assert_eq!(ids(&srv, "Patient?gender:not=male").await, vec!["f", "u"]);
    assert_eq!(ids(&srv, "Patient?gender:not=male,female").await, vec!["u"]);
    assert_eq!(ids(&srv, "Patient?gender:not=male&gender=female").await, vec!["f"]);
});

both_backends!(token_text_matches_display_and_concept_text, |srv| {
    put(&srv, weight("w1", "p1", 70.0)).await;
    put(&srv, blood_pressure("bp1", "p1", 120.0, 80.0)).await;
    assert_eq!(ids(&srv, "Observation?code:text=body").await, vec!["w1"]);
    assert_eq!(ids(&srv, "Observation?code:text=BLOOD%20PRESS").await, vec!["bp1"]);
    assert_eq!(ids(&srv, "Observation?code:text=bp").await, vec!["bp1"], "CodeableConcept.text");
    assert_eq!(ids(&srv, "Observation?category:text=vital").await, vec!["w1"]);
    assert!(ids(&srv, "Observation?code:text=29463").await.is_empty(), ":text is not the code");
});

both_backends!(identifier_of_type_matches_type_and_value_together, |srv| {
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    put(
        &srv,
        json!({"resourceType": "Patient", "id": "a", "identifier": [
        {"type": {"coding": [{"system": v2, "code": "MR"}]}, "system": "urn:mrn", "value": "111"},
        {"type": {"coding": [{"system": v2, "code": "SS"}]}, "system": "urn:ssn", "value": "222"}]}),
    )
    .await;
    put(
        &srv,
        json!({"resourceType": "Patient", "id": "b", "identifier": [
        {"type": {"coding": [{"system": v2, "code": "MR"}]}, "system": "urn:mrn", "value": "222"}]}),
    )
    .await;
    assert_eq!(ids(&srv, &format!("Patient?identifier:of-type={v2}|MR|222")).await, vec!["b"]);
    assert_eq!(ids(&srv, &format!("Patient?identifier:of-type={v2}|SS|222")).await, vec!["a"]);
    assert_eq!(ids(&srv, &format!("Patient?identifier:of-type={v2}|MR|111,{v2}|MR|222")).await, vec!["a", "b"]);
    assert!(ids(&srv, &format!("Patient?identifier:of-type={v2}|SS|111")).await.is_empty());
    for bad in ["MR|222", "|MR|222", &format!("{v2}|MR|")] {
        assert_outcome(srv.get(&format!("Patient?identifier:of-type={bad}")).await, StatusCode::BAD_REQUEST).await;
    }
});

both_backends!(composite_parameters_match_both_parts_on_the_same_element, |srv| {
    put(&srv, blood_pressure("high", "p1", 150.0, 70.0)).await;
    put(&srv, blood_pressure("normal", "p1", 115.0, 75.0)).await;
    put(&srv, weight("w", "p1", 82.5)).await;
    let systolic_over_140 = format!("Observation?component-code-value-quantity={LOINC}|8480-6$gt140");
    assert_eq!(ids(&srv, &systolic_over_140).await, vec!["high"]);
    // diastolic 150 does not exist: the 150 belongs to the systolic component
    assert!(ids(&srv, &format!("Observation?component-code-value-quantity={LOINC}|8462-4$gt140")).await.is_empty());
    assert_eq!(ids(&srv, "Observation?component-code-value-quantity=8462-4$lt80").await, vec!["high", "normal"]);
    assert_eq!(ids(&srv, "Observation?code-value-quantity=29463-7$82.5").await, vec!["w"]);
    assert_eq!(
        ids(&srv, &format!("Observation?code-value-quantity={LOINC}|29463-7$gt80|http://unitsofmeasure.org|kg")).await,
        vec!["w"]
    );
    assert!(ids(&srv, "Observation?code-value-quantity=|29463-7$82.5").await.is_empty(), "|code means no system");
    // combo-: the Observation's own code and value, or a component's
    assert_eq!(
        ids(&srv, "Observation?combo-code-value-quantity=8480-6$gt100,29463-7$gt100").await,
        vec!["high", "normal"]
    );
    // OR of alternatives, AND by repetition
    assert_eq!(
        ids(&srv, "Observation?component-code-value-quantity=8480-6$gt140&component-code-value-quantity=8462-4$lt72")
            .await,
        vec!["high"]
    );
    for bad in ["8480-6", "8480-6$", &format!("{LOINC}|$gt1"), "8480-6$gtx", "a$b$c"] {
        let oo = assert_outcome(
            srv.get(&format!("Observation?component-code-value-quantity={bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(oo["issue"][0]["severity"], "error");
    }
});

both_backends!(full_text_search_over_narrative_and_content, |srv| {
    put(&srv, json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"},
        "code": {"text": "Acute myocardial infarction"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Heart attack, <b>treated</b> &amp; stable</p></div>"}}))
    .await;
    put(
        &srv,
        json!({"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p"},
        "code": {"text": "Chronic kidney disease"}, "note": [{"text": "Café visit advised"}]}),
    )
    .await;
    assert_eq!(ids(&srv, "Condition?_text=heart").await, vec!["c1"]);
    assert_eq!(ids(&srv, "Condition?_text=treated%20stable").await, vec!["c1"], "all words of a value");
    assert!(ids(&srv, "Condition?_text=myocardial").await.is_empty(), "_text is the narrative only");
    assert!(ids(&srv, "Condition?_text=div").await.is_empty(), "markup is not text");
    assert_eq!(ids(&srv, "Condition?_content=myocard").await, vec!["c1"]);
    assert_eq!(ids(&srv, "Condition?_content=CAFE").await, vec!["c2"], "case and accents fold");
    assert_eq!(ids(&srv, "Condition?_content=kidney,infarction").await, vec!["c1", "c2"]);
    assert!(ids(&srv, "Condition?_content=kidney%20heart").await.is_empty());
    assert_eq!(ids(&srv, "Condition?_content:exact=kidney").await, vec!["c2"]);
    assert!(ids(&srv, "Condition?_content:exact=kid").await.is_empty());
    assert_eq!(ids(&srv, "Condition?_content:contains=idne").await, vec!["c2"]);
    assert!(ids(&srv, "Condition?_content=x'%20OR%20'1'='1").await.is_empty());
    assert_outcome(srv.get("Condition?_content=%20-%20").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Condition?_text:below=x").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(list_parameter_selects_what_the_list_holds, |srv| {
    for id in ["a", "b", "c"] {
        put(&srv, json!({"resourceType": "Patient", "id": id})).await;
    }
    put(
        &srv,
        json!({"resourceType": "List", "id": "ward", "status": "current", "mode": "working",
        "entry": [{"item": {"reference": "Patient/a"}}, {"item": {"reference": "Patient/c"}}]}),
    )
    .await;
    assert_eq!(ids(&srv, "Patient?_list=ward").await, vec!["a", "c"]);
    assert!(ids(&srv, "Patient?_list=nope").await.is_empty());
    assert_outcome(srv.get("Patient?_list=$current-allergies").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(system_level_search_spans_the_types_named_by_type, |srv| {
    put(&srv, json!({"resourceType": "Patient", "id": "x1", "meta": {"tag": [{"system": "urn:t", "code": "study"}]}}))
        .await;
    put(&srv, weight("x2", "x1", 60.0)).await;
    let mut w = weight("x3", "x1", 61.0);
    w["meta"] = json!({"tag": [{"system": "urn:t", "code": "study"}]});
    put(&srv, w).await;
    put(
        &srv,
        json!({"resourceType": "Organization", "id": "x4", "meta": {"tag": [{"system": "urn:t", "code": "study"}]}}),
    )
    .await;
    assert_eq!(ids(&srv, "?_tag=urn:t|study").await, vec!["x1", "x3", "x4"]);
    assert_eq!(ids(&srv, "?_type=Patient,Observation&_tag=urn:t|study").await, vec!["x1", "x3"]);
    assert_eq!(ids(&srv, "?_type=Observation&_id=x2,x3&_sort=-_id").await, vec!["x2", "x3"]);
    // a parameter of only some of the types is not common: ignored and reported, or 400 when strict
    let b = body(srv.get("?_type=Patient,Observation&gender=male").await).await;
    assert!(b["entry"].as_array().unwrap().iter().any(|e| e["search"]["mode"] == "outcome"));
    let strict =
        srv.send_with("GET", "?_type=Patient,Observation&gender=male", None, &[("Prefer", "handling=strict")]).await;
    assert_outcome(strict, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("?_type=Patient,NotAType").await, StatusCode::BAD_REQUEST).await;
    // POST [base]/_search with a form
    let r = srv
        .client
        .post(srv.url("_search"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("_type=Organization&_tag=urn%3At%7Cstudy")
        .send()
        .await
        .unwrap();
    let b = body(r).await;
    assert_eq!(b["total"], 1);
    assert_eq!(b["entry"][0]["resource"]["id"], "x4");
    // paging links stay system-level
    let b = body(srv.get("?_type=Patient,Observation,Organization&_count=1").await).await;
    let next = b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.contains("/fhir?"), "{next}");
    let page2 = body(srv.client.get(&next).send().await.unwrap()).await;
    assert_eq!(page2["entry"].as_array().unwrap().len(), 1);
});

both_backends!(wildcard_includes_follow_every_reference, |srv| {
    put(&srv, json!({"resourceType": "Practitioner", "id": "dr"})).await;
    put(&srv, json!({"resourceType": "Patient", "id": "p", "generalPractitioner": [{"reference": "Practitioner/dr"}]}))
        .await;
    let mut w = weight("o", "p", 70.0);
    w["performer"] = json!([{"reference": "Practitioner/dr"}]);
    put(&srv, w).await;
    let included = |b: &Value| -> Vec<String> {
        let mut v: Vec<String> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let b = body(srv.get("Observation?_id=o&_include=*").await).await;
    assert_eq!(included(&b), vec!["Patient/p", "Practitioner/dr"]);
    let b = body(srv.get("Observation?_id=o&_include=Observation:*").await).await;
    assert_eq!(included(&b), vec!["Patient/p", "Practitioner/dr"]);
    let b = body(srv.get("Patient?_id=p&_revinclude=Observation:*").await).await;
    assert_eq!(included(&b), vec!["Observation/o"]);
    assert_outcome(srv.get("Patient?_revinclude=*").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Patient?_include=Nope:*").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(summary_true_returns_the_summary_elements_only, |srv| {
    put(
        &srv,
        json!({"resourceType": "Patient", "id": "s", "gender": "female", "birthDate": "1970",
        "name": [{"family": "Doe"}], "photo": [{"contentType": "image/png", "data": "AAAA"}],
        "contact": [{"name": {"family": "Roe"}, "gender": "male"}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Doe</div>"}}),
    )
    .await;
    let b = body(srv.get("Patient?_id=s&_summary=true").await).await;
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["resourceType"], "Patient");
    assert_eq!(r["id"], "s");
    assert_eq!(r["gender"], "female");
    assert_eq!(r["name"][0]["family"], "Doe");
    assert!(r.get("photo").is_none(), "photo is not a summary element");
    assert!(r.get("contact").is_none(), "contact is not a summary element");
    assert!(r.get("text").is_none());
    assert!(r["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
});

both_backends!(absolute_reference_on_this_servers_base_is_the_relative_one, |srv| {
    put(&srv, weight("w", "p1", 70.0)).await;
    put(&srv, weight("w2", "p2", 71.0)).await;
    let own = format!("{}/Patient/p1", srv.base);
    assert_eq!(ids(&srv, &format!("Observation?subject={own}")).await, vec!["w"]);
    assert_eq!(ids(&srv, &format!("Observation?patient={own}")).await, vec!["w"]);
    assert_eq!(ids(&srv, &format!("Observation?subject={own},{}/Patient/p2", srv.base)).await, vec!["w", "w2"]);
    // another server's URL is not this server's resource
    assert!(ids(&srv, "Observation?subject=https://elsewhere.example/fhir/Patient/p1").await.is_empty());
    assert_outcome(srv.get(&format!("Observation?subject={}/Nope/p1", srv.base)).await, StatusCode::BAD_REQUEST).await;
});

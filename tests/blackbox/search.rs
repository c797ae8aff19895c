//! Search by string, date, reference and `_lastUpdated`, with modifiers and prefixes.

use crate::both_backends;
use crate::harness::*;

pub(crate) async fn ids(srv: &Server, query: &str) -> Vec<String> {
    let r = srv.get(query).await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    let b = body(r).await;
    let mut out: Vec<String> = b["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

pub(crate) async fn put(srv: &Server, v: Value) {
    let path = format!("{}/{}", v["resourceType"].as_str().unwrap(), v["id"].as_str().unwrap());
    let r = srv.put(&path, &v).await;
    assert!(r.status().is_success(), "{path}");
}

async fn people(srv: &Server) {
    put(srv, json!({"resourceType": "Patient", "id": "mueller", "name": [{"family": "Müller", "given": ["Zoë"]}], "birthDate": "1975-06-15",
        "generalPractitioner": [{"reference": "Practitioner/gp1"}]}))
    .await;
    put(srv, json!({"resourceType": "Patient", "id": "muir", "name": [{"family": "Muir", "given": ["Ann"]}], "birthDate": "1982-01",
        "generalPractitioner": [{"reference": "Practitioner/gp2"}]}))
    .await;
    put(srv, json!({"resourceType": "Patient", "id": "smith", "name": [{"family": "Smith", "given": ["50%_off"]}], "birthDate": "1990"})).await;
}

both_backends!(string_search_is_prefix_case_and_accent_insensitive, |srv| {
    people(&srv).await;
    assert_eq!(ids(&srv, "Patient?family=mu").await, vec!["mueller", "muir"]);
    assert_eq!(ids(&srv, "Patient?family=MULLER").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?name=zoe").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?family:exact=Müller").await, vec!["mueller"]);
    assert!(ids(&srv, "Patient?family:exact=muller").await.is_empty());
    assert_eq!(ids(&srv, "Patient?family:contains=ui").await, vec!["muir"]);
    assert_eq!(ids(&srv, "Patient?family=smi,muir").await, vec!["muir", "smith"]);
    // LIKE metacharacters are data
    assert_eq!(ids(&srv, "Patient?given=50%25_").await, vec!["smith"]);
    assert!(ids(&srv, "Patient?given=5%25f").await.is_empty());
    assert!(ids(&srv, "Patient?family=x'%20OR%201=1--").await.is_empty());
});

both_backends!(date_search_prefixes_on_partial_dates, |srv| {
    people(&srv).await;
    assert_eq!(ids(&srv, "Patient?birthdate=1975-06-15").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?birthdate=1975").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?birthdate=lt1980").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?birthdate=ge1982").await, vec!["muir", "smith"]);
    assert_eq!(ids(&srv, "Patient?birthdate=gt1982-01").await, vec!["smith"]);
    assert_eq!(ids(&srv, "Patient?birthdate=sa1980&birthdate=eb1985").await, vec!["muir"]);
    assert_eq!(ids(&srv, "Patient?birthdate=ne1990").await, vec!["mueller", "muir"]);
    assert_eq!(ids(&srv, "Patient?birthdate=le1975-06-15").await, vec!["mueller"]);
    // 1982-01 as a month is not contained in the day 1982-01-10, but approximately matches it
    assert!(ids(&srv, "Patient?birthdate=1982-01-10").await.is_empty());
    assert_eq!(ids(&srv, "Patient?birthdate=ap1982-01-10").await, vec!["muir"]);
    for bad in ["1975-13", "xx1975", "1975-02-30", "yesterday"] {
        assert_outcome(srv.get(&format!("Patient?birthdate={bad}")).await, StatusCode::BAD_REQUEST).await;
    }
});

both_backends!(date_search_on_periods, |srv| {
    put(&srv, json!({"resourceType": "Encounter", "id": "open", "status": "in-progress", "class": {"code": "IMP"}, "period": {"start": "2024-03-01"}})).await;
    put(
        &srv,
        json!({"resourceType": "Encounter", "id": "closed", "status": "finished", "class": {"code": "AMB"},
        "period": {"start": "2023-01-01T10:00:00Z", "end": "2023-01-01T11:00:00Z"}}),
    )
    .await;
    assert_eq!(ids(&srv, "Encounter?date=gt2025").await, vec!["open"], "an open period goes on");
    assert_eq!(ids(&srv, "Encounter?date=2023-01-01").await, vec!["closed"]);
    assert_eq!(ids(&srv, "Encounter?date=lt2024").await, vec!["closed"]);
});

both_backends!(reference_search_by_id_type_and_modifier, |srv| {
    people(&srv).await;
    put(&srv, json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/muir"}})).await;
    put(&srv, json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Group/muir"}})).await;
    assert_eq!(ids(&srv, "Observation?subject=Patient/muir").await, vec!["o1"]);
    assert_eq!(ids(&srv, "Observation?subject=muir").await, vec!["o1", "o2"]);
    assert_eq!(ids(&srv, "Observation?subject:Patient=muir").await, vec!["o1"]);
    assert_eq!(ids(&srv, "Observation?patient=muir").await, vec!["o1"], "patient only follows Patient references");
    assert_eq!(ids(&srv, "Patient?general-practitioner=Practitioner/gp1").await, vec!["mueller"]);
    assert_outcome(srv.get("Observation?subject=Nonsense/1").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Observation?subject=Medication/1").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Observation?subject:Nonsense=1").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(missing_modifier, |srv| {
    people(&srv).await;
    assert_eq!(ids(&srv, "Patient?general-practitioner:missing=true").await, vec!["smith"]);
    assert_eq!(ids(&srv, "Patient?general-practitioner:missing=false").await, vec!["mueller", "muir"]);
    assert_outcome(srv.get("Patient?gender:missing=maybe").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(last_updated_search, |srv| {
    people(&srv).await;
    let all = ids(&srv, "Patient?_lastUpdated=gt2000-01-01").await;
    assert_eq!(all.len(), 3);
    assert!(ids(&srv, "Patient?_lastUpdated=lt2000-01-01").await.is_empty());
});

both_backends!(updates_and_deletes_replace_index_rows, |srv| {
    people(&srv).await;
    put(&srv, json!({"resourceType": "Patient", "id": "muir", "name": [{"family": "Newname"}]})).await;
    assert_eq!(ids(&srv, "Patient?family=mu").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?family=newn").await, vec!["muir"]);
    assert!(ids(&srv, "Patient?birthdate=1982-01").await.is_empty());
    srv.delete("Patient/mueller").await;
    assert!(ids(&srv, "Patient?family=mu").await.is_empty());
});

both_backends!(number_quantity_and_uri_search, |srv| {
    let obs = |id: &str, value: &str, unit: &str| {
        let text = format!(
            r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"w"}},"valueQuantity":{{"value":{value},"unit":"{unit}","system":"http://unitsofmeasure.org","code":"{unit}"}}}}"#
        );
        serde_json::from_str::<Value>(&text).unwrap()
    };
    put(&srv, obs("light", "5.4", "kg")).await;
    put(&srv, obs("heavy", "100", "kg")).await;
    put(&srv, obs("tall", "180", "cm")).await;
    assert_eq!(ids(&srv, "Observation?value-quantity=5.4").await, vec!["light"]);
    assert_eq!(ids(&srv, "Observation?value-quantity=5").await, vec!["light"], "5 means [4.5, 5.5]");
    assert_eq!(ids(&srv, "Observation?value-quantity=gt50|http://unitsofmeasure.org|kg").await, vec!["heavy"]);
    assert_eq!(ids(&srv, "Observation?value-quantity=gt50||cm").await, vec!["tall"]);
    assert_eq!(ids(&srv, "Observation?value-quantity=le100").await, vec!["heavy", "light"]);
    assert_eq!(ids(&srv, "Observation?value-quantity=ap95").await, vec!["heavy"]);
    assert_outcome(srv.get("Observation?value-quantity=heavy").await, StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Observation?value-quantity=1|a|b|c").await, StatusCode::BAD_REQUEST).await;

    put(
        &srv,
        json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/x"},
        "prediction": [{"probabilityDecimal": 0.25}]}),
    )
    .await;
    assert_eq!(ids(&srv, "RiskAssessment?probability=gt0.2").await, vec!["r1"]);
    assert!(ids(&srv, "RiskAssessment?probability=0.4").await.is_empty());
    assert!(ids(&srv, "RiskAssessment?probability=0.2").await.is_empty(), "0.2 means [0.15, 0.25)");
    assert_eq!(ids(&srv, "RiskAssessment?probability=0.25").await, vec!["r1"]);

    put(&srv, json!({"resourceType": "ValueSet", "id": "vs", "status": "active", "url": "http://example.org/fhir/ValueSet/colours"})).await;
    assert_eq!(ids(&srv, "ValueSet?url=http://example.org/fhir/ValueSet/colours").await, vec!["vs"]);
    assert!(ids(&srv, "ValueSet?url=http://example.org/fhir").await.is_empty());
    assert_eq!(ids(&srv, "ValueSet?url:below=http://example.org/fhir").await, vec!["vs"]);
    assert_eq!(ids(&srv, "ValueSet?url:above=http://example.org/fhir/ValueSet/colours/v2").await, vec!["vs"]);
});

async fn clinic(srv: &Server) {
    people(srv).await;
    put(srv, json!({"resourceType": "Practitioner", "id": "gp1", "name": [{"family": "Doc"}]})).await;
    for (id, patient, date) in
        [("e1", "mueller", "2024-01-01"), ("e2", "mueller", "2022-06-01"), ("e3", "muir", "2023-03-03")]
    {
        put(
            srv,
            json!({"resourceType": "Encounter", "id": id, "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient/{patient}")}, "period": {"start": date, "end": date}}),
        )
        .await;
        put(srv, json!({"resourceType": "Observation", "id": format!("o-{id}"), "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{patient}")}, "encounter": {"reference": format!("Encounter/{id}")},
            "effectiveDateTime": date}))
        .await;
    }
}

async fn ordered_ids(srv: &Server, query: &str) -> Vec<String> {
    let b = body(srv.get(query).await).await;
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

both_backends!(sort_by_date_string_and_id, |srv| {
    clinic(&srv).await;
    assert_eq!(ordered_ids(&srv, "Encounter?_sort=date").await, vec!["e2", "e3", "e1"]);
    assert_eq!(ordered_ids(&srv, "Encounter?_sort=-date").await, vec!["e1", "e3", "e2"]);
    assert_eq!(ordered_ids(&srv, "Patient?_sort=family").await, vec!["muir", "mueller", "smith"]);
    assert_eq!(ordered_ids(&srv, "Patient?_sort=-_id").await, vec!["smith", "muir", "mueller"]);
    // several keys; patients without a GP sort last either way
    assert_eq!(ordered_ids(&srv, "Patient?_sort=general-practitioner,family").await, vec!["mueller", "muir", "smith"]);
    assert_eq!(ordered_ids(&srv, "Patient?_sort=-general-practitioner").await, vec!["muir", "mueller", "smith"]);
    assert_outcome(srv.get("Patient?_sort=shoe-size").await, StatusCode::BAD_REQUEST).await;
});

both_backends!(include_and_revinclude_mark_included_entries, |srv| {
    clinic(&srv).await;
    let b =
        body(srv.get("Observation?_id=o-e1&_include=Observation:subject&_include=Observation:encounter").await).await;
    let modes: Vec<(String, String)> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["resource"]["id"].as_str().unwrap().to_string(), e["search"]["mode"].as_str().unwrap().to_string()))
        .collect();
    assert!(modes.contains(&("o-e1".into(), "match".into())));
    assert!(modes.contains(&("mueller".into(), "include".into())));
    assert!(modes.contains(&("e1".into(), "include".into())));
    assert_eq!(modes.len(), 3);
    assert_eq!(b["total"], 1, "total counts matches only");
    let b = body(srv.get("Encounter?_id=e1,e3&_revinclude=Observation:encounter").await).await;
    let included: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    let mut included = included;
    included.sort();
    assert_eq!(included, vec!["o-e1", "o-e3"]);
    // iterate: encounter -> observations -> their patients
    let b =
        body(srv.get("Encounter?_id=e3&_revinclude=Observation:encounter&_include:iterate=Observation:subject").await)
            .await;
    assert!(
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource"]["id"] == "muir" && e["search"]["mode"] == "include")
    );
    for bad in [
        "_include=Observation:code",
        "_include=Nope:subject",
        "_include=Observation:subject:Medication",
        "_include=garbage",
    ] {
        assert_outcome(srv.get(&format!("Observation?{bad}")).await, StatusCode::BAD_REQUEST).await;
    }
});

both_backends!(patient_compartment_search, |srv| {
    clinic(&srv).await;
    assert_eq!(ids(&srv, "Patient/mueller/Observation").await, vec!["o-e1", "o-e2"]);
    assert_eq!(ids(&srv, "Patient/mueller/Encounter?date=2024").await, vec!["e1"]);
    assert_eq!(ids(&srv, "Patient/mueller/Patient").await, vec!["mueller"]);
    assert!(ids(&srv, "Patient/nobody/Observation").await.is_empty());
    let b = body(srv.get("Patient/muir/Observation").await).await;
    assert!(b["link"][0]["url"].as_str().unwrap().contains("/Patient/muir/Observation"));
});

both_backends!(chains_and_reverse_chains, |srv| {
    clinic(&srv).await;
    // one level, with and without the type
    assert_eq!(ids(&srv, "Observation?subject:Patient.family=muir").await, vec!["o-e3"]);
    assert_eq!(ids(&srv, "Observation?subject.family=mul").await, vec!["o-e1", "o-e2"]);
    // two levels: observation -> encounter -> patient
    assert_eq!(ids(&srv, "Observation?encounter.subject:Patient.birthdate=1982-01").await, vec!["o-e3"]);
    // three levels
    assert_eq!(
        ids(&srv, "Observation?subject:Patient.general-practitioner:Practitioner.family=doc").await,
        vec!["o-e1", "o-e2"]
    );
    // _has and nested _has
    assert_eq!(ids(&srv, "Patient?_has:Observation:subject:encounter=Encounter/e3").await, vec!["muir"]);
    assert_eq!(ids(&srv, "Patient?_has:Encounter:subject:date=2024").await, vec!["mueller"]);
    assert_eq!(ids(&srv, "Patient?_has:Encounter:subject:_has:Observation:encounter:_id=o-e2").await, vec!["mueller"]);
    // deleted targets do not match
    srv.delete("Encounter/e3").await;
    assert!(ids(&srv, "Observation?encounter.subject:Patient.birthdate=1982-01").await.is_empty());
});

both_backends!(chain_bad_input_is_400, |srv| {
    for bad in [
        "Observation?code.text=x",                    // not a reference parameter
        "Observation?subject:Medication.code=x",      // not a target of subject
        "Observation?subject:Patient.nonsense=x",     // unknown on the target
        "Patient?_has:Observation:code:status=final", // not a reference
        "Patient?_has:Observation:subject",           // malformed
        "Observation?subject.birthdate=notadate",     // bad value at the end of the chain
    ] {
        assert_outcome(srv.get(bad).await, StatusCode::BAD_REQUEST).await;
    }
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_deeper_than_the_configured_limit_is_400() {
    let srv = Server::start_with(Backend::Sqlite, "[limits]\nmax_chain_depth = 2\n").await.unwrap();
    assert_eq!(srv.get("Observation?encounter.subject:Patient.family=x").await.status(), StatusCode::OK);
    let oo = assert_outcome(
        srv.get("Observation?encounter.subject:Patient.general-practitioner:Practitioner.family=x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(oo.to_string().contains("at most 2"));
    assert_outcome(
        srv.get("Patient?_has:Encounter:subject:_has:Observation:encounter:_has:Provenance:target:_id=x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

both_backends!(paging_follows_signed_next_links_and_refuses_tampered_tokens, |srv| {
    for i in 0..7 {
        put(&srv, json!({"resourceType": "Patient", "id": format!("pg{i}"), "gender": "other"})).await;
    }
    let mut seen = Vec::new();
    let mut url = srv.url("Patient?gender=other&_count=3&_sort=_id");
    let mut last_next = String::new();
    for _ in 0..10 {
        let b = body(srv.client.get(&url).send().await.unwrap()).await;
        assert_eq!(b["total"], 7);
        seen.extend(b["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()));
        match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(n) => {
                url = n["url"].as_str().unwrap().to_string();
                last_next = url.clone();
            }
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("pg{i}")).collect::<Vec<_>>());
    // the token is opaque: changing it, or using it for another search, is refused
    let token = last_next.split("_page=").nth(1).unwrap().to_string();
    let (_, sig) = token.split_once('.').unwrap();
    let tampered = last_next.replace(&token, &format!("0.{sig}"));
    assert_outcome(srv.client.get(&tampered).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    let other_query = last_next.replace("gender=other", "gender=male");
    assert_outcome(srv.client.get(&other_query).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_outcome(srv.get("Patient?gender=other&_count=3&_sort=_id&_page=garbage").await, StatusCode::BAD_REQUEST)
        .await;
});

both_backends!(summary_elements_and_common_parameters, |srv| {
    put(&srv, json!({"resourceType": "Patient", "id": "s1", "gender": "female", "birthDate": "1970",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann</div>"},
        "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/StructureDefinition/p"],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}))
    .await;
    put(&srv, json!({"resourceType": "Patient", "id": "s2", "gender": "male"})).await;
    let b = body(srv.get("Patient?_summary=count").await).await;
    assert_eq!(b["total"], 2);
    assert!(b.get("entry").is_none());
    let b = body(srv.get("Patient?_id=s1&_elements=gender").await).await;
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["gender"], "female");
    assert!(r.get("birthDate").is_none() && r.get("text").is_none());
    assert!(r["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
    let b = body(srv.get("Patient?_id=s1&_summary=data").await).await;
    assert!(b["entry"][0]["resource"].get("text").is_none());
    assert_eq!(b["entry"][0]["resource"]["birthDate"], "1970");
    // the stored resource is untouched
    let full = body(srv.get("Patient/s1").await).await;
    assert!(!full["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
    assert_eq!(ids(&srv, "Patient?_tag=urn:tags|vip").await, vec!["s1"]);
    assert_eq!(ids(&srv, "Patient?_profile=http://example.org/StructureDefinition/p").await, vec!["s1"]);
    assert_eq!(ids(&srv, "Patient?_security=R").await, vec!["s1"]);
    for bad in ["_summary=maybe", "_elements=a.b", "_summary=text&_elements=gender"] {
        assert_outcome(srv.get(&format!("Patient?{bad}")).await, StatusCode::BAD_REQUEST).await;
    }
});

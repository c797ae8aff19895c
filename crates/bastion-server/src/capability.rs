//! The CapabilityStatement, generated from what this server really implements: every R4
//! resource type with the interactions the engine executes and the search parameters the
//! query parser accepts. It is built once at start.

use bastion_fhir::definitions::{self, SearchParamType};
use serde_json::{Value, json};

/// Search parameters the query parser and the indexer implement: `_id`, `_lastUpdated`,
/// `_text`, `_content`, every token, string, date, reference, number, quantity and uri
/// parameter whose expression the indexer can evaluate, and the two-part composites.
fn supported(p: &definitions::SearchParamDef) -> bool {
    match p.code.as_str() {
        "_id" | "_lastUpdated" | "_text" | "_content" => true,
        _ if p.kind == SearchParamType::Composite => {
            bastion_search::query::is_supported_composite(p)
                && p.expression.as_deref().and_then(bastion_search::index::parse_expression).is_some()
        }
        _ => {
            bastion_search::is_indexed_kind(p.kind)
                && p.expression.as_deref().and_then(bastion_search::index::parse_expression).is_some()
        }
    }
}

fn type_name(kind: SearchParamType) -> &'static str {
    match kind {
        SearchParamType::Number => "number",
        SearchParamType::Date => "date",
        SearchParamType::String => "string",
        SearchParamType::Token => "token",
        SearchParamType::Reference => "reference",
        SearchParamType::Composite => "composite",
        SearchParamType::Quantity => "quantity",
        SearchParamType::Uri => "uri",
        SearchParamType::Special => "special",
    }
}

/// SMART on FHIR: the service code and the `oauth-uris` extension, which SMART v1 clients
/// read (v2 clients use `.well-known/smart-configuration`, which says the same).
fn security(base: &str) -> Value {
    let auth = format!("{}/auth", base.strip_suffix("/fhir").unwrap_or(base));
    json!({
        "cors": true,
        "service": [{
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": format!("{auth}/authorize")},
                {"url": "token", "valueUri": format!("{auth}/token")},
                {"url": "introspect", "valueUri": format!("{auth}/introspect")},
                {"url": "revoke", "valueUri": format!("{auth}/revoke")}
            ]
        }]
    })
}

pub fn capability_statement(base: &str) -> Value {
    let interactions =
        ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"];
    let resources: Vec<Value> = definitions::resource_types()
        .iter()
        .map(|t| {
            let params: Vec<Value> = definitions::search_params(t)
                .into_iter()
                .filter(|p| supported(p))
                .map(|p| json!({"name": p.code, "definition": p.url, "type": type_name(p.kind)}))
                .chain(std::iter::once(json!({
                    "name": "_list", "type": "token",
                    "documentation": "resources that a List (by id) holds as entry.item"
                })))
                .collect();
            let mut resource = json!({
                "type": t,
                "interaction": interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            });
            if t == "Patient" {
                resource["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }]);
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-02",
        "publisher": "Bastion",
        "kind": "instance",
        "software": {"name": "Bastion", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Bastion FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": security(base),
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"}],
        }],
    })
}

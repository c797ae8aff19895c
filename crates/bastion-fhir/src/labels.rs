//! Security-label vocabulary (R4 security-labels.html, HL7 DS4P): the code systems, which
//! codes mean what, the confidentiality order and the ActReason (purpose of use) hierarchy.
//!
//! What this is for: facts that the policy layer decides with, the Bundle writer labels
//! with and the engine checks writes against. What it is not: a decision. Whether a caller
//! may see a label is the policy crate's question.
//!
//! The tables are closed on purpose: a code that is not listed here is *unknown*, and the
//! policy fails closed on unknown labels (R4 asks every agreement to say what an
//! unrecognized label means; ours says "nobody sees it").

use serde::Deserialize;

pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const ACT_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
pub const OBSERVATION_VALUE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// v3 ConfidentialityClassification, in its total order `U < L < M < N < R < V`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidentiality {
    U,
    L,
    M,
    N,
    R,
    V,
}

impl Confidentiality {
    pub const ALL: [Confidentiality; 6] = [
        Confidentiality::U,
        Confidentiality::L,
        Confidentiality::M,
        Confidentiality::N,
        Confidentiality::R,
        Confidentiality::V,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Confidentiality::U => "U",
            Confidentiality::L => "L",
            Confidentiality::M => "M",
            Confidentiality::N => "N",
            Confidentiality::R => "R",
            Confidentiality::V => "V",
        }
    }

    pub fn parse(code: &str) -> Option<Confidentiality> {
        Confidentiality::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn display(self) -> &'static str {
        match self {
            Confidentiality::U => "unrestricted",
            Confidentiality::L => "low",
            Confidentiality::M => "moderate",
            Confidentiality::N => "normal",
            Confidentiality::R => "restricted",
            Confidentiality::V => "very restricted",
        }
    }

    /// The label as a Coding.
    pub fn coding(self) -> serde_json::Value {
        serde_json::json!({"system": CONFIDENTIALITY_SYSTEM, "code": self.code(), "display": self.display()})
    }
}

/// Sensitivity (ActCode `_InformationSensitivityPolicy`) and compartment (ActCode `COMPT`)
/// codes: each is seen only by callers whose roles hold it.
pub const SENSITIVITY: &[&str] = &[
    // act
    "ETH",
    "GDIS",
    "HIV",
    "MST",
    "SCA",
    "SDV",
    "SEX",
    "STD",
    "TBOO",
    "VIO",
    "SPI",
    "BH",
    "MH",
    "PSY",
    "PSYTHPN",
    "SUD",
    // entity and role
    "DEMO",
    "DOB",
    "GENDER",
    "LIVARG",
    "MARST",
    "RACE",
    "REL",
    "B",
    "EMPL",
    "LOCIS",
    "SSP",
    // other
    "ADOL",
    "CEL",
    "DIA",
    "DRGIS",
    "EMP",
    "PDS",
    "PHY",
    "PRS",
    // compartments
    "COMPT",
    "ACOCOMPT",
    "CTCOMPT",
    "FMCOMPT",
    "HRCOMPT",
    "LRCOMPT",
    "PACOMPT",
    "RESCOMPT",
    "RMGTCOMPT",
];

/// Sensitivity codes that stand for a family (`SPI`, specially protected, covers behavioral
/// and mental health, psychiatry, psychotherapy notes and substance use): holding the parent
/// is holding every child.
const SENSITIVITY_PARENTS: &[(&str, &[&str])] = &[("SPI", &["BH", "MH", "PSY", "PSYTHPN", "SUD"])];

/// The sensitivity codes that holding `code` lets one see: itself and its children.
pub fn sensitivity_covers(code: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = SENSITIVITY.iter().copied().filter(|c| *c == code).collect();
    for (parent, children) in SENSITIVITY_PARENTS {
        if *parent == code {
            out.extend_from_slice(children);
        }
    }
    out
}

/// ActCode obligations, refrain policies and privacy laws: handling caveats that travel with
/// the data and deny nothing by themselves.
pub const HANDLING_CAVEATS: &[&str] = &[
    // obligation policy
    "ANONY",
    "AOD",
    "AUDIT",
    "AUDTR",
    "CPLYCC",
    "CPLYCD",
    "CPLYJPP",
    "CPLYOPP",
    "CPLYOSP",
    "CPLYPOL",
    "DECLASSIFYLABEL",
    "DEID",
    "DELAU",
    "DOWNGRDLABEL",
    "DRIVLABEL",
    "ENCRYPT",
    "ENCRYPTR",
    "ENCRYPTT",
    "ENCRYPTU",
    "HUAPRV",
    "LABEL",
    "MASK",
    "MINEC",
    "PERSISTLABEL",
    "PRIVMARK",
    "PSEUD",
    "REDACT",
    "UPGRDLABEL",
    "PROCESSINLINELABEL",
    // refrain policy
    "NOAUTH",
    "NOCOLLECT",
    "NODSCLCD",
    "NODSCLCDS",
    "NOINTEGRATE",
    "NOLIST",
    "NOMOU",
    "NOORGPOL",
    "NOPAT",
    "NOPERSISTP",
    "NORDSCLCD",
    "NORDSCLCDS",
    "NORDSCLW",
    "NORELINK",
    "NOREUSE",
    "NOVIP",
    "ORCON",
    // US privacy law
    "42CFRPart2",
    "CommonRule",
    "HIPAANOPP",
    "HIPAAPsyNotes",
    "HIPAASelfPay",
    "Title38Section7332",
];

/// ObservationValue integrity and provenance facts ("this copy was redacted", "signed").
pub const INTEGRITY: &[&str] =
    &["ABSTRED", "AGGRED", "ANONYED", "MASKED", "PSEUDED", "REDACTED", "SUBSETTED", "CRYTOHASH", "DIGSIG", "PATRPT"];

/// Test data. R4 names it ActCode, the R4 terminology has it in ActReason: both are read,
/// ActReason is what the server writes.
pub const TEST_DATA: &str = "HTEST";

/// The ActReason purpose-of-use hierarchy, child -> parent (is-a): `BTG` is-a `ETREAT` is-a
/// `TREAT`. Codes without a parent here are roots.
const PURPOSE_PARENT: &[(&str, &str)] = &[
    ("ETREAT", "TREAT"),
    ("BTG", "ETREAT"),
    ("COC", "TREAT"),
    ("POPHLTH", "TREAT"),
    ("CAREMGT", "HOPERAT"),
    ("HDIRECT", "HOPERAT"),
    ("HLEGAL", "HOPERAT"),
    ("HSYSADMIN", "HOPERAT"),
    ("PATADMIN", "HOPERAT"),
    ("CLINTRCH", "HRESCH"),
    ("TRANSRCH", "HRESCH"),
    ("COVERAGE", "HPAYMT"),
    ("FAMRQT", "PATRQT"),
    ("PWATRNY", "PATRQT"),
    ("SUPNWK", "PATRQT"),
];

/// The PurposeOfUse codes this server knows: the hierarchy's members and the roots below.
pub const PURPOSES: &[&str] = &[
    "TREAT",
    "ETREAT",
    "BTG",
    "COC",
    "POPHLTH",
    "HOPERAT",
    "CAREMGT",
    "HDIRECT",
    "HLEGAL",
    "HSYSADMIN",
    "PATADMIN",
    "HRESCH",
    "CLINTRCH",
    "TRANSRCH",
    "CLINTRL",
    "HPAYMT",
    "COVERAGE",
    "HMARKT",
    "PUBHLTH",
    "PATRQT",
    "FAMRQT",
    "PWATRNY",
    "SUPNWK",
];

/// `purpose` and every purpose it is-a, nearest first (`BTG` -> `BTG, ETREAT, TREAT`).
pub fn purpose_and_ancestors(purpose: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut current = PURPOSES.iter().copied().find(|p| *p == purpose);
    while let Some(p) = current {
        out.push(p);
        current = PURPOSE_PARENT.iter().find(|(child, _)| *child == p).map(|(_, parent)| *parent);
    }
    out
}

/// Is `asked` the purpose `granted` or one of its descendants (a request for `BTG` serves a
/// rule about `TREAT`)?
pub fn purpose_is_a(asked: &str, granted: &str) -> bool {
    purpose_and_ancestors(asked).contains(&granted)
}

/// What a `meta.security` Coding is, by its system and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    Confidentiality(Confidentiality),
    Sensitivity,
    HandlingCaveat,
    Integrity,
    TestData,
    /// A purpose of use on the data: it may be used for that purpose (and its kinds) only.
    Purpose,
    /// Neither system nor code is one this server knows: nobody may see it.
    Unknown,
}

pub fn classify(system: Option<&str>, code: &str) -> LabelKind {
    match system {
        Some(CONFIDENTIALITY_SYSTEM) => {
            Confidentiality::parse(code).map_or(LabelKind::Unknown, LabelKind::Confidentiality)
        }
        Some(ACT_CODE_SYSTEM) if SENSITIVITY.contains(&code) => LabelKind::Sensitivity,
        Some(ACT_CODE_SYSTEM) if HANDLING_CAVEATS.contains(&code) => LabelKind::HandlingCaveat,
        Some(ACT_CODE_SYSTEM | ACT_REASON_SYSTEM) if code == TEST_DATA => LabelKind::TestData,
        Some(ACT_REASON_SYSTEM) if PURPOSES.contains(&code) => LabelKind::Purpose,
        Some(OBSERVATION_VALUE_SYSTEM) if INTEGRITY.contains(&code) => LabelKind::Integrity,
        _ => LabelKind::Unknown,
    }
}

/// The token parameter under which the search index keeps each `meta.security` label's
/// class ([`class_key`]): what a caller may see is a short list of classes, not of codes.
/// Not a search parameter a client can use.
pub const LABEL_CLASS_PARAM: &str = "_label-class";

/// The class of a label, as the index keeps it: `conf:N`, `sens:PSY`, `purpose:TREAT`,
/// `test`, `inert` (caveats and integrity facts, which deny nothing), `unknown`.
pub fn class_key(system: Option<&str>, code: &str) -> String {
    match classify(system, code) {
        LabelKind::Confidentiality(c) => format!("conf:{}", c.code()),
        LabelKind::Sensitivity => format!("sens:{code}"),
        LabelKind::Purpose => format!("purpose:{code}"),
        LabelKind::TestData => "test".into(),
        LabelKind::HandlingCaveat | LabelKind::Integrity => "inert".into(),
        LabelKind::Unknown => "unknown".into(),
    }
}

/// Every class but `unknown`.
pub fn known_classes() -> Vec<String> {
    let mut out: Vec<String> = Confidentiality::ALL.iter().map(|c| format!("conf:{}", c.code())).collect();
    out.extend(SENSITIVITY.iter().map(|c| format!("sens:{c}")));
    out.extend(PURPOSES.iter().map(|c| format!("purpose:{c}")));
    out.push("test".into());
    out.push("inert".into());
    out
}

/// SQL that classifies token rows of `_security` exactly as [`class_key`] does (for a
/// migration that adds the class rows to data indexed before they existed): a `CASE` over
/// the columns `system` and `code`, written from the same tables.
pub fn class_key_sql() -> String {
    let list = |codes: &[&str]| codes.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ");
    let conf: Vec<&str> = Confidentiality::ALL.iter().map(|c| c.code()).collect();
    format!(
        "CASE \
         WHEN system = '{CONFIDENTIALITY_SYSTEM}' AND code IN ({conf}) THEN 'conf:' || code \
         WHEN system = '{ACT_CODE_SYSTEM}' AND code IN ({sens}) THEN 'sens:' || code \
         WHEN system = '{ACT_CODE_SYSTEM}' AND code IN ({caveats}) THEN 'inert' \
         WHEN system IN ('{ACT_CODE_SYSTEM}', '{ACT_REASON_SYSTEM}') AND code = '{TEST_DATA}' THEN 'test' \
         WHEN system = '{ACT_REASON_SYSTEM}' AND code IN ({purposes}) THEN 'purpose:' || code \
         WHEN system = '{OBSERVATION_VALUE_SYSTEM}' AND code IN ({integrity}) THEN 'inert' \
         ELSE 'unknown' END",
        conf = list(&conf),
        sens = list(SENSITIVITY),
        caveats = list(HANDLING_CAVEATS),
        purposes = list(PURPOSES),
        integrity = list(INTEGRITY),
    )
}

/// The `(system, code)` pairs of a resource's `meta.security`.
pub fn security_labels(resource: &serde_json::Value) -> Vec<(Option<&str>, &str)> {
    resource
        .pointer("/meta/security")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c.get("system").and_then(|s| s.as_str()), c.get("code")?.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The highest confidentiality a resource's `meta.security` names, if it names one.
pub fn confidentiality_of(resource: &serde_json::Value) -> Option<Confidentiality> {
    security_labels(resource)
        .into_iter()
        .filter_map(|(s, c)| match classify(s, c) {
            LabelKind::Confidentiality(level) => Some(level),
            _ => None,
        })
        .max()
}

#[derive(Deserialize)]
struct MetaOnly {
    meta: Option<SecurityOnly>,
}

#[derive(Deserialize)]
struct SecurityOnly {
    #[serde(default)]
    security: Vec<CodingOnly>,
}

#[derive(Deserialize)]
struct CodingOnly {
    system: Option<String>,
    code: Option<String>,
}

/// Does `haystack` contain `needle` (a byte scan, SIMD where the machine has it)? How the
/// common body that carries no label is told apart without parsing it.
pub fn bytes_contain(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// [`confidentiality_of`] for a stored body, without building its tree: a body that does
/// not mention the confidentiality system at all (most of them) is answered by a byte scan.
pub fn confidentiality_of_bytes(body: &[u8]) -> Option<Confidentiality> {
    if !bytes_contain(body, CONFIDENTIALITY_SYSTEM.as_bytes()) {
        return None;
    }
    let meta: MetaOnly = serde_json::from_slice(body).ok()?;
    meta.meta?
        .security
        .iter()
        .filter(|c| c.system.as_deref() == Some(CONFIDENTIALITY_SYSTEM))
        .filter_map(|c| Confidentiality::parse(c.code.as_deref()?))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn confidentiality_is_totally_ordered() {
        use Confidentiality::*;
        assert!(U < L && L < M && M < N && N < R && R < V);
        assert_eq!(Confidentiality::parse("R"), Some(R));
        assert_eq!(Confidentiality::parse("r"), None, "codes are case-sensitive");
        assert_eq!(Confidentiality::parse("B"), None, "deprecated codes are not levels");
    }

    #[test]
    fn classifies_by_system_and_code() {
        assert_eq!(classify(Some(CONFIDENTIALITY_SYSTEM), "V"), LabelKind::Confidentiality(Confidentiality::V));
        assert_eq!(classify(Some(ACT_CODE_SYSTEM), "PSY"), LabelKind::Sensitivity);
        assert_eq!(classify(Some(ACT_CODE_SYSTEM), "NORDSCLCD"), LabelKind::HandlingCaveat);
        assert_eq!(classify(Some(ACT_CODE_SYSTEM), "HTEST"), LabelKind::TestData);
        assert_eq!(classify(Some(ACT_REASON_SYSTEM), "HTEST"), LabelKind::TestData);
        assert_eq!(classify(Some(ACT_REASON_SYSTEM), "HRESCH"), LabelKind::Purpose);
        assert_eq!(classify(Some(OBSERVATION_VALUE_SYSTEM), "REDACTED"), LabelKind::Integrity);
    }

    #[test]
    fn unknown_labels_are_unknown() {
        assert_eq!(classify(None, "PSY"), LabelKind::Unknown, "a code without its system");
        assert_eq!(classify(Some(CONFIDENTIALITY_SYSTEM), "X"), LabelKind::Unknown);
        assert_eq!(classify(Some(ACT_CODE_SYSTEM), "NORDSLCD"), LabelKind::Unknown, "the common misspelling");
        assert_eq!(classify(Some("http://example.org/labels"), "secret"), LabelKind::Unknown);
        assert_eq!(classify(Some(CONFIDENTIALITY_SYSTEM), "PSY"), LabelKind::Unknown, "a code in the wrong system");
    }

    #[test]
    fn classes_name_what_a_label_is() {
        assert_eq!(class_key(Some(CONFIDENTIALITY_SYSTEM), "R"), "conf:R");
        assert_eq!(class_key(Some(ACT_CODE_SYSTEM), "PSY"), "sens:PSY");
        assert_eq!(class_key(Some(ACT_CODE_SYSTEM), "NORDSCLCD"), "inert");
        assert_eq!(class_key(Some(OBSERVATION_VALUE_SYSTEM), "REDACTED"), "inert");
        assert_eq!(class_key(Some(ACT_REASON_SYSTEM), "HTEST"), "test");
        assert_eq!(class_key(Some(ACT_REASON_SYSTEM), "HRESCH"), "purpose:HRESCH");
        assert_eq!(class_key(None, "R"), "unknown");
        assert!(!known_classes().contains(&"unknown".to_string()));
        for c in known_classes() {
            assert_eq!(known_classes().iter().filter(|k| **k == c).count(), 1, "{c}");
        }
    }

    #[test]
    fn spi_covers_its_family() {
        assert_eq!(sensitivity_covers("PSY"), vec!["PSY"]);
        let spi = sensitivity_covers("SPI");
        for c in ["SPI", "BH", "MH", "PSY", "PSYTHPN", "SUD"] {
            assert!(spi.contains(&c), "{c}");
        }
        assert!(!spi.contains(&"HIV"));
        assert!(sensitivity_covers("nonsense").is_empty());
    }

    #[test]
    fn purpose_hierarchy() {
        assert_eq!(purpose_and_ancestors("BTG"), vec!["BTG", "ETREAT", "TREAT"]);
        assert!(purpose_is_a("BTG", "TREAT"));
        assert!(purpose_is_a("ETREAT", "TREAT"));
        assert!(!purpose_is_a("TREAT", "ETREAT"), "a parent is not its child");
        assert!(!purpose_is_a("HMARKT", "TREAT"));
        assert!(purpose_and_ancestors("nonsense").is_empty());
    }

    #[test]
    fn confidentiality_of_a_resource_is_its_highest_label() {
        let r = json!({"meta": {"security": [
            {"system": CONFIDENTIALITY_SYSTEM, "code": "N"},
            {"system": CONFIDENTIALITY_SYSTEM, "code": "R"},
            {"system": ACT_CODE_SYSTEM, "code": "PSY"}
        ]}});
        assert_eq!(confidentiality_of(&r), Some(Confidentiality::R));
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(confidentiality_of_bytes(&bytes), Some(Confidentiality::R));
        assert_eq!(confidentiality_of(&json!({"id": "x"})), None);
        assert_eq!(confidentiality_of_bytes(br#"{"id":"x"}"#), None);
        let elsewhere = json!({"note": [{"text": CONFIDENTIALITY_SYSTEM}]});
        assert_eq!(confidentiality_of_bytes(&serde_json::to_vec(&elsewhere).unwrap()), None);
    }
}

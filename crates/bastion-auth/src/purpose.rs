//! Purpose of use (INTERFACE.md): what a token may say its requests are for. It comes only
//! from the authorization or token request (`purpose_of_use`, a code of
//! `http://terminology.hl7.org/CodeSystem/v3-ActReason`), never from a bare header, and is
//! granted only when the user or backend client is allowed it.
//!
//! Rules: absent means `TREAT`; an unknown code is refused (fail closed); a code is granted
//! when it is in the allowed list (an empty list allows `TREAT` only); `BTG` (break the glass)
//! is granted only to users with `break_glass = true`, whatever their list says. What a
//! purpose then permits (the ActReason hierarchy, Consent) is the policy layer's question.

/// The PurposeOfUse codes this server knows (v3-ActReason; one table with the policy's
/// hierarchy).
pub const KNOWN: &[&str] = bastion_fhir::labels::PURPOSES;

pub const DEFAULT: &str = "TREAT";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurposeError {
    #[error("purpose_of_use is not a v3-ActReason purpose of use this server knows")]
    Unknown,
    #[error("purpose_of_use is not one this user or client may assert")]
    NotAllowed,
    #[error("break the glass (BTG) is not allowed for this user")]
    BreakGlassNotAllowed,
}

/// The purpose a token gets for `asked`, given what the caller may assert.
pub fn grant(asked: Option<&str>, allowed: &[String], break_glass: bool) -> Result<String, PurposeError> {
    let code = asked.map(str::trim).filter(|c| !c.is_empty()).unwrap_or(DEFAULT);
    if !KNOWN.contains(&code) {
        return Err(PurposeError::Unknown);
    }
    if code == "BTG" {
        return if break_glass { Ok(code.into()) } else { Err(PurposeError::BreakGlassNotAllowed) };
    }
    let ok = if allowed.is_empty() { code == DEFAULT } else { allowed.iter().any(|a| a == code) };
    if ok { Ok(code.into()) } else { Err(PurposeError::NotAllowed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn absent_purpose_is_treat() {
        assert_eq!(grant(None, &[], false), Ok("TREAT".into()));
        assert_eq!(grant(Some(""), &list(&["TREAT"]), false), Ok("TREAT".into()));
    }

    #[test]
    fn grants_an_allowed_purpose() {
        assert_eq!(grant(Some("ETREAT"), &list(&["TREAT", "ETREAT"]), false), Ok("ETREAT".into()));
    }

    #[test]
    fn rejects_a_purpose_not_allowed() {
        assert_eq!(grant(Some("HRESCH"), &list(&["TREAT"]), false), Err(PurposeError::NotAllowed));
        assert_eq!(grant(Some("ETREAT"), &[], false), Err(PurposeError::NotAllowed), "empty list: TREAT only");
    }

    #[test]
    fn rejects_an_unknown_code() {
        assert_eq!(grant(Some("EVERYTHING"), &list(&["EVERYTHING"]), true), Err(PurposeError::Unknown));
        assert_eq!(grant(Some("treat"), &[], false), Err(PurposeError::Unknown), "codes are case-sensitive");
    }

    #[test]
    fn rejects_break_the_glass_without_the_right() {
        assert_eq!(grant(Some("BTG"), &list(&["BTG", "TREAT"]), false), Err(PurposeError::BreakGlassNotAllowed));
        assert_eq!(grant(Some("BTG"), &[], true), Ok("BTG".into()));
    }
}

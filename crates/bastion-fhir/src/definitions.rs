//! R4 definitions generated from the specification data (placeholder until generated).

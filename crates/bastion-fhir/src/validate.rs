//! Structural validation against the R4 StructureDefinitions (placeholder until generated).

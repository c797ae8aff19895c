-- Who refers to a resource: the access rule that lets a patient-scoped caller read a
-- Practitioner, Organization, Medication, ... referenced from the patient's own record looks
-- references up by their target.
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type);

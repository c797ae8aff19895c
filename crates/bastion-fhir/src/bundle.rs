//! Bundle assembly from stored resource bytes.

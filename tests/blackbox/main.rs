//! The black-box suite: the real binary over HTTP, each test on SQLite and PostgreSQL.
//! One module per capability; security and bad-input tests are named after what they reject.

mod harness;

mod access;
mod auth;
mod bad_input;
mod browser;
mod capability;
mod cli;
mod conditional;
mod consent;
mod crud;
mod everything;
mod external_idp;
mod history;
mod import;
mod labels;
mod privacy;
mod rules;
mod search;
mod search_features;
mod smart;
mod transaction;

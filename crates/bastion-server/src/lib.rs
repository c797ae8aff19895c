//! The HTTP server: configuration, the request pipeline from HTTP to an [`interaction`],
//! its execution by the [`engine`] against the store, and the rendering of replies.
//!
//! Not here: storage (bastion-store), search semantics (bastion-search), FHIR definitions
//! and validation (bastion-fhir).
#![forbid(unsafe_code)]

pub mod auth;
pub mod bundle;
pub mod capability;
pub mod config;
pub mod consents;
pub mod engine;
pub mod error;
pub mod http;
pub mod interaction;
pub mod labelling;
pub mod paging;
pub mod shape;

use std::sync::Arc;

pub use config::Config;
pub use engine::{Engine, RequestContext};
pub use error::ApiError;

/// The FHIR base URL for a public URL: `{public_url}/fhir`.
pub fn fhir_base(public_url: &str) -> String {
    format!("{}/fhir", public_url.trim_end_matches('/'))
}

/// Opens the store and builds the engine for a configuration.
pub async fn build_engine(config: &Config, public_url: &str) -> Result<Arc<Engine>, bastion_store::StoreError> {
    let store = bastion_store::open(&config.storage.url).await?;
    let pages = paging::PageSigner::load_or_create(std::path::Path::new(&config.server.data_dir))
        .map_err(|e| bastion_store::StoreError::Config(format!("data directory {}: {e}", config.server.data_dir)))?;
    let labels = config.privacy.label_policy().map_err(bastion_store::StoreError::Config)?;
    let labelling = config.labelling_rules().map_err(bastion_store::StoreError::Config)?;
    let consent_base = config.privacy.consent_base().map_err(bastion_store::StoreError::Config)?;
    Ok(Arc::new(
        Engine::new(store, fhir_base(public_url), config.limits.clone(), pages)
            .with_privacy(labels, consent_base)
            .with_labelling(labelling)
            .with_masking(config.masking_rules().map_err(bastion_store::StoreError::Config)?),
    ))
}

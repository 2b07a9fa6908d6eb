//! Subcommands that talk to a running mesh or read config offline.

pub mod analyze;
pub mod config;
pub mod proxy_config;
pub mod secret;
pub mod status;

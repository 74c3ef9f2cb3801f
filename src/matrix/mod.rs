//! `klpx matrix`: one set of patches, several architectures, parallel output trees, and a report of
//! what differs between the architectures.

pub mod config;
pub mod progress;
pub mod report;
pub mod run;
pub mod verify;

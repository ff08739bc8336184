//! Unit and property tests of the organization lifecycle core.

#[allow(unused_imports)]
use super::*;

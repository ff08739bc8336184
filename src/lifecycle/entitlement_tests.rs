//! Unit and property tests of the entitlement lifecycle core.

use super::*;

//! Shared by the test files that need it (`mod support;`): the database and Redis servers the
//! backend tests run against ([`servers`]), and the reference gateway as a process
//! ([`gateway`]).

pub(crate) mod gateway;
pub(crate) mod servers;

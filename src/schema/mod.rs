//! The canonical wire types every part of the gateway speaks: requests, responses, chunks,
//! and the parsing and validation of request bodies.

pub(crate) mod de;
mod parse;
mod policy;
mod request;
mod response;
mod validate;

pub use de::Timestamp;
pub use parse::{parse_and_validate, parse_request};
pub use policy::*;
pub use request::*;
pub use response::*;
pub use validate::validate;

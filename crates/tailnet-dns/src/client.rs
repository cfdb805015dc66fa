//! The client side: a query to send and what a response says, for
//! `node.resolve` and `inferadb-mesh dns query`.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::IpAddr;

/// Why a query could not be built or a response not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The name is not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    Name(String),
    /// The response could not be decoded.
    #[error("malformed DNS response: {0}")]
    Malformed(String),
    /// The response answers another query (ID mismatch) or is a query.
    #[error("the response does not answer our query")]
    Mismatch,
    /// hickory could not encode the query.
    #[error("cannot encode the query: {0}")]
    Encode(String),
}

/// A query for `name` (trailing dot optional) of type `qtype`, recursion
/// desired, with EDNS0 advertising 1232 bytes.
pub fn build_query(name: &str, qtype: RecordType, id: u16) -> Result<Vec<u8>, ClientError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ClientError::Name(name.to_string()));
    }
    let mut n = Name::from_ascii(trimmed).map_err(|_| ClientError::Name(name.to_string()))?;
    n.set_fqdn(true);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(n, qtype));
    let mut e = Edns::new();
    e.set_max_payload(crate::NETSTACK_UDP_MAX);
    m.set_edns(e);
    m.to_vec().map_err(|e| ClientError::Encode(e.to_string()))
}

/// What a response says, in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    /// The response code.
    pub rcode: ResponseCode,
    /// TC: the answer did not fit; ask again over TCP.
    pub truncated: bool,
    /// AA: the server is authoritative for the name.
    pub authoritative: bool,
    /// The answer section: name, type, TTL, data (as `dig` prints it).
    pub answers: Vec<(String, RecordType, u32, String)>,
    /// The A and AAAA addresses of the answer section, in order.
    pub addresses: Vec<IpAddr>,
}

/// Reads a response to the query with ID `id`.
pub fn parse_response(bytes: &[u8], id: u16) -> Result<ParsedResponse, ClientError> {
    let m = Message::from_vec(bytes).map_err(|e| ClientError::Malformed(e.to_string()))?;
    if m.metadata.id != id || m.metadata.message_type != MessageType::Response {
        return Err(ClientError::Mismatch);
    }
    let mut addresses = Vec::new();
    let answers = m
        .answers
        .iter()
        .map(|r| {
            match &r.data {
                RData::A(a) => addresses.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => addresses.push(IpAddr::V6(a.0)),
                _ => {}
            }
            (
                r.name.to_ascii(),
                r.record_type(),
                r.ttl,
                r.data.to_string(),
            )
        })
        .collect();
    Ok(ParsedResponse {
        rcode: m.metadata.response_code,
        truncated: m.metadata.truncation,
        authoritative: m.metadata.authoritative,
        answers,
        addresses,
    })
}

//! The one place where Sundial turns values into bytes and back.
//!
//! Every encoded value starts with a format version byte, then bincode 2 (serde
//! mode, standard config). bincode is unmaintained, so it is confined here: a
//! later format only needs a new version byte and a branch in [`decode`].
//!
//! Storage *keys* are not encoded here: they are hand-built big-endian byte
//! strings (see `keys.rs`) so that RocksDB range scans come out in order.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format of everything encoded today.
pub const FORMAT_V1: u8 = 1;

/// A value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty buffer: no format version byte")]
    Empty,
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("malformed value: {0}")]
    Malformed(String),
    #[error("cannot encode value: {0}")]
    Encode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as `[FORMAT_V1, bincode...]`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_V1];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a value written by [`encode`]. Trailing bytes are an error: a value
/// that does not fill its buffer was written by something else.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        FORMAT_V1 => {
            let (value, read) = bincode::serde::decode_from_slice(body, config())
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            if read != body.len() {
                return Err(CodecError::Malformed(format!(
                    "{} trailing bytes",
                    body.len() - read
                )));
            }
            Ok(value)
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{sample_job, Job, JobId};
    use crate::types::{Op, Request};

    #[test]
    fn job_round_trips() {
        let job = sample_job();
        let bytes = encode(&job).expect("encode");
        assert_eq!(bytes[0], FORMAT_V1);
        let back: Job = decode(&bytes).expect("decode");
        assert_eq!(back, job);
    }

    #[test]
    fn request_round_trips() {
        let req = Request {
            ops: vec![
                Op::Submit(Box::new(sample_job())),
                Op::Cancel {
                    id: JobId::new(5, 1, 2),
                    at_ms: 9,
                },
            ],
        };
        let back: Request = decode(&encode(&req).expect("encode")).expect("decode");
        assert_eq!(back, req);
    }

    #[test]
    fn rejects_unknown_version_empty_and_trailing_bytes() {
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u32>(&[9, 1]),
            Err(CodecError::UnknownVersion(9))
        ));
        let mut bytes = encode(&7u32).expect("encode");
        bytes.push(0);
        assert!(matches!(decode::<u32>(&bytes), Err(CodecError::Malformed(_))));
    }
}

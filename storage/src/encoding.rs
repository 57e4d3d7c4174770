//! The byte layout of a version store (ARCHITECTURE §6), shared by every engine.
//!
//! ```text
//! version key  = 0x01 ‖ escape(user key) ‖ 0x00 0x01 ‖ !τ (u64 big-endian)
//! escape       = every 0x00 byte becomes 0x00 0xFF (FoundationDB tuple-layer style)
//! version value = 0x01 ‖ value  (put)   |   0x00  (tombstone)
//! meta key     = 0x00 ‖ name            (applied positions, format version)
//! latest key   = 0x02 ‖ escape(user key) ‖ 0x00 0x01
//! latest value = τ (u64 big-endian) ‖ version value   (the key's newest version)
//! ```
//! Latest entries are what the memory engine stores; the RocksDB engine derives them from
//! the newest version instead ([`newest_version_key`], [`latest_of_version`]).
//! Version keys sort by (user key, τ descending) for every pair of user keys, including
//! keys that are prefixes of each other: the terminator `00 01` sorts below any following
//! byte of a longer key (a real byte ≥ 01, or an escaped zero `00 FF`). Inverting τ puts the
//! newest version first. Decoding never panics on bad bytes.

use bytes::Bytes;
use journaldb_proto::Timestamp;

/// First byte of every version key.
pub const DATA_PREFIX: u8 = 0x01;
/// First byte of every metadata key (sorts before all data).
pub const META_PREFIX: u8 = 0x00;
/// First byte of every latest-version key (sorts after all data).
pub const LATEST_PREFIX: u8 = 0x02;
const TS_BYTES: usize = 8;

/// All versions of `key` start with this.
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 3 + TS_BYTES);
    out.push(DATA_PREFIX);
    for &b in key {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// The key under which `key`'s newest version is also kept, for point reads by `get`.
pub fn latest_key(key: &[u8]) -> Vec<u8> {
    let mut out = key_prefix(key);
    out[0] = LATEST_PREFIX;
    out
}

/// A latest-version value: τ, then the version's value.
pub fn encode_latest(ts: Timestamp, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = ts.as_nanos().to_be_bytes().to_vec();
    out.extend_from_slice(&encode_value(value));
    out
}

/// Splits a latest-version value into τ and the version's value (`None` for a tombstone).
pub fn decode_latest(v: Bytes) -> Result<(Timestamp, Option<Bytes>), MalformedValue> {
    if v.len() < TS_BYTES {
        return Err(MalformedValue);
    }
    let ts = u64::from_be_bytes(v[..TS_BYTES].try_into().map_err(|_| MalformedValue)?);
    Ok((Timestamp::from_nanos(ts), decode_value_at(v, TS_BYTES)?))
}

/// Whether `key` is a latest-version key.
pub fn is_latest_key(key: &[u8]) -> bool {
    key.first() == Some(&LATEST_PREFIX)
}

/// The version key that sorts first among the versions of the user key `latest` names (a
/// latest key): seeking it finds the key's newest version.
pub fn newest_version_key(latest: &[u8]) -> Option<Vec<u8>> {
    if !is_latest_key(latest) {
        return None;
    }
    let mut out = Vec::with_capacity(latest.len() + TS_BYTES);
    out.push(DATA_PREFIX);
    out.extend_from_slice(&latest[1..]);
    // τ = u64::MAX, inverted.
    out.extend_from_slice(&[0; TS_BYTES]);
    Some(out)
}

/// The latest-version value of a stored version: its τ, then its value as stored.
/// `None` if `version_key` is not a version key.
pub fn latest_of_version(version_key: &[u8], version_value: &[u8]) -> Option<Vec<u8>> {
    let prefix = version_prefix(version_key)?;
    let ts: [u8; TS_BYTES] = version_key[prefix.len()..].try_into().ok()?;
    let mut out = Vec::with_capacity(TS_BYTES + version_value.len());
    out.extend_from_slice(&(!u64::from_be_bytes(ts)).to_be_bytes());
    out.extend_from_slice(version_value);
    Some(out)
}

/// The key of the version of `key` at `ts`.
pub fn version_key(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&(!ts.as_nanos()).to_be_bytes());
    out
}

/// A key sorting after every version of `key` and before the next user key.
pub fn after_all_versions(key: &[u8]) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&[0xFF; TS_BYTES + 1]);
    out
}

/// The part of a version key naming its user key (`key_prefix` of it): everything but
/// the τ. `None` for anything that is not shaped like a version key. Engines use it for
/// prefix filters: all versions of one key share it.
pub fn version_prefix(k: &[u8]) -> Option<&[u8]> {
    if k.first() != Some(&DATA_PREFIX) || k.len() < 1 + 2 + TS_BYTES {
        return None;
    }
    Some(&k[..k.len() - TS_BYTES])
}

/// Splits a version key into user key and τ; `None` if it is not one.
pub fn decode_version_key(k: &[u8]) -> Option<(Vec<u8>, Timestamp)> {
    let (&first, rest) = k.split_first()?;
    if first != DATA_PREFIX || rest.len() < 2 + TS_BYTES {
        return None;
    }
    let (escaped, ts) = rest.split_at(rest.len() - TS_BYTES);
    let mut key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    loop {
        match escaped.get(i..)? {
            [0x00, 0x01] => break,
            [0x00, 0xFF, ..] => {
                key.push(0);
                i += 2;
            }
            [0x00, ..] => return None,
            [b, ..] => {
                key.push(*b);
                i += 1;
            }
            [] => return None,
        }
    }
    let ts = u64::from_be_bytes(ts.try_into().ok()?);
    Some((key, Timestamp::from_nanos(!ts)))
}

/// Encodes a version's value: `Some` is a put, `None` a tombstone.
pub fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(v) => {
            let mut out = Vec::with_capacity(1 + v.len());
            out.push(1);
            out.extend_from_slice(v);
            out
        }
        None => vec![0],
    }
}

/// A stored version value that is neither a put nor a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedValue;

/// Decodes a version's value (`Ok(None)` for a tombstone), taking ownership of the stored
/// bytes so the value is not copied.
pub fn decode_value_owned(v: Vec<u8>) -> Result<Option<Bytes>, MalformedValue> {
    decode_value_at(Bytes::from(v), 0)
}

/// Decodes the version value that starts at `offset` of `v`, without copying it.
fn decode_value_at(v: Bytes, offset: usize) -> Result<Option<Bytes>, MalformedValue> {
    match v.get(offset..) {
        Some([1, ..]) => Ok(Some(v.slice(offset + 1..))),
        Some([0]) => Ok(None),
        _ => Err(MalformedValue),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latest_entry_is_derived_from_the_newest_version() {
        let key = b"a\x00b";
        let newest = newest_version_key(&latest_key(key)).unwrap();
        assert_eq!(newest, version_key(key, Timestamp::from_nanos(u64::MAX)));
        assert!(
            newest < version_key(key, ts(7)),
            "sorts before every version of the key"
        );
        assert_eq!(newest_version_key(&version_key(key, ts(7))), None);
        let derived = latest_of_version(&version_key(key, ts(7)), &encode_value(Some(b"v")));
        assert_eq!(derived, Some(encode_latest(ts(7), Some(b"v"))));
        let tombstone = latest_of_version(&version_key(key, ts(9)), &encode_value(None));
        assert_eq!(tombstone, Some(encode_latest(ts(9), None)));
    }

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn version_keys_sort_by_user_key_then_newest_first() {
        let keys: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
        ];
        let mut encoded = Vec::new();
        for k in keys {
            for t in [30, 20, 10] {
                encoded.push(version_key(k, ts(t)));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded, "user keys ascending, τ descending");
        for k in keys {
            assert!(after_all_versions(k) > version_key(k, ts(0)));
        }
        for w in keys.windows(2) {
            assert!(after_all_versions(w[0]) < key_prefix(w[1]));
        }
    }

    #[test]
    fn version_keys_decode_and_garbage_is_refused() {
        for k in [&b""[..], b"\x00", b"x\x00\xffy"] {
            assert_eq!(
                decode_version_key(&version_key(k, ts(77))),
                Some((k.to_vec(), ts(77)))
            );
        }
        assert_eq!(decode_version_key(b"\x01abc"), None);
        assert_eq!(decode_version_key(b"\x01a\x00\x02\x00\x0112345678"), None);
        assert_eq!(
            decode_value_owned(encode_value(Some(b"v"))),
            Ok(Some(Bytes::from_static(b"v")))
        );
        assert_eq!(decode_value_owned(encode_value(None)), Ok(None));
        assert_eq!(decode_value_owned(b"\x07".to_vec()), Err(MalformedValue));
    }
}

//! The format's round trips and refusals: every flipped bit, every cut, every wrong field.

use super::*;

const AT: WriteAt = WriteAt {
    seq: 3,
    offset: 4096,
};

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    let data = if data.is_empty() {
        Bytes::new()
    } else {
        EntryBatch {
            first_lsn: Lsn::new(index),
            records: vec![Bytes::copy_from_slice(data)],
        }
        .encode()
    };
    Entry {
        index,
        term,
        data,
        ..Entry::default()
    }
}

fn state() -> LogState {
    let hard_state = HardState {
        term: 3,
        vote: 2,
        commit: 7,
        ..HardState::default()
    };
    let mut conf = ConfState::from((vec![1, 2, 3], vec![4]));
    conf.auto_leave = true;
    LogState {
        hard_state,
        applied: 6,
        truncated: (4, 2),
        first_lsn: Lsn::new(5),
        confs: vec![(0, ConfState::from((vec![1, 2, 3], vec![]))), (5, conf)],
    }
}

fn sample() -> Vec<u8> {
    let parts = [
        Part::Entries(vec![entry(5, 2, b"five"), entry(6, 3, b"")]),
        Part::State(state()),
        Part::Reset {
            index: 9,
            term: 3,
            first_lsn: 12,
        },
    ];
    let mut out = vec![];
    encode_write(&mut out, &parts.iter().collect::<Vec<_>>(), 512, AT);
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<ReadPart>, String> {
    let header = WriteHeader::decode(bytes).ok_or("no header")?;
    let end = WRITE_HEADER_BYTES + header.body_len as usize;
    let body = bytes.get(WRITE_HEADER_BYTES..end).ok_or("short")?;
    header.decode_body(body, AT)
}

#[test]
fn a_write_round_trips_block_aligned_and_entries_read_back_alone() {
    let out = sample();
    assert_eq!(out.len(), 512);
    let parts = decode(&out).unwrap();
    let ReadPart::Entries(spans) = &parts[0] else {
        panic!("{parts:?}")
    };
    assert_eq!((spans[0].index, spans[0].term, spans[1].index), (5, 2, 6));
    assert_eq!((spans[0].records, spans[1].records), (Some((5, 1)), None));
    for (span, data) in spans.iter().zip([&b"five"[..], b""]) {
        let at = WRITE_HEADER_BYTES + span.offset as usize;
        let bytes = Bytes::copy_from_slice(&out[at..at + span.len as usize]);
        let e = decode_entry(&bytes).unwrap();
        assert_eq!((e.index, e.term), (span.index, span.term));
        assert_eq!(e.data, entry(span.index, span.term, data).data);
    }
    assert_eq!(parts[1], ReadPart::State(state()));
    assert_eq!(
        parts[2],
        ReadPart::Reset {
            index: 9,
            term: 3,
            first_lsn: 12
        }
    );
}

#[test]
fn any_flipped_bit_in_a_write_is_detected() {
    let out = sample();
    let used = WRITE_HEADER_BYTES + WriteHeader::decode(&out).unwrap().body_len as usize;
    for bit in 0..used * 8 {
        let mut damaged = out.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(
            decode(&damaged).is_err(),
            "flipping bit {bit} went unnoticed"
        );
    }
}

#[test]
fn every_cut_of_a_body_is_refused_without_panicking() {
    let out = sample();
    let header = WriteHeader::decode(&out).unwrap();
    let body = &out[WRITE_HEADER_BYTES..WRITE_HEADER_BYTES + header.body_len as usize];
    // Without the checksum only the structure can refuse a cut: every cut is refused
    // but those between parts, which leave whole parts.
    let accepted: Vec<(usize, usize)> = (0..body.len())
        .filter_map(|cut| decode_parts(&body[..cut]).ok().map(|p| (cut, p.len())))
        .collect();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    let batch_len = entry(5, 2, b"five").data.len();
    assert_eq!(accepted[0], (1 + 4 + ENTRY_HEADER_BYTES * 2 + batch_len, 1));
    assert_eq!(accepted[1].1, 2);
    // A count no body can hold is refused before anything is allocated.
    let mut huge = vec![PART_ENTRIES];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_parts(&huge).unwrap_err().contains("exceeds"));
    assert!(decode_parts(&[9]).unwrap_err().contains("unknown part"));
}

#[test]
fn a_normal_entry_whose_data_is_not_a_batch_is_refused() {
    let mut bad = entry(5, 2, b"five");
    bad.data = Bytes::from_static(b"not a batch");
    let mut out = vec![];
    encode_write(&mut out, &[&Part::Entries(vec![bad])], 512, AT);
    assert!(decode(&out).unwrap_err().contains("entry 5"));
}

#[test]
fn a_state_out_of_order_is_refused() {
    let mut bad = state();
    bad.applied = 8; // past commit 7
    let mut out = vec![];
    encode_state(&mut out, &bad);
    let mut cur = Cursor {
        whole: &out,
        rest: &out,
    };
    assert!(decode_state(&mut cur).is_err());
}

#[test]
fn segment_headers_check_magic_version_crc_and_identity() {
    let h = SegmentHeader {
        block_size: 4096,
        seq: 3,
        id: LogId {
            cluster: 7,
            group: 8,
            replica: 9,
        },
    };
    let block = h.encode_block();
    assert_eq!(block.len(), 4096);
    assert_eq!(SegmentHeader::decode(&block), Ok(h));
    let mut v2 = block.clone();
    v2[8] = 2;
    assert_eq!(
        SegmentHeader::decode(&v2),
        Err(HeaderError::UnsupportedVersion(2))
    );
    for byte in [12, 20, 30, 47, 50] {
        let mut bad = block.clone();
        bad[byte] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(HeaderError::Invalid(_))
        ));
    }
    assert!(SegmentHeader::decode(&block[..51]).is_err());
}

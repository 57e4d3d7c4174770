//! Hand-written histories, one per anomaly the checker reports, and valid ones.

use super::*;

/// A history from compact lines: `process time type mops`, mops like `a1:5 r1:[5,6]`.
fn history(lines: &[&str]) -> Vec<Op> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut parts = l.split_whitespace();
            let process = parts.next().unwrap().parse().unwrap();
            let time = parts.next().unwrap().parse().unwrap();
            let kind = match parts.next().unwrap() {
                "invoke" => Kind::Invoke,
                "ok" => Kind::Ok,
                "fail" => Kind::Fail,
                _ => Kind::Info,
            };
            let value = parts
                .map(|m| {
                    let (f, rest) = m.split_at(1);
                    let (k, v) = rest.split_once(':').unwrap();
                    let k = k.parse().unwrap();
                    match f {
                        "a" => Mop::Append(k, v.parse().unwrap()),
                        _ if v == "?" => Mop::Read(k, None),
                        _ => Mop::Read(
                            k,
                            Some(
                                v.trim_matches(['[', ']'])
                                    .split(',')
                                    .filter(|e| !e.is_empty())
                                    .map(|e| e.parse().unwrap())
                                    .collect(),
                            ),
                        ),
                    }
                })
                .collect();
            Op {
                index: i as u64,
                kind,
                process,
                time,
                value,
            }
        })
        .collect()
}

fn kinds(lines: &[&str]) -> BTreeSet<AnomalyKind> {
    check(&history(lines)).kinds()
}

#[test]
fn a_serial_history_is_valid() {
    let report = check(&history(&[
        "0 1 invoke a1:1 r2:?",
        "0 2 ok a1:1 r2:[]",
        "1 3 invoke r1:? a2:1",
        "1 4 ok r1:[1] a2:1",
        "0 5 invoke r1:? r2:?",
        "0 6 ok r1:[1] r2:[1]",
    ]));
    assert!(report.is_valid(), "{:?}", report.anomalies);
    assert_eq!(report.committed, 3);
}

#[test]
fn g1a_aborted_read() {
    assert_eq!(
        kinds(&[
            "0 1 invoke a1:1",
            "0 2 fail a1:1",
            "1 3 invoke r1:?",
            "1 4 ok r1:[1]",
        ]),
        BTreeSet::from([AnomalyKind::G1a])
    );
}

#[test]
fn g1b_intermediate_read() {
    let found = kinds(&[
        "0 1 invoke a1:1 a1:2",
        "1 2 invoke r1:?",
        "1 3 ok r1:[1]",
        "0 4 ok a1:1 a1:2",
    ]);
    assert!(found.contains(&AnomalyKind::G1b), "{found:?}");
}

#[test]
fn g0_write_cycle() {
    let found = kinds(&[
        "0 1 invoke a1:1 a2:1",
        "1 1 invoke a1:2 a2:2",
        "0 2 ok a1:1 a2:1",
        "1 2 ok a1:2 a2:2",
        "2 3 invoke r1:? r2:?",
        "2 4 ok r1:[1,2] r2:[2,1]",
    ]);
    assert!(found.contains(&AnomalyKind::G0), "{found:?}");
}

#[test]
fn g1c_circular_information_flow() {
    // T1 reads T2's append to 2, T2 reads T1's append to 1.
    let found = kinds(&[
        "0 1 invoke a1:1 r2:?",
        "1 1 invoke a2:1 r1:?",
        "0 2 ok a1:1 r2:[1]",
        "1 2 ok a2:1 r1:[1]",
    ]);
    assert!(found.contains(&AnomalyKind::G1c), "{found:?}");
    assert!(!found.contains(&AnomalyKind::G0));
}

#[test]
fn g_single_read_skew() {
    // T1 reads 1 before T2's append and 2 after it.
    let found = kinds(&[
        "0 1 invoke r1:? r2:?",
        "1 1 invoke a1:1 a2:1",
        "1 2 ok a1:1 a2:1",
        "0 3 ok r1:[] r2:[1]",
    ]);
    assert_eq!(found, BTreeSet::from([AnomalyKind::GSingle]));
}

#[test]
fn lost_update() {
    let found = kinds(&[
        "0 1 invoke r1:? a1:1",
        "1 1 invoke r1:? a1:2",
        "0 2 ok r1:[] a1:1",
        "1 2 ok r1:[] a1:2",
        "2 3 invoke r1:?",
        "2 4 ok r1:[1,2]",
    ]);
    assert!(found.contains(&AnomalyKind::LostUpdate), "{found:?}");
}

#[test]
fn write_skew_is_allowed() {
    let report = check(&history(&[
        "0 1 invoke r1:? r2:? a1:1",
        "1 1 invoke r1:? r2:? a2:1",
        "0 2 ok r1:[] r2:[] a1:1",
        "1 2 ok r1:[] r2:[] a2:1",
        "2 3 invoke r1:? r2:?",
        "2 4 ok r1:[1] r2:[1]",
    ]));
    assert!(report.is_valid(), "{:?}", report.anomalies);
}

#[test]
fn a_stale_read_after_a_completed_commit_is_g_single_realtime() {
    let found = kinds(&[
        "0 1 invoke a1:1",
        "0 2 ok a1:1",
        "1 5 invoke r1:?",
        "1 6 ok r1:[]",
        "2 7 invoke r1:?",
        "2 8 ok r1:[1]",
    ]);
    assert_eq!(found, BTreeSet::from([AnomalyKind::GSingleRealtime]));
}

#[test]
fn the_same_stale_read_concurrent_with_the_commit_is_fine() {
    let report = check(&history(&[
        "0 1 invoke a1:1",
        "1 1 invoke r1:?",
        "1 2 ok r1:[]",
        "0 3 ok a1:1",
    ]));
    assert!(report.is_valid(), "{:?}", report.anomalies);
}

#[test]
fn incompatible_orders_and_duplicates() {
    let found = kinds(&[
        "0 1 invoke a1:1",
        "0 2 ok a1:1",
        "1 3 invoke a1:2",
        "1 4 ok a1:2",
        "2 5 invoke r1:?",
        "2 6 ok r1:[1,2]",
        "3 7 invoke r1:?",
        "3 8 ok r1:[2,1]",
        "4 9 invoke r1:?",
        "4 10 ok r1:[1,1]",
    ]);
    assert!(found.contains(&AnomalyKind::IncompatibleOrder), "{found:?}");
    assert!(found.contains(&AnomalyKind::Duplicate), "{found:?}");
}

#[test]
fn an_indeterminate_transaction_counts_once_its_write_is_seen() {
    // T1's outcome is unknown, but T2 read its append: it committed, and T2's reads
    // of key 2 then show read skew against it.
    let found = kinds(&[
        "0 1 invoke a1:1 a2:1",
        "0 2 info a1:1 a2:1",
        "1 3 invoke r2:? r1:?",
        "1 4 ok r2:[] r1:[1]",
    ]);
    assert_eq!(found, BTreeSet::from([AnomalyKind::GSingle]));
}

#[test]
fn an_indeterminate_transaction_that_takes_effect_after_its_client_gave_up_is_fine() {
    // T1's client gave up at 2 (`info`); its request was still in the network and took
    // effect after T2 read key 1 empty at 3..4; T3 then sees it. T2 missed a
    // transaction whose end it never saw: no real-time order binds T1 before T2.
    let found = kinds(&[
        "0 1 invoke a1:1",
        "0 2 info a1:1",
        "1 3 invoke r1:?",
        "1 4 ok r1:[]",
        "2 5 invoke r1:?",
        "2 6 ok r1:[1]",
    ]);
    assert_eq!(found, BTreeSet::new());
}

#[test]
fn an_indeterminate_transaction_still_follows_what_completed_before_it_began() {
    // Y completes before I is invoked (Y →rt I); Z, concurrent with Y, reads I's append
    // (I →wr Z) but not Y's (Z →rw Y): a cycle that closes only through the real-time
    // edge into the `info` transaction.
    let found = kinds(&[
        "2 1 invoke r1:? r2:?",
        "0 1 invoke a1:1",
        "0 2 ok a1:1",
        "1 3 invoke a2:1",
        "1 4 info a2:1",
        "2 5 ok r1:[] r2:[1]",
    ]);
    assert_eq!(found, BTreeSet::from([AnomalyKind::GSingleRealtime]));
}

#[test]
fn histories_parse_from_elle_json_lines_and_errors_name_the_line() {
    let text = r#"{"index":0,"type":"invoke","process":0,"time":1,"value":[["append",1,5],["r",2,null]]}
{"index":1,"type":"ok","process":0,"time":2,"value":[["append",1,5],["r",2,[3,4]]]}
"#;
    let ops = parse(text).unwrap();
    assert_eq!(ops.len(), 2);
    assert_eq!(
        ops[1].value,
        vec![Mop::Append(1, 5), Mop::Read(2, Some(vec![3, 4]))]
    );
    assert_eq!(ops[0].value[1], Mop::Read(2, None));
    let bad = parse("{\"index\":0}\n").unwrap_err();
    assert_eq!(bad.line, 1);
    let worse = parse(&format!("{text}not json\n")).unwrap_err();
    assert_eq!(worse.line, 3);
}

#[test]
fn reading_ones_own_append_then_another_appending_is_not_a_lost_update() {
    // Found by simulation seed 2: T1 appends 5 and reads its own write; T2 reads that
    // version and appends 6. Both "read the version of length 2", but T1's read came after
    // its own append.
    let report = check(&history(&[
        "0 1 invoke a1:4",
        "0 2 ok a1:4",
        "0 3 invoke a1:5 r1:?",
        "0 4 ok a1:5 r1:[4,5]",
        "1 5 invoke r1:? a1:6",
        "1 6 ok r1:[4,5] a1:6",
    ]));
    assert!(report.is_valid(), "{:?}", report.anomalies);
    // The same shape with the read before the first append is a lost update.
    let found = kinds(&[
        "0 1 invoke a1:4",
        "0 2 ok a1:4",
        "0 3 invoke r1:? a1:5",
        "1 3 invoke r1:? a1:6",
        "0 4 ok r1:[4] a1:5",
        "1 4 ok r1:[4] a1:6",
        "2 5 invoke r1:?",
        "2 6 ok r1:[4,5,6]",
    ]);
    assert!(found.contains(&AnomalyKind::LostUpdate), "{found:?}");
}

#[test]
fn a_stale_read_is_found_through_a_chain_of_real_time_edges() {
    // The append completes, four unrelated transactions run one after another, then a read
    // misses the append: the real-time path goes through all of them (the reduced graph
    // has no direct edge from the append to the read).
    let found = kinds(&[
        "0 1 invoke a1:1",
        "0 2 ok a1:1",
        "1 3 invoke a2:1",
        "1 4 ok a2:1",
        "1 5 invoke a2:2",
        "1 6 ok a2:2",
        "1 7 invoke a3:1",
        "1 8 ok a3:1",
        "2 9 invoke r1:?",
        "2 10 ok r1:[]",
        "3 11 invoke r1:?",
        "3 12 ok r1:[1]",
    ]);
    assert_eq!(found, BTreeSet::from([AnomalyKind::GSingleRealtime]));
}

#[test]
fn operations_written_as_json_lines_parse_back() {
    let ops = history(&[
        "0 1 invoke a1:1 r2:?",
        "0 2 ok a1:1 r2:[3,4]",
        "5 3 info a7:9",
    ]);
    let text: String = ops.iter().map(|o| o.to_json_line() + "\n").collect();
    assert!(text.starts_with(
        r#"{"index":0,"type":"invoke","process":0,"time":1,"value":[["append",1,1],["r",2,null]]}"#
    ));
    assert_eq!(parse(&text).unwrap(), ops);
}

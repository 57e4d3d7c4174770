//! `journaldb shell`: an interactive session over standard input. `begin` opens a
//! transaction that `get`, `put`, `del` and `scan` then use until `commit` or `rollback`;
//! outside one, each command runs in its own transaction (autocommit). Errors — conflicts
//! included — are answers, never crashes. With `--json`, every command gets exactly one
//! line of JSON: `{"ok":true,"value":…|null}` (`value_b64` for non-UTF-8),
//! `{"ok":true,"commit_ts":n}`, `{"ok":true,"rows":[…]}`, `{"ok":true}` or
//! `{"ok":false,"error":"Conflict","retryable":true,"message":"…"}`.
//!
//! On a terminal (and without `--json`) lines are read with line editing and an in-memory
//! history (rustyline: arrows, Ctrl-R, Ctrl-A/E…); the prompt shows whether a transaction
//! is open. Ctrl-C discards the line being typed; Ctrl-D or `exit` ends the session (an
//! open transaction is rolled back). Otherwise lines are read as they come.

use std::io::{BufRead, IsTerminal, Write};

use base64::Engine as _;
use bytes::Bytes;
use journaldb::{Error, ScanRange, Store, Transaction};
use serde_json::{Value, json};

/// One answer to one command.
pub enum Reply {
    Done,
    Value(Option<Bytes>),
    Committed(u64),
    Rows(Vec<(Bytes, Bytes)>),
    Failed(Error),
    Usage(String),
}

fn bytes_json(b: &[u8], field: &str) -> (String, Value) {
    match std::str::from_utf8(b) {
        Ok(s) => (field.to_owned(), json!(s)),
        Err(_) => (
            format!("{field}_b64"),
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

impl Reply {
    /// The `--json` line.
    pub fn to_json(&self) -> Value {
        match self {
            Reply::Done => json!({"ok": true}),
            Reply::Value(None) => json!({"ok": true, "value": null}),
            Reply::Value(Some(v)) => {
                let (field, value) = bytes_json(v, "value");
                let mut out = serde_json::Map::new();
                out.insert("ok".into(), json!(true));
                out.insert(field, value);
                Value::Object(out)
            }
            Reply::Committed(ts) => json!({"ok": true, "commit_ts": ts}),
            Reply::Rows(rows) => {
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|(k, v)| {
                        let mut row = serde_json::Map::new();
                        for (name, b) in [("key", k), ("value", v)] {
                            let (field, value) = bytes_json(b, name);
                            row.insert(field, value);
                        }
                        Value::Object(row)
                    })
                    .collect();
                json!({"ok": true, "rows": rows})
            }
            Reply::Failed(e) => json!({
                "ok": false,
                "error": e.kind_name(),
                "retryable": e.is_retryable(),
                "message": e.to_string(),
            }),
            Reply::Usage(m) => json!({
                "ok": false,
                "error": "InvalidArgument",
                "retryable": false,
                "message": m,
            }),
        }
    }

    /// The human-readable answer.
    pub fn to_text(&self) -> String {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Reply::Done => "ok".into(),
            Reply::Value(None) => "(nil)".into(),
            Reply::Value(Some(v)) => show(v),
            Reply::Committed(ts) => format!("committed at {ts}"),
            Reply::Rows(rows) => rows
                .iter()
                .map(|(k, v)| format!("{}\t{}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join("\n"),
            Reply::Failed(e) => format!("error: {e}"),
            Reply::Usage(m) => format!("error: {m}"),
        }
    }
}

/// Where the session's lines come from.
enum Input {
    /// A terminal: line editing and history.
    Editor(rustyline::DefaultEditor),
    /// A pipe or file: plain lines.
    Plain(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn new(json: bool) -> anyhow::Result<Input> {
        let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        Ok(if terminal && !json {
            Input::Editor(rustyline::DefaultEditor::new()?)
        } else {
            Input::Plain(std::io::stdin().lock().lines())
        })
    }

    /// The next line, `None` at end of input.
    fn next_line(&mut self, in_transaction: bool) -> anyhow::Result<Option<String>> {
        use rustyline::error::ReadlineError;
        match self {
            Input::Plain(lines) => Ok(lines.next().transpose()?),
            Input::Editor(editor) => {
                let prompt = if in_transaction {
                    "journaldb (tx)> "
                } else {
                    "journaldb> "
                };
                loop {
                    match editor.readline(prompt) {
                        Ok(line) => {
                            if !line.trim().is_empty() {
                                editor.add_history_entry(line.as_str())?;
                            }
                            return Ok(Some(line));
                        }
                        Err(ReadlineError::Interrupted) => continue,
                        Err(ReadlineError::Eof) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Runs the session until end of input or `exit`.
pub async fn run(db: &dyn Store, json: bool) -> anyhow::Result<()> {
    let mut tx: Option<Transaction> = None;
    let mut input = Input::new(json)?;
    let mut out = std::io::stdout().lock();
    while let Some(line) = input.next_line(tx.is_some())? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        let reply = execute(db, &mut tx, line).await;
        let text = if json {
            reply.to_json().to_string()
        } else {
            reply.to_text()
        };
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(())
}

async fn execute(db: &dyn Store, tx: &mut Option<Transaction>, line: &str) -> Reply {
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let key_value = || {
        rest.split_once(char::is_whitespace)
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
    };
    match (cmd, tx.is_some()) {
        ("begin", true) => Reply::Usage("a transaction is already open".into()),
        ("begin", false) => {
            *tx = Some(db.begin());
            Reply::Done
        }
        ("commit", _) => match tx.take() {
            Some(t) => match t.commit().await {
                Ok(info) => Reply::Committed(info.commit_ts.as_nanos()),
                Err(e) => Reply::Failed(e),
            },
            None => Reply::Usage("no open transaction (use begin)".into()),
        },
        ("rollback", _) => match tx.take() {
            Some(t) => {
                t.rollback();
                Reply::Done
            }
            None => Reply::Usage("no open transaction (use begin)".into()),
        },
        ("get", _) if !rest.is_empty() => {
            let result = match tx {
                Some(t) => t.get(rest).await,
                None => db.begin().get(rest).await,
            };
            result.map_or_else(Reply::Failed, Reply::Value)
        }
        ("put", _) => match key_value() {
            Some((k, v)) => write(db, tx, |t| t.put(k, v)).await,
            None => Reply::Usage("usage: put KEY VALUE".into()),
        },
        ("del", _) if !rest.is_empty() => {
            let key = rest.to_owned();
            write(db, tx, |t| t.delete(key)).await
        }
        ("scan", _) => {
            let mut args = rest.split_whitespace();
            let prefix = args.next().unwrap_or("");
            let limit = match args.next().map(str::parse::<usize>) {
                None => 100,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => return Reply::Usage("usage: scan [PREFIX [LIMIT]]".into()),
            };
            let range = ScanRange::prefix(prefix.as_bytes());
            let result = match tx {
                Some(t) => t.scan(&range, limit, false).await,
                None => db.begin().scan(&range, limit, false).await,
            };
            result.map_or_else(Reply::Failed, |page| Reply::Rows(page.rows))
        }
        _ => Reply::Usage(format!(
            "unknown command {line:?}; commands: begin, get KEY, put KEY VALUE, del KEY, scan [PREFIX [LIMIT]], commit, rollback, exit"
        )),
    }
}

/// Applies a write to the open transaction, or in a transaction of its own.
async fn write(
    db: &dyn Store,
    tx: &mut Option<Transaction>,
    apply: impl FnOnce(&mut Transaction) -> journaldb::Result<()>,
) -> Reply {
    match tx {
        Some(t) => apply(t).map_or_else(Reply::Failed, |()| Reply::Done),
        None => {
            let mut t = db.begin();
            if let Err(e) = apply(&mut t) {
                return Reply::Failed(e);
            }
            match t.commit().await {
                Ok(info) => Reply::Committed(info.commit_ts.as_nanos()),
                Err(e) => Reply::Failed(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_replies_have_the_documented_shapes() {
        let conflict = Reply::Failed(Error::Conflict {
            key: Bytes::from_static(b"k"),
        })
        .to_json();
        assert_eq!(conflict["ok"], json!(false));
        assert_eq!(conflict["error"], json!("Conflict"));
        assert_eq!(conflict["retryable"], json!(true));
        assert_eq!(
            Reply::Committed(7).to_json(),
            json!({"ok": true, "commit_ts": 7})
        );
        assert_eq!(
            Reply::Value(None).to_json(),
            json!({"ok": true, "value": null})
        );
        let binary = Reply::Value(Some(Bytes::from_static(&[0xff, 0x00]))).to_json();
        assert_eq!(binary, json!({"ok": true, "value_b64": "/wA="}));
    }
}

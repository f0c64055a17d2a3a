//! Server replies as Postfix's `smtp_chat_resp()` reads them: multi-line replies joined
//! with newlines, non-printable bytes shown as `?`, lines that are not `NNN-`/`NNN ` taken
//! as continuation lines, the enhanced status code (RFC 2034/3463) taken from the first
//! line when its class matches the reply code, else `X.0.0`; a reply without a three-digit
//! code is code 0 with status `5.5.0` (Postfix's "SAFETY! protocol error").
//!
//! Limits: each line keeps at most `line_length_limit` bytes (the rest of the line is read
//! and thrown away, with Postfix's warning `response longer than N`), the joined text stops
//! growing once it reaches that limit, and a reply of more than [`MAX_REPLY_LINES`] lines is
//! treated as a lost connection. A 10 MB line therefore costs 2 KB of memory.

use std::time::Duration;

use super::conn::{Conn, IoFail};

/// More continuation lines than this end the session (Postfix reads until the timeout).
pub const MAX_REPLY_LINES: usize = 10_000;

/// One server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code, 0 when the last line had none.
    pub code: u16,
    /// Enhanced status code: from the reply, else `2.0.0`/`4.0.0`/`5.0.0`, else `5.5.0`.
    pub dsn: String,
    /// All lines, joined with `\n`.
    pub text: String,
}

impl Reply {
    /// The text on one line (`translit(resp->str, "\n", " ")`).
    pub fn one_line(&self) -> String {
        self.text.replace('\n', " ")
    }
    /// The reply class digit (`code / 100`).
    pub fn class(&self) -> u16 {
        self.code / 100
    }
    /// The lines after the code and separator (EHLO keywords).
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n').map(|l| l.get(4..).unwrap_or(""))
    }
}

/// Length of a valid enhanced status code at the start of `s` (Postfix `dsn_valid()`):
/// `class.subject.detail`, class one of 2/4/5, subject and detail 1–3 digits, followed by
/// the end or white space.
pub fn dsn_valid(s: &str) -> usize {
    let b = s.as_bytes();
    if b.len() < 5 || !matches!(b[0], b'2' | b'4' | b'5') || b[1] != b'.' {
        return 0;
    }
    let mut i = 2;
    for part in 0..2 {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 3 {
            return 0;
        }
        if part == 0 {
            if i >= b.len() || b[i] != b'.' {
                return 0;
            }
            i += 1;
        }
    }
    if i < b.len() && !b[i].is_ascii_whitespace() {
        return 0;
    }
    i
}

/// Parse the lines of a reply (each without its line end), as [`read`] does.
pub fn parse(lines: &[String]) -> Reply {
    let text = lines.join("\n");
    let last = lines.last().map(String::as_str).unwrap_or("");
    let digits = last.bytes().take_while(u8::is_ascii_digit).count();
    let three = digits == 3 && matches!(last.as_bytes().get(3), None | Some(b' ') | Some(b'-'));
    reply_from(text, last, three)
}

fn reply_from(text: String, last: &str, three_digits: bool) -> Reply {
    if !three_digits {
        return Reply {
            code: 0,
            dsn: "5.5.0".into(),
            text,
        };
    }
    let code: u16 = last[..3].parse().unwrap_or(0);
    let first = last.as_bytes()[0];
    let dsn = if matches!(first, b'2' | b'4' | b'5') {
        let rest = last.get(4..).unwrap_or("").trim_start_matches(' ');
        let n = dsn_valid(rest);
        if n > 0 && rest.as_bytes()[0] == first {
            rest[..n].to_string()
        } else {
            format!("{}.0.0", first as char)
        }
    } else {
        "5.5.0".into()
    };
    Reply { code, dsn, text }
}

/// What the reader tells its caller besides the reply: warnings to log.
#[derive(Debug, Default)]
pub struct ReadNotes {
    pub too_long: Vec<String>,
    pub garbage: Vec<String>,
}

/// Read one reply within `timeout` (a deadline for the whole reply).
pub fn read(
    conn: &mut Conn,
    timeout: Duration,
    line_limit: usize,
    notes: &mut ReadNotes,
) -> Result<Reply, IoFail> {
    let deadline = std::time::Instant::now() + timeout;
    let mut text = String::new();
    for _ in 0..MAX_REPLY_LINES {
        let (raw, complete) = conn.read_line(line_limit, deadline)?;
        let line: String = raw
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        if !complete {
            notes.too_long.push(format!(
                "response longer than {line_limit}: {:.30}...",
                line
            ));
        }
        if text.len() < line_limit {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&line);
        }
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 3 {
            match line.as_bytes().get(3) {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(reply_from(text, &line, true)),
                _ => {}
            }
        }
        notes.garbage.push(format!("{line:.100}"));
    }
    Err(IoFail::Eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(dsn_valid("5.1.1 <u@x>"), 5);
        assert_eq!(dsn_valid("4.7.10"), 6);
        assert_eq!(dsn_valid("3.1.1 x"), 0);
        assert_eq!(dsn_valid("5.1234.1"), 0);
        assert_eq!(dsn_valid("5.1.1x"), 0);
        let r = parse(&["550 5.1.1 <u@example.net>: unknown".into()]);
        assert_eq!((r.code, r.dsn.as_str()), (550, "5.1.1"));
        let r = parse(&["550 4.1.1 mismatch".into()]);
        assert_eq!(r.dsn, "5.0.0");
        let r = parse(&["451 try later".into()]);
        assert_eq!(r.dsn, "4.0.0");
        let r = parse(&["354 go ahead".into()]);
        assert_eq!(r.dsn, "5.5.0");
        let r = parse(&["garbage".into()]);
        assert_eq!((r.code, r.dsn.as_str()), (0, "5.5.0"));
        let r = parse(&["250-first".into(), "250 2.0.0 second".into()]);
        assert_eq!(r.one_line(), "250-first 250 2.0.0 second");
        assert_eq!(r.dsn, "2.0.0");
    }
}

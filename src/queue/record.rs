//! Postfix's queue-file record format (`rec_put`/`rec_get` in Postfix's `global/record.c`):
//! each record is one type byte, the data length as a base-128 number (low seven bits first,
//! high bit set on every byte but the last), then the data. Postern writes and reads this
//! format so that `postcat` shows Postern's queue files and a swap back to Postfix keeps the
//! queue.

use std::fmt;

/// Record types Postern writes or reads (names as in Postfix's `global/rec_type.h`).
pub mod rec_type {
    /// Fixed-width size record: segment size, data offset, recipient count, qmgr options,
    /// content length, SMTPUTF8 flags.
    pub const SIZE: u8 = b'C';
    /// Arrival time, `"seconds microseconds"`.
    pub const TIME: u8 = b'T';
    /// Named attribute, `name=value`.
    pub const ATTR: u8 = b'A';
    /// Envelope sender (empty for `<>`).
    pub const FROM: u8 = b'S';
    /// Original recipient (before rewriting).
    pub const ORCP: u8 = b'O';
    /// Recipient still to be delivered.
    pub const RCPT: u8 = b'R';
    /// Recipient already delivered (or bounced): `R` overwritten in place by the queue manager.
    pub const DONE: u8 = b'D';
    /// Start of message content.
    pub const MESG: u8 = b'M';
    /// A content line, followed by a line end when delivered.
    pub const NORM: u8 = b'N';
    /// A piece of a long content line; the next record continues the same line.
    pub const CONT: u8 = b'L';
    /// Start of extracted information (after the content).
    pub const XTRA: u8 = b'X';
    /// End of the queue file.
    pub const END: u8 = b'E';
    /// Pointer to a record elsewhere in the file (Postfix's edit mechanism).
    pub const PTR: u8 = b'p';
    /// Delay-warning time (written by Postfix's cleanup when `delay_warning_time` is set).
    pub const WARN: u8 = b'W';
    /// Full name of the sender (`sendmail -F`).
    pub const FULL: u8 = b'F';
    /// Message flags.
    pub const FLGS: u8 = b'f';
}

/// Append one record to `out`.
pub fn put(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.push(kind);
    let mut len = data.len();
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(data);
}

/// One record read from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the type byte in the file.
    pub offset: u64,
    pub kind: u8,
    pub data: &'a [u8],
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The buffer ends inside a record: the file was cut short.
    Truncated { offset: u64 },
    /// The length field is absurd (more than [`MAX_RECORD`] bytes or more than 5 length bytes).
    BadLength { offset: u64 },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { offset } => {
                write!(f, "record at offset {offset} is cut short")
            }
            RecordError::BadLength { offset } => {
                write!(f, "record at offset {offset} has an invalid length")
            }
        }
    }
}

/// The largest record the reader accepts (64 MB). Postern writes lines of at most
/// `line_length_limit` bytes and short attributes; a larger length means a damaged file.
pub const MAX_RECORD: usize = 1 << 26;

/// Iterate over the records of `buf`.
pub fn records(buf: &[u8]) -> Records<'_> {
    Records { buf, pos: 0 }
}

pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let offset = start as u64;
        let kind = self.buf[start];
        let mut pos = start + 1;
        let mut len: usize = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(pos) else {
                self.pos = self.buf.len();
                return Some(Err(RecordError::Truncated { offset }));
            };
            pos += 1;
            len |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
            if shift >= 35 {
                self.pos = self.buf.len();
                return Some(Err(RecordError::BadLength { offset }));
            }
        }
        if len > MAX_RECORD {
            self.pos = self.buf.len();
            return Some(Err(RecordError::BadLength { offset }));
        }
        let Some(data) = self.buf.get(pos..pos + len) else {
            self.pos = self.buf.len();
            return Some(Err(RecordError::Truncated { offset }));
        };
        self.pos = pos + len;
        Some(Ok(Record { offset, kind, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 16383, 16384, 100_000] {
            let data = vec![b'x'; n];
            let mut out = Vec::new();
            put(&mut out, rec_type::NORM, &data);
            let recs: Vec<_> = records(&out).collect();
            assert_eq!(recs.len(), 1);
            let r = recs[0].as_ref().expect("record");
            assert_eq!(r.kind, b'N');
            assert_eq!(r.data.len(), n);
        }
    }

    #[test]
    fn truncated_record_is_reported() {
        let mut out = Vec::new();
        put(&mut out, rec_type::NORM, b"hello world");
        out.truncate(out.len() - 3);
        let r: Vec<_> = records(&out).collect();
        assert_eq!(r, vec![Err(RecordError::Truncated { offset: 0 })]);
    }
}

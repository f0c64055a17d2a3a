//! Non-delivery notifications: Postfix's `bounce(8)` text and RFC 3464 report for recipients
//! that failed permanently, queued as a new message from `<>` to the sender.
//!
//! The message follows Postfix 3.7's default template word for word (recorded from a real
//! bounce): `From: Mail Delivery System <MAILER-DAEMON@$myhostname>`, `Subject: Undelivered
//! Mail Returned to Sender`, a `multipart/report; report-type=delivery-status` with the
//! notification text, the `message/delivery-status` part (`Reporting-MTA`,
//! `X-Postfix-Queue-ID`, `X-Postfix-Sender`, `Arrival-Date`, then per recipient
//! `Final-Recipient`, `Original-Recipient`, `Action: failed`, `Status`, `Diagnostic-Code:
//! X-Postfix; …`) and the returned message (`message/rfc822`, or its headers only with
//! DSN `RET=HDRS`).
//!
//! Recipient lines and the `Remote-MTA`/`Diagnostic-Code` fields are wrapped at 79 columns
//! with a 4-blank indent, as bounce(8)'s `line_wrap` does; smtp(8) failures carry
//! `Remote-MTA: dns; host` and `Diagnostic-Code: smtp; reply`.
//!
//! Double bounces ([`Audience::Postmaster`]): when a `<>` message fails and
//! `notify_classes` includes `bounce`, a "Postmaster Copy: Undelivered Mail" (no boiler-plate,
//! the failed message's headers only) goes from `double_bounce_sender` to
//! `2bounce_notice_recipient`; otherwise (Postfix's default `notify_classes = resource,
//! software`) the failed bounce is dropped, as Postfix drops it.
//!
//! Known limits (XXX): no other `notify_classes` copies to postmaster, no delay warnings, no
//! `bounce_template_file`.

use std::io::Write;
use std::time::SystemTime;

use crate::queue::cleanup::Origin;
use crate::queue::file;
use crate::queue::header::{mail_date, quote_822_local};
use crate::queue::{Envelope, Queue, QueuedMessage, Recipient};

/// One failed recipient.
pub struct Failed {
    pub recipient: String,
    pub original: String,
    pub dsn: String,
    pub text: String,
    /// `Remote-MTA: dns; …` (smtp(8) failures where a host answered).
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code: smtp; …` (the remote reply); `X-Postfix; text` otherwise.
    pub diagnostic: Option<String>,
}

/// Who gets the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The message's sender (a single bounce, from `<>`).
    Sender,
    /// `2bounce_notice_recipient` (a double bounce, from `double_bounce_sender`): the
    /// failed recipients and the headers of the bounce that failed, without the
    /// boiler-plate text (bounce_notify_service.c).
    Postmaster,
}

/// A delay warning instead of a failure notice (Postfix's delay template).
#[derive(Debug, Clone, Copy)]
pub struct Delay {
    /// `$delay_warning_time_hours`, `$maximal_queue_lifetime_days`.
    pub warn_hours: u64,
    pub lifetime_days: u64,
    /// `Will-Retry-Until:` (arrival + `maximal_queue_lifetime`).
    pub retry_until: SystemTime,
}

/// Postfix's `line_wrap(str, 79, 4, …)` as bounce(8) prints recipient lines and DSN
/// fields: break at blanks before a line would exceed 79 columns, indent continuations by 4.
pub fn line_wrap(s: &str) -> String {
    const LENGTH: usize = 79;
    const INDENT: usize = 4;
    let mut out = String::new();
    let mut curr_len = LENGTH;
    let mut curr_indent = 0;
    let mut start = 0usize;
    let bytes = s.as_bytes();
    let mut word = 0usize;
    let mut first = true;
    let is_space = |b: u8| b == b' ' || b == b'\t';
    loop {
        let next_space = word
            + bytes[word..]
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(bytes.len() - word);
        if word > start && next_space - start > curr_len {
            let mut line_len = word - start;
            while line_len > 0 && is_space(bytes[start + line_len - 1]) {
                line_len -= 1;
            }
            out.push_str(&" ".repeat(curr_indent));
            out.push_str(&s[start..start + line_len]);
            out.push('\n');
            while word < bytes.len() && is_space(bytes[word]) {
                word += 1;
            }
            if first {
                curr_indent += INDENT;
                curr_len -= INDENT;
                first = false;
            }
            start = word;
        }
        if next_space >= bytes.len() {
            break;
        }
        word = next_space + 1;
    }
    let mut line_len = bytes.len() - start;
    while line_len > 0 && is_space(bytes[start + line_len - 1]) {
        line_len -= 1;
    }
    out.push_str(&" ".repeat(curr_indent));
    out.push_str(&s[start..start + line_len]);
    out.push('\n');
    out
}

/// The notification's content (LF line ends, without the headers cleanup adds).
pub fn notification(
    msg: &QueuedMessage,
    failed: &[Failed],
    myhostname: &str,
    now: SystemTime,
    audience: Audience,
    to: &str,
    delay: Option<Delay>,
) -> Vec<u8> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let boundary = format!("{}.{secs}/{myhostname}", msg.queue_id);
    let postmaster = audience == Audience::Postmaster;
    let mut o = Vec::new();
    let _ = write!(
        o,
        "Date: {date}\nFrom: Mail Delivery System <MAILER-DAEMON@{myhostname}>\n\
         Subject: {subject}\nTo: {to}\nAuto-Submitted: {auto}\n\
         MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\nContent-Transfer-Encoding: 8bit\n\n\
         This is a MIME-encapsulated message.\n\n\
         --{boundary}\nContent-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
        date = mail_date(now),
        subject = match (postmaster, delay.is_some()) {
            (true, false) => "Postmaster Copy: Undelivered Mail",
            (false, false) => "Undelivered Mail Returned to Sender",
            (true, true) => "Postmaster Warning: Delayed Mail",
            (false, true) => "Delayed Mail (still being retried)",
        },
        auto = if postmaster {
            "auto-generated"
        } else {
            "auto-replied"
        },
        to = quote_822_local(to),
    );
    if let (false, Some(d)) = (postmaster, delay) {
        // The delay template's boiler-plate.
        let _ = write!(
            o,
            "This is the mail system at host {myhostname}.\n\n\
             ####################################################################\n\
             # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\
             ####################################################################\n\n\
             Your message could not be delivered for more than {} hour(s).\n\
             It will be retried until it is {} day(s) old.\n\n\
             For further assistance, please send mail to postmaster.\n\n\
             If you do so, please include this problem report. You can\n\
             delete your own text from the attached returned message.\n\n\
             \x20                  The mail system\n",
            d.warn_hours, d.lifetime_days,
        );
    } else if !postmaster {
        // The failure template's boiler-plate (not sent in postmaster copies).
        let _ = write!(
            o,
            "This is the mail system at host {myhostname}.\n\n\
             I'm sorry to have to inform you that your message could not\n\
             be delivered to one or more recipients. It's attached below.\n\n\
             For further assistance, please send mail to postmaster.\n\n\
             If you do so, please include this problem report. You can\n\
             delete your own text from the attached returned message.\n\n\
             \x20                  The mail system\n",
        );
    }
    for f in failed {
        // bounce_recipient_log: a blank line, then the wrapped `<rcpt>: reason`.
        o.push(b'\n');
        o.extend_from_slice(
            line_wrap(&format!("<{}>: {}", quote_822_local(&f.recipient), f.text)).as_bytes(),
        );
    }
    let _ = write!(
        o,
        "\n--{boundary}\nContent-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; {myhostname}\nX-Postfix-Queue-ID: {id}\n\
         X-Postfix-Sender: rfc822; {sender}\nArrival-Date: {arrival}\n",
        id = msg.queue_id,
        sender = quote_822_local(&msg.sender),
        arrival = mail_date(msg.arrival),
    );
    for f in failed {
        let _ = write!(
            o,
            "\nFinal-Recipient: rfc822; {}\nOriginal-Recipient: rfc822;{}\nAction: {}\n\
             Status: {}\n",
            quote_822_local(&f.recipient),
            f.original,
            if delay.is_some() { "delayed" } else { "failed" },
            f.dsn,
        );
        if let Some(mta) = &f.remote_mta {
            o.extend_from_slice(line_wrap(&format!("Remote-MTA: dns; {mta}")).as_bytes());
        }
        let diag = match &f.diagnostic {
            Some(d) => format!("Diagnostic-Code: smtp; {d}"),
            None => format!("Diagnostic-Code: X-Postfix; {}", f.text),
        };
        o.extend_from_slice(line_wrap(&diag).as_bytes());
        if let Some(d) = delay {
            let _ = writeln!(o, "Will-Retry-Until: {}", mail_date(d.retry_until));
        }
    }
    let headers_only = postmaster || delay.is_some() || msg.ret_flags & file::DSN_RET_HDRS != 0;
    let _ = write!(
        o,
        "\n--{boundary}\nContent-Description: {}\nContent-Type: {}\n\
         Content-Transfer-Encoding: 8bit\n\nReturn-Path: <{}>\n",
        if headers_only {
            "Undelivered Message Headers"
        } else {
            "Undelivered Message"
        },
        if headers_only {
            "text/rfc822-headers"
        } else {
            "message/rfc822"
        },
        msg.sender
    );
    if headers_only {
        let end = msg
            .content
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| i + 1)
            .unwrap_or(msg.content.len());
        o.extend_from_slice(&msg.content[..end]);
    } else {
        o.extend_from_slice(&msg.content);
    }
    if !o.ends_with(b"\n") {
        o.push(b'\n');
    }
    let _ = write!(o, "\n--{boundary}--\n");
    o
}

/// Queue the notification for `msg` into `incoming/`; returns the new queue ID.
/// `audience` Sender: from `<>` to the message's sender; Postmaster: from `from` (the
/// `double_bounce_sender` address) to `to` (`2bounce_notice_recipient`).
pub fn send(
    queue: &Queue,
    msg: &QueuedMessage,
    failed: &[Failed],
    audience: Audience,
    from: &str,
    to: &str,
    delay: Option<Delay>,
) -> std::io::Result<String> {
    let s = queue.settings();
    let now = SystemTime::now();
    let id = queue.new_queue_id_unfiled();
    let (from, to) = match audience {
        Audience::Sender => ("", msg.sender.as_str()),
        Audience::Postmaster => (from, to),
    };
    let content = notification(msg, failed, &s.myhostname, now, audience, to, delay);
    let env = Envelope {
        sender: from.to_string(),
        recipients: vec![Recipient {
            address: to.to_string(),
            ..Recipient::default()
        }],
        body_type: Some("8BITMIME".into()),
        ..Envelope::default()
    };
    let res = s
        .build_file(id.as_str(), &env, Origin::Notice, &content, now)
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|built| {
            crate::queue::store::write_durable(
                &s.queue_directory.join("incoming"),
                id.as_str(),
                &built.data,
                crate::queue::store::OWN,
                None,
            )?;
            Ok(built.message_id)
        });
    queue.release_queue_id(&id);
    let mid = res?;
    crate::queue::trigger::wake(&s.queue_directory, crate::queue::trigger::SCAN_INCOMING);
    if let Some(mid) = mid {
        crate::log::info(&s.cleanup_ident, &format!("{id}: message-id={mid}"));
    }
    Ok(id.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::line_wrap;

    #[test]
    fn wraps_like_postfix_line_wrap() {
        assert_eq!(line_wrap("<a@b>: short"), "<a@b>: short\n");
        let long = "<nobody@example.net>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)";
        assert_eq!(
            line_wrap(long),
            "<nobody@example.net>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1\n    \
             <nobody@example.net>: Recipient address rejected: User unknown in local\n    \
             recipient table (in reply to RCPT TO command)\n"
        );
        // A word longer than the line is not cut.
        let w = "x".repeat(100);
        assert_eq!(
            line_wrap(&format!("a {w} b")),
            format!("a\n    {w}\n    b\n")
        );
    }
}

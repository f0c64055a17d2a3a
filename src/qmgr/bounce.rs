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
//! Known limits (XXX): no double bounces (a bounce of `<>` mail is only logged, Postfix sends
//! it to `2bounce_notice_recipient`), no `notify_classes` copies to postmaster, no delay
//! warnings, no `bounce_template_file`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::queue::file::{self, CleanupRules, FileRecipient, FileSpec};
use crate::queue::header::{mail_date, quote_822_local};
use crate::queue::{Queue, QueuedMessage};

/// One failed recipient.
pub struct Failed {
    pub recipient: String,
    pub original: String,
    pub dsn: String,
    pub text: String,
}

/// The notification's content (LF line ends, without the headers cleanup adds).
pub fn notification(
    msg: &QueuedMessage,
    failed: &[Failed],
    myhostname: &str,
    now: SystemTime,
) -> Vec<u8> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let boundary = format!("{}.{secs}/{myhostname}", msg.queue_id);
    let mut o = Vec::new();
    let _ = write!(
        o,
        "Date: {date}\nFrom: Mail Delivery System <MAILER-DAEMON@{myhostname}>\n\
         Subject: Undelivered Mail Returned to Sender\nTo: {to}\nAuto-Submitted: auto-replied\n\
         MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\nContent-Transfer-Encoding: 8bit\n\n\
         This is a MIME-encapsulated message.\n\n\
         --{boundary}\nContent-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
         This is the mail system at host {myhostname}.\n\n\
         I'm sorry to have to inform you that your message could not\n\
         be delivered to one or more recipients. It's attached below.\n\n\
         For further assistance, please send mail to postmaster.\n\n\
         If you do so, please include this problem report. You can\n\
         delete your own text from the attached returned message.\n\n\
         \x20                  The mail system\n\n",
        date = mail_date(now),
        to = quote_822_local(&msg.sender),
    );
    for f in failed {
        let _ = writeln!(o, "<{}>: {}", quote_822_local(&f.recipient), f.text);
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
            "\nFinal-Recipient: rfc822; {}\nOriginal-Recipient: rfc822;{}\nAction: failed\n\
             Status: {}\nDiagnostic-Code: X-Postfix; {}\n",
            quote_822_local(&f.recipient),
            f.original,
            f.dsn,
            f.text
        );
    }
    let headers_only = msg.ret_flags & file::DSN_RET_HDRS != 0;
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
pub fn send(queue: &Queue, msg: &QueuedMessage, failed: &[Failed]) -> std::io::Result<String> {
    let s = queue.settings();
    let now = SystemTime::now();
    let id = queue.new_queue_id();
    let content = notification(msg, failed, &s.myhostname, now);
    let received = vec![
        format!("Received: by {} ({})", s.myhostname, s.mail_name),
        format!("\tid {}; {}", id.as_str(), mail_date(now)),
    ];
    let cleaned = file::cleanup_content(
        &content,
        &CleanupRules {
            received,
            add_missing: true,
            queue_id: id.as_str(),
            long_ids: s.long_queue_ids,
            myhostname: &s.myhostname,
            sender: "",
            arrival: now,
            header_size_limit: s.header_size_limit.max(1),
            undisclosed_recipients_header: &s.undisclosed_recipients_header,
        },
    );
    let data = file::build(&FileSpec {
        queue_id: id.as_str(),
        arrival: now,
        sender: "",
        recipients: vec![FileRecipient {
            address: &msg.sender,
            orcpt: format!("rfc822;{}", quote_822_local(&msg.sender)),
            notify: 0,
        }],
        rewrite_local: true,
        envid: None,
        ret: None,
        encoding: Some("8bit"),
        smtputf8: 0,
        attrs: vec![("log_message_origin", "local".to_string())],
        lines: cleaned.lines,
        line_length_limit: s.line_length_limit,
    });
    let res = write_complete(&s.queue_directory.join("incoming"), id.as_str(), &data);
    queue.release_queue_id(&id);
    res?;
    if let Some(mid) = cleaned.message_id {
        crate::log::info("postfix/cleanup", &format!("{id}: message-id={mid}"));
    }
    Ok(id.as_str().to_string())
}

/// Write a queue file durably under a temporary name, mark it complete and rename it.
fn write_complete(dir: &Path, id: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".tmp.{}.{id}", std::process::id()));
    let run = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(id))?;
        std::fs::File::open(dir)?.sync_all()
    };
    let r = run();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

//! Postfix's `cleanup(8)` for every writer of a new queue file: a message and its
//! envelope made into the bytes of a queue file ([`QueueSettings::build_file`]), the one
//! place the SMTP server ([`super::Queue::commit`]), `sendmail` (its file for `maildrop/`,
//! also through `postdrop`) and the bounce and delay notices of the queue manager build one,
//! and where pickup rebuilds a maildrop file another user wrote ([`maildrop_copy`]): the
//! only callers of the record layout's writer ([`super::file::build`]).
//! Writing it is apart: the group commit of [`super::writer`] or the durable write of
//! [`super::store`].
//!
//! What differs between the writers is where the message comes from ([`Origin`]):
//!
//! | | SMTP client | local submission | notice |
//! |---|---|---|---|
//! | `Received:` | from the client's names and addresses | as given (`from userid N`, or `sendmail -bs`'s) | `by $myhostname ($mail_name)` |
//! | missing `Message-Id:`, `Date:`, `From:` added | for `local_header_rewrite_clients` or with `always_add_missing_headers` | yes | yes |
//! | attributes | the client's (`log_client_*`, `client_*`, SASL) | `log_message_origin=local` | `log_message_origin=local` |
//! | `message_size_limit` | enforced | enforced | not enforced |
//! | `hopcount_limit` | enforced (smtpd's `554 5.4.0`) | not enforced | not enforced |
//! | delay warning record (`delay_warning_time`) | yes | yes | no |
//!
//! The rest is the same for all: cleanup's header pass ([`super::file::cleanup_content`]),
//! duplicate recipients (same address, ORCPT and NOTIFY) stored once, an ORCPT of
//! `rfc822;ADDRESS` when none was given, SMTPUTF8, `BODY=`, DSN `RET=` and `ENVID=` from the
//! envelope, and (in the daemons, not in `sendmail`) a warning when headers were cut at
//! `header_size_limit`.

use std::collections::HashSet;
use std::time::SystemTime;

use super::{ClientInfo, Envelope, QueueError, QueueSettings, file, header};

/// Where a message comes from, which decides what cleanup adds and enforces (see the
/// module header).
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// An SMTP client (smtpd).
    Smtp(&'a ClientInfo),
    /// Submitted on this host (`sendmail`); the `Received:` lines as given.
    Local { received: &'a [String] },
    /// A notification the mail system makes itself (bounce, delay warning).
    Notice,
}

/// A queue file built, not written yet.
#[derive(Debug)]
pub struct Built {
    pub data: Vec<u8>,
    /// The `Message-Id:` value seen or added, for cleanup's `message-id=` log line.
    pub message_id: Option<String>,
}

impl QueueSettings {
    /// `message_size_limit` (0: none) applied to `size` bytes of content.
    pub fn check_message_size(&self, size: u64) -> Result<(), QueueError> {
        let limit = self.message_size_limit;
        if limit > 0 && size > limit {
            Err(QueueError::MessageTooBig { size, limit })
        } else {
            Ok(())
        }
    }

    /// The queue file for `message` (content as received: CRLF or LF line ends) under
    /// queue ID `id`, arrived at `arrival`, from `origin` (no I/O but the truncation
    /// warning).
    pub fn build_file(
        &self,
        id: &str,
        env: &Envelope,
        origin: Origin<'_>,
        message: &[u8],
        arrival: SystemTime,
    ) -> Result<Built, QueueError> {
        if !matches!(origin, Origin::Notice) {
            self.check_message_size(message.len() as u64)?;
        }
        if env.recipients.is_empty() {
            return Err(QueueError::NoRecipients);
        }
        let date = header::mail_date(arrival);
        let (received, add_missing) = match origin {
            Origin::Smtp(client) => {
                let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
                let received = header::received_lines(&header::ReceivedInfo {
                    helo: client.helo.as_deref(),
                    hostname: &client.hostname,
                    addr: client.addr,
                    tls: client.tls.as_deref().filter(|_| self.tls_received_header),
                    sasl_username: client
                        .sasl_username
                        .as_deref()
                        .filter(|_| self.sasl_authenticated_header),
                    myhostname: &self.myhostname,
                    mail_name: &self.mail_name,
                    protocol: &client.protocol,
                    queue_id: id,
                    recipients: &rcpts,
                    date: &date,
                });
                (
                    received,
                    client.local_submission || self.always_add_missing_headers,
                )
            }
            Origin::Local { received } => (received.to_vec(), true),
            Origin::Notice => (
                vec![
                    format!("Received: by {} ({})", self.myhostname, self.mail_name),
                    format!("\tid {id}; {date}"),
                ],
                true,
            ),
        };
        let cleaned = self.cleanup(message, id, &env.sender, arrival, received, add_missing);
        if let Origin::Smtp(_) = origin
            && cleaned.hops > self.hopcount_limit
        {
            return Err(QueueError::TooManyHops {
                hops: cleaned.hops,
                limit: self.hopcount_limit,
            });
        }
        // Logged by the daemons; `sendmail` is a user's command, whose output scripts read
        // (Postfix's sendmail does not report it either: its cleanup daemon logs).
        if cleaned.truncated_headers > 0 && !matches!(origin, Origin::Local { .. }) {
            crate::log::warning(
                &self.cleanup_ident,
                &format!(
                    "{id}: {} header(s) truncated at header_size_limit {}",
                    cleaned.truncated_headers, self.header_size_limit
                ),
            );
        }
        // Duplicate recipients are stored once (cleanup's duplicate filter).
        let mut seen = HashSet::new();
        let mut recipients = Vec::with_capacity(env.recipients.len());
        for r in &env.recipients {
            let notify = r.notify.as_deref().map(file::notify_mask).unwrap_or(0);
            let orcpt = r
                .orcpt
                .clone()
                .unwrap_or_else(|| format!("rfc822;{}", header::quote_822_local(&r.address)));
            if seen.insert((r.address.clone(), orcpt.clone(), notify)) {
                recipients.push(file::FileRecipient {
                    address: &r.address,
                    orcpt,
                    notify,
                });
            }
        }
        let mut smtputf8 = 0;
        if env.smtputf8 {
            smtputf8 |= file::SMTPUTF8_FLAG_REQUESTED;
            if cleaned.header_8bit {
                smtputf8 |= file::SMTPUTF8_FLAG_HEADER;
            }
            if !env.sender.is_ascii() {
                smtputf8 |= file::SMTPUTF8_FLAG_SENDER;
            }
            if env.recipients.iter().any(|r| !r.address.is_ascii()) {
                smtputf8 |= file::SMTPUTF8_FLAG_RECIPIENT;
            }
        }
        let encoding = match env.body_type.as_deref() {
            Some(b) if b.eq_ignore_ascii_case("8BITMIME") => Some("8bit"),
            Some(b) if b.eq_ignore_ascii_case("7BIT") => Some("7bit"),
            _ => None,
        };
        let ret = match env.ret.as_deref() {
            Some(r) if r.eq_ignore_ascii_case("FULL") => Some(file::DSN_RET_FULL),
            Some(r) if r.eq_ignore_ascii_case("HDRS") => Some(file::DSN_RET_HDRS),
            _ => None,
        };
        let mut attrs = match origin {
            Origin::Smtp(client) => client_attrs(client),
            Origin::Local { .. } | Origin::Notice => {
                vec![("log_message_origin", "local".to_string())]
            }
        };
        if let Some(size) = env.size_hint {
            // Not a Postfix attribute; kept for the queue manager's statistics.
            attrs.push(("postern_size_hint", size.to_string()));
        }
        // Postfix's cleanup writes the delay-warning record for locally submitted mail too.
        let warn_time =
            (self.delay_warning_time > 0 && !matches!(origin, Origin::Notice)).then(|| {
                arrival
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    + self.delay_warning_time
            });
        let data = file::build(&file::FileSpec {
            queue_id: id,
            arrival,
            sender: &env.sender,
            recipients,
            rewrite_local: add_missing,
            envid: env.envid.as_deref(),
            ret,
            encoding,
            smtputf8,
            attrs,
            lines: cleaned.lines,
            line_length_limit: self.line_length_limit,
            warn_time,
        });
        Ok(Built {
            data,
            message_id: cleaned.message_id,
        })
    }

    /// cleanup's content rules for one message, filled from these settings: `received`
    /// goes first, missing headers are added when `add_missing`.
    fn cleanup(
        &self,
        message: &[u8],
        queue_id: &str,
        sender: &str,
        arrival: SystemTime,
        received: Vec<String>,
        add_missing: bool,
    ) -> file::Cleaned {
        file::cleanup_content(
            message,
            &file::CleanupRules {
                received,
                add_missing,
                queue_id,
                long_ids: self.long_queue_ids,
                myhostname: &self.myhostname,
                sender,
                arrival,
                header_size_limit: self.header_size_limit.max(1),
                undisclosed_recipients_header: &self.undisclosed_recipients_header,
            },
        )
    }
}

/// A maildrop file written by someone other than `mail_owner` (any local user can hand
/// postdrop a file of records), rebuilt for the queue from what a user may say, as Postfix's
/// pickup keeps only the records a submission carries: arrival time, sender, the
/// recipients not already marked done (with their DSN fields), DSN ENVID/RET, the body's
/// encoding and SMTPUTF8, the delay warning time (`warn_time`, when not 0) and the content
/// as it is (the submitter's cleanup pass made it); `rewrite_context=local` and
/// `log_message_origin=local`, as for any local submission ([`Origin::Local`]). Everything
/// else is dropped without a word (measured against Postfix 3.7.11's pickup with a file
/// planted in maildrop/: forged `client_address`, `sasl_username` and
/// `rewrite_context=remote` attributes and a `D` recipient vanish, the Received header says
/// `from userid N`, nothing is logged): client and SASL attributes that would show in logs
/// and headers, content filters, redirects, delivered marks.
pub fn maildrop_copy(m: &file::QueuedMessage, warn_time: Option<u64>) -> Vec<u8> {
    let recipients: Vec<file::FileRecipient<'_>> = m
        .recipients
        .iter()
        .filter(|r| !r.done)
        .map(|r| file::FileRecipient {
            address: &r.address,
            orcpt: r
                .orcpt
                .clone()
                .unwrap_or_else(|| format!("rfc822;{}", r.address)),
            notify: r.notify_flags,
        })
        .collect();
    let mut lines: Vec<Vec<u8>> = m
        .content
        .split(|&c| c == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    if m.content.ends_with(b"\n") || m.content.is_empty() {
        lines.pop();
    }
    let encoding = match m.encoding.as_deref() {
        Some("7bit") => Some("7bit"),
        Some("8bit") => Some("8bit"),
        _ => None,
    };
    file::build(&file::FileSpec {
        queue_id: &m.queue_id,
        arrival: m.arrival,
        sender: &m.sender,
        recipients,
        rewrite_local: true,
        envid: m.envid.as_deref(),
        ret: (m.ret_flags != 0).then_some(m.ret_flags),
        encoding,
        smtputf8: m.smtputf8,
        attrs: vec![("log_message_origin", "local".to_string())],
        lines,
        line_length_limit: usize::MAX,
        warn_time: warn_time.filter(|&w| w > 0),
    })
}

/// The queue file attributes Postfix's smtpd records for its client.
fn client_attrs(client: &ClientInfo) -> Vec<(&'static str, String)> {
    let addr = header::plain_addr(client.addr);
    let addr_s = addr.to_string();
    let mut attrs: Vec<(&'static str, String)> = vec![
        ("log_client_name", client.hostname.clone()),
        ("log_client_address", addr_s.clone()),
        ("log_client_port", client.port.to_string()),
        (
            "log_message_origin",
            format!("{}[{}]", client.hostname, addr_s),
        ),
    ];
    if let Some(h) = &client.helo {
        attrs.push(("log_helo_name", h.clone()));
    }
    let protocol = base_protocol(&client.protocol);
    attrs.push(("log_protocol_name", protocol.clone()));
    attrs.push(("client_name", client.hostname.clone()));
    attrs.push(("reverse_client_name", client.hostname.clone()));
    attrs.push(("client_address", addr_s));
    attrs.push(("client_port", client.port.to_string()));
    if let Some(h) = &client.helo {
        attrs.push(("helo_name", h.clone()));
    }
    attrs.push(("protocol_name", protocol));
    attrs.push((
        "client_address_type",
        if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        }
        .to_string(),
    ));
    if let Some(m) = &client.sasl_method {
        attrs.push(("sasl_method", m.clone()));
    }
    if let Some(u) = &client.sasl_username {
        attrs.push(("sasl_username", u.clone()));
    }
    attrs
}

/// The protocol name smtpd records in the queue file's attributes: the session's `SMTP` or
/// `ESMTP`, without the `UTF8` prefix and `S`/`A` suffixes that only the `Received:` header
/// carries (seen with Postfix 3.7: `with UTF8SMTPS` in Received, `protocol_name=ESMTP`).
fn base_protocol(p: &str) -> String {
    if p.starts_with("UTF8") || p.starts_with("ESMTP") {
        "ESMTP".into()
    } else if p.starts_with("SMTP") {
        "SMTP".into()
    } else {
        p.to_string()
    }
}

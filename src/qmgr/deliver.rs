//! One message delivered: each pending recipient rewritten, routed and handed to its
//! agent, the outcome logged and marked done in the queue file, bounces, delay warnings,
//! and the file removed or deferred.

use super::*;

/// Postfix's delay formatting: two significant decimals below 10 s, whole seconds above.
pub fn fmt_delay(d: f64) -> String {
    if d >= 10.0 {
        return format!("{:.0}", d);
    }
    let s = format!("{:.2}", d);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

pub(super) fn secs(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One final result for a recipient of the queue file, as its log line reports it.
pub(super) struct Done {
    o: Outcome,
    relay: String,
    ident: String,
    started: SystemTime,
    finished: SystemTime,
    /// smtp(8): connection setup and transmission times (`delays=…/…/c/d`).
    smtp_times: Option<(Duration, Duration)>,
    remote_mta: Option<String>,
    diagnostic: Option<String>,
    /// smtp(8): earlier uses of the connection (`conn_use=N+1` when not 0).
    reuse_count: u32,
}

impl Done {
    fn new(o: Outcome, relay: &str, ident: &str, started: SystemTime) -> Done {
        Done {
            o,
            relay: relay.to_string(),
            ident: ident.to_string(),
            started,
            finished: SystemTime::now(),
            smtp_times: None,
            remote_mta: None,
            diagnostic: None,
            reuse_count: 0,
        }
    }
}

/// smtp(8) recipients of one message sharing (service, next-hop): (pending index, address).
pub(super) type SmtpGroup = ((String, String), Vec<(usize, String)>);

/// A pending recipient of the queue file and what became of it.
pub(super) struct Pending<'a> {
    r: &'a crate::queue::QueuedRecipient,
    /// The queued address, qualified (before canonical mapping).
    addr: String,
    orig: String,
    done: Vec<Done>,
    /// Already marked done in the queue file.
    marked: bool,
    /// Not attempted: its destination was busy (the message is postponed).
    postponed: bool,
}

/// Whether deliveries for one local recipient are gathered into one request (group
/// commit, [`local_client::deliver`]): only when users' mailboxes are mbox files, where the
/// batch shares one lock hold and one fsync. A batch is delivered by one worker of the
/// local delivery process, one message after the other: for `mailbox_command`, that
/// measured slower than two deliveries side by side (issue 18), so they go one per request
/// as before. So do Maildir deliveries (`home_mailbox` ending in `/`): their files were
/// fsynced one after the other in a batch, and with them fsynced side by side
/// ([`crate::mailbox::deliver_maildir_batch`]) a batch still measured no faster than two
/// deliveries side by side (`scripts/bench-cpu maildir`, README): one batch per recipient
/// is with the local delivery process at a time, where unbatched two are, and messages
/// put aside (all of them when a backlog is taken up) come back one per freed slot, so
/// they gather nothing. virtual(8) writes each message at once.
fn batches(s: &QmgrSettings, virtual_: bool) -> bool {
    !virtual_ && s.local.mailbox_command.is_empty() && !s.local.home_mailbox.ends_with('/')
}

/// Deliver what is pending in one active queue file, then remove or defer it. A message
/// whose only undelivered recipients wait for a busy local or virtual destination (all its
/// `*_destination_concurrency_limit` slots taken, e.g. by deliveries waiting for a locked
/// mailbox) stays in `active/` and is returned as postponed (the destination key and its
/// limit), to be handed to a worker again when a slot frees: no worker waits for it.
pub(super) fn process(s: &QmgrSettings, path: &Path) -> Option<(String, usize)> {
    let id = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let activated = SystemTime::now();
    let mut msg = match read_queue_file(path) {
        Ok(m) => m,
        Err(QueueFileError::Corrupt(e)) => {
            log::warning(&s.ident_qmgr, &format!("{id}: {e}; moved to corrupt"));
            let _ = Store::new(&s.queue_directory).corrupt(path, &id);
            return None;
        }
        Err(e) => {
            log::warning(&s.ident_qmgr, &format!("{id}: {e}"));
            return None;
        }
    };
    // cleanup's canonical mapping of the sender (sender_canonical_maps, then
    // canonical_maps): what is logged, used for Return-Path and bounced to. When a table
    // cannot answer, every recipient is deferred (Postfix's cleanup does not accept the
    // message until it can).
    let sender_problem = match s.canonical(
        &id,
        &[
            ("sender_canonical_maps", &s.sender_canonical_maps),
            ("canonical_maps", &s.canonical_maps),
        ],
        &msg.sender,
    ) {
        Ok(a) => {
            msg.sender = a;
            None
        }
        Err(text) => Some(text),
    };
    log::info(
        &s.ident_qmgr,
        &format!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            msg.sender,
            msg.message_size,
            msg.recipients.len()
        ),
    );
    let expired = {
        let life = if msg.sender.is_empty() {
            s.bounce_queue_lifetime
        } else {
            s.maximal_queue_lifetime
        };
        msg.arrival.elapsed().map(|a| a > life).unwrap_or(false)
    };
    let mut pending: Vec<Pending> = msg
        .recipients
        .iter()
        .filter(|r| !r.done)
        .map(|r| {
            let addr = s.qualify(&r.address);
            let orig = r.original.clone().unwrap_or_else(|| addr.clone());
            Pending {
                r,
                addr,
                orig,
                done: Vec::new(),
                marked: false,
                postponed: false,
            }
        })
        .collect();
    // smtp(8) deliveries, grouped by (service, next-hop): (pending index, address).
    let mut groups: Vec<SmtpGroup> = Vec::new();
    let pending_count = pending.len();
    // The first busy local/virtual destination met, when a recipient was put off for it.
    let mut postponed: Option<(String, usize)> = None;
    for (i, p) in pending.iter_mut().enumerate() {
        let started = SystemTime::now();
        let orig = p.orig.clone();
        let outcome = |to: &str, status: Status, dsn: &str, text: String| Outcome {
            to: to.to_string(),
            orig_to: (orig != to).then(|| orig.clone()),
            status,
            dsn: dsn.into(),
            text,
        };
        // A table that cannot answer defers the recipient, logged by the role Postfix
        // gives it (error(8) for resolver failures, as Postfix 3.7 logs them).
        let defer = |to: &str, text: String| {
            Done::new(
                outcome(to, Status::Deferred, "4.3.0", text),
                "none",
                &s.ident_error,
                started,
            )
        };
        if let Some(text) = &sender_problem {
            p.done.push(defer(&p.addr, text.clone()));
            continue;
        }
        // cleanup's canonical mapping (recipient_canonical_maps, then canonical_maps).
        let addr = match s.canonical(
            &id,
            &[
                ("recipient_canonical_maps", &s.recipient_canonical_maps),
                ("canonical_maps", &s.canonical_maps),
            ],
            &p.addr,
        ) {
            Ok(a) => a,
            Err(text) => {
                p.done.push(defer(&p.addr, text));
                continue;
            }
        };
        let targets = match s.virtual_expand(&id, &addr) {
            Ok(t) => t,
            Err(text) => {
                p.done.push(defer(&addr, text));
                continue;
            }
        };
        // Only a recipient with one target is put off when its destination is busy: one
        // of several (an alias expansion) waits for its slot, so that the others are not
        // delivered again when the message comes back.
        let single = targets.len() == 1;
        for t in targets {
            // The recipient as trivial-rewrite resolves it is the one delivered to (Postfix's
            // qmgr replaces the address with the resolver's): `user%other@here`,
            // `other!user@here` and `"user@other"@here` go to `user@other`. A resolver
            // failure is left to the resolve below, which defers.
            let mut rewrite_warnings = Vec::new();
            let t = s
                .resolver
                .rewrite(&t, &mut rewrite_warnings)
                .map_or(t, |r| r.recipient);
            for w in rewrite_warnings {
                match w.strip_prefix("error: ") {
                    Some(e) => log::error(&s.ident_trivial_rewrite, e),
                    None => log::warning(&s.ident_trivial_rewrite, &w),
                }
            }
            let domain = t.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let (Ok(relocated), Ok(transport)) = (s.relocated(&t), s.transport(&t)) else {
                p.done.push(defer(&t, "address resolver failure".into()));
                continue;
            };
            if let Some(new) = relocated {
                // trivial-rewrite's resolve: the error transport, as Postfix words it.
                p.done.push(Done::new(
                    outcome(
                        &t,
                        Status::Bounced,
                        "5.1.6",
                        format!("User has moved to {new}"),
                    ),
                    "none",
                    &s.ident_error,
                    started,
                ));
                continue;
            }
            let mut resolve_warnings = Vec::new();
            let route = s.resolver.resolve(&t, transport, &mut resolve_warnings);
            for w in resolve_warnings {
                match w.strip_prefix("error: ") {
                    Some(e) => log::error(&s.ident_trivial_rewrite, e),
                    None => log::warning(&s.ident_trivial_rewrite, &w),
                }
            }
            match route {
                route::Route::Failed => {
                    p.done.push(defer(&t, "address resolver failure".into()));
                }
                route::Route::Discard(nh) => {
                    // discard(8): the next-hop is the text (the domain when empty).
                    let nh = if nh.is_empty() {
                        domain.to_string()
                    } else {
                        nh
                    };
                    p.done.push(Done::new(
                        outcome(&t, Status::Sent, "2.0.0", nh),
                        "none",
                        &s.ident_discard,
                        started,
                    ));
                }
                route::Route::Error(nh) => {
                    let (dsn, text) = error_text(&nh, "Address is undeliverable", '5');
                    p.done.push(Done::new(
                        outcome(&t, Status::Bounced, &dsn, text),
                        "none",
                        &s.ident_error,
                        started,
                    ));
                }
                route::Route::Retry(nh) => {
                    let (dsn, text) = error_text(&nh, "Address is undeliverable", '4');
                    p.done.push(Done::new(
                        outcome(&t, Status::Deferred, &dsn, text),
                        "none",
                        &s.ident_retry,
                        started,
                    ));
                }
                route::Route::Local | route::Route::Virtual => {
                    let virtual_ = matches!(route, route::Route::Virtual);
                    let (key, limit) = if virtual_ {
                        (
                            format!("virtual:{}", t.to_ascii_lowercase()),
                            s.virtual_concurrency,
                        )
                    } else {
                        (
                            format!("local:{}", t.to_ascii_lowercase()),
                            s.local_concurrency,
                        )
                    };
                    let agent = if virtual_ {
                        local_server::Agent::Virtual
                    } else {
                        local_server::Agent::Local
                    };
                    let mut slot = s.limiter.try_acquire(&key, limit);
                    // No free slot: join the batch gathering for this destination, if any
                    // (group commit, [`local_client::join`]), else wait as before.
                    let joined = match slot {
                        None if local_client::connected() && batches(s, virtual_) => {
                            local_client::join(&key, agent, &id, p.r.offset, &t)
                        }
                        _ => None,
                    };
                    if slot.is_none() && joined.is_none() {
                        if single {
                            p.postponed = true;
                            postponed.get_or_insert((key, limit));
                            continue;
                        }
                        slot = Some(s.limiter.acquire(key.clone(), limit));
                    }
                    let _slot = slot;
                    let outcomes = if let Some(o) = joined {
                        o
                    } else if local_client::connected() {
                        // The local delivery process may wait for a mailbox lock: this
                        // worker does not count meanwhile.
                        let _parked = Parked::enter();
                        local_client::deliver(
                            &key,
                            agent,
                            batches(s, virtual_),
                            &id,
                            p.r.offset,
                            &t,
                        )
                    } else if virtual_ {
                        let _parked = Parked::enter();
                        crate::delivery::virtual_delivery::deliver(
                            &s.virtual_,
                            &msg,
                            &t,
                            Some(&p.orig),
                        )
                    } else {
                        let _parked = Parked::enter();
                        local::deliver(&s.local, &msg, &t, Some(&p.orig))
                    };
                    let (relay, ident) = if virtual_ {
                        ("virtual", &s.ident_virtual)
                    } else {
                        ("local", &s.ident_local)
                    };
                    for o in outcomes {
                        p.done.push(Done::new(o, relay, ident, started));
                    }
                }
                route::Route::Smtp { service, nexthop } => {
                    let key = (service, nexthop);
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push((i, t.clone())),
                        None => groups.push((key, vec![(i, t.clone())])),
                    }
                }
                route::Route::Unavailable(tr) => {
                    // Postfix defers mail for a transport whose service it cannot reach.
                    p.done.push(Done::new(
                        outcome(
                            &t,
                            Status::Deferred,
                            "4.3.0",
                            format!("mail transport unavailable: Postern has no delivery agent for transport \"{tr}\""),
                        ),
                        "none",
                        &s.ident_qmgr,
                        started,
                    ));
                }
            }
        }
        // A recipient delivered here (no smtp part, nothing deferred or bounced) is marked
        // done at once when others follow, so a crash later in this message does not deliver
        // it again. The last one is not: removing the file ends it (one fsync less per
        // message), and a kept file gets its marks below.
        let more = pending_count > i + 1 || !groups.is_empty();
        let in_smtp = groups.iter().any(|(_, m)| m.iter().any(|(j, _)| *j == i));
        if more
            && !in_smtp
            && !p.done.is_empty()
            && p.done.iter().all(|d| d.o.status == Status::Sent)
        {
            let mut failed_mark = Vec::new();
            mark_done(s, path, &id, p, &mut failed_mark);
            p.marked = failed_mark.is_empty();
        }
    }
    for ((service, nexthop), members) in groups {
        let started = SystemTime::now();
        let smtp = s.smtp_settings(&service);
        let jobs: Vec<crate::delivery::smtp::RcptJob> = members
            .iter()
            .map(|(i, t)| {
                let r = pending[*i].r;
                crate::delivery::smtp::RcptJob {
                    address: t.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: r.notify(),
                    original: Some(pending[*i].orig.clone()),
                }
            })
            .collect();
        let _slot = s.limiter.acquire(
            format!("{service}:{}", nexthop.to_ascii_lowercase()),
            s.smtp_concurrency,
        );
        let results = crate::delivery::smtp::deliver(smtp, &msg, &nexthop, &jobs);
        let finished = SystemTime::now();
        for (k, (i, t)) in members.into_iter().enumerate() {
            let p = &mut pending[i];
            let Some(res) = results.get(k) else {
                p.done.push(Done::new(
                    Outcome {
                        to: t.clone(),
                        orig_to: (p.orig != t).then(|| p.orig.clone()),
                        status: Status::Deferred,
                        dsn: "4.3.0".into(),
                        text: "smtp delivery agent returned no result".into(),
                    },
                    "none",
                    &smtp.ident,
                    started,
                ));
                continue;
            };
            p.done.push(Done {
                o: Outcome {
                    to: t.clone(),
                    orig_to: (p.orig != t).then(|| p.orig.clone()),
                    status: res.status.clone(),
                    dsn: res.dsn.clone(),
                    text: res.text.clone(),
                },
                relay: res.relay.clone(),
                ident: smtp.ident.clone(),
                started,
                finished,
                smtp_times: Some((res.conn_setup, res.transmission)),
                remote_mta: res.remote_mta.clone(),
                diagnostic: res.diagnostic.clone(),
                reuse_count: res.reuse_count,
            });
        }
    }
    // Log each result; mark recipients whose every result is final. Bounced recipients are
    // marked only after their notification is queued (bounce(8) deletes them from the queue
    // file after sending, so a crash in between repeats the bounce rather than losing it).
    let mut deferred: Vec<defer::DeferEntry> = Vec::new();
    let mut failed: Vec<bounce::Failed> = Vec::new();
    let mut mark_after_bounce: Vec<u64> = Vec::new();
    // Final recipients not marked yet: marked only if the file is kept.
    let mut mark_later: Vec<u64> = Vec::new();
    for p in &pending {
        if p.postponed {
            continue;
        }
        let mut any_deferred = false;
        let mut any_bounced = false;
        for d in &p.done {
            let o = &d.o;
            let (status, dsn, text) = match o.status {
                Status::Deferred if expired => {
                    (Status::Bounced, format!("5{}", &o.dsn[1..]), o.text.clone())
                }
                _ => (o.status.clone(), o.dsn.clone(), o.text.clone()),
            };
            let word = match status {
                Status::Sent => "sent",
                Status::Deferred => {
                    any_deferred = true;
                    "deferred"
                }
                Status::Bounced => {
                    any_bounced = true;
                    "bounced"
                }
            };
            let orig = o
                .orig_to
                .as_ref()
                .map(|x| format!("orig_to=<{x}>, "))
                .unwrap_or_default();
            let (c, dd) = match d.smtp_times {
                Some((c, t)) => (fmt_delay(c.as_secs_f64()), fmt_delay(t.as_secs_f64())),
                None => ("0".to_string(), fmt_delay(secs(d.started, d.finished))),
            };
            // Postfix log_adhoc(): `, conn_use=N` after the relay of a reused connection.
            let conn_use = if d.reuse_count > 0 {
                format!(", conn_use={}", d.reuse_count + 1)
            } else {
                String::new()
            };
            log::info(
                &d.ident,
                &format!(
                    "{id}: to=<{}>, {orig}relay={}{conn_use}, delay={}, delays={}/{}/{c}/{dd}, dsn={dsn}, status={word} ({text})",
                    o.to,
                    d.relay,
                    fmt_delay(secs(msg.arrival, d.finished)),
                    fmt_delay(secs(msg.arrival, activated)),
                    fmt_delay(secs(activated, d.started)),
                ),
            );
            if status == Status::Bounced {
                failed.push(bounce::Failed {
                    recipient: o.to.clone(),
                    original: p
                        .r
                        .orcpt
                        .as_deref()
                        .map(|x| x.trim_start_matches("rfc822;").to_string())
                        .unwrap_or_else(|| o.orig_to.clone().unwrap_or_else(|| o.to.clone())),
                    dsn: dsn.clone(),
                    text: text.clone(),
                    remote_mta: d.remote_mta.clone(),
                    diagnostic: d.diagnostic.clone(),
                });
            }
            if status == Status::Deferred {
                deferred.push(defer::DeferEntry {
                    recipient: o.to.clone(),
                    status: dsn,
                    reason: text,
                });
            }
        }
        if any_deferred {
            continue;
        }
        if any_bounced {
            mark_after_bounce.push(p.r.offset);
            continue;
        }
        if !p.marked {
            mark_later.push(p.r.offset);
        }
    }
    if expired {
        log::info(
            &s.ident_qmgr,
            &format!(
                "{id}: from=<{}>, status=expired, returned to sender",
                msg.sender
            ),
        );
    }
    if !failed.is_empty() {
        if send_bounce(s, &id, &msg, &failed) {
            mark_later.append(&mut mark_after_bounce);
        } else {
            // Postfix's bounce client failure: the recipients stay and are tried again.
            for p in pending
                .iter()
                .filter(|p| mark_after_bounce.contains(&p.r.offset))
            {
                deferred.push(defer::DeferEntry {
                    recipient: p.addr.clone(),
                    status: "4.3.0".into(),
                    reason: "bounce or trace service failure".into(),
                });
            }
        }
    }
    if !deferred.is_empty() {
        for p in pending.iter().filter(|p| mark_later.contains(&p.r.offset)) {
            mark_done(s, path, &id, p, &mut deferred);
        }
    }
    if deferred.is_empty()
        && let Some(pp) = postponed
    {
        // The file stays in active/ for the recipients put off: the others are marked
        // done now (a failure to mark defers the message instead).
        for p in pending.iter().filter(|p| mark_later.contains(&p.r.offset)) {
            mark_done(s, path, &id, p, &mut deferred);
        }
        if deferred.is_empty() {
            return Some(pp);
        }
    }
    // XXX Recipients put off for a busy destination in a message that is deferred for
    // others go with it to deferred/ and are tried at its next attempt.
    if deferred.is_empty() {
        match Store::new(&s.queue_directory).delete(path, &id) {
            Ok(()) => log::info(&s.ident_qmgr, &format!("{id}: removed")),
            Err(e) => log::warning(
                &s.ident_qmgr,
                &format!("{id}: remove {}: {e}", path.display()),
            ),
        }
    } else {
        delay_warning(s, path, &id, &msg, &deferred);
        defer_message(s, path, &id, &msg, &deferred);
    }
    None
}

/// Postfix's delay warning: once the queue file's warning time (`W` record, written when
/// `delay_warning_time` is set) has passed, tell the sender which recipients are still
/// delayed, then zero the record so the warning is sent once.
pub(super) fn delay_warning(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    msg: &QueuedMessage,
    deferred: &[defer::DeferEntry],
) {
    if msg.sender.is_empty() || msg.sender.eq_ignore_ascii_case(&s.double_bounce_sender) {
        return;
    }
    let Some((offset, when)) = crate::queue::file::warn_record(path) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if when == 0 || now < when {
        return;
    }
    let Some(queue) = QUEUE.get() else { return };
    let rcpts: Vec<bounce::Failed> = deferred
        .iter()
        .map(|d| {
            let r = msg.recipients.iter().find(|r| r.address == d.recipient);
            bounce::Failed {
                recipient: d.recipient.clone(),
                original: r
                    .and_then(|r| r.orcpt.as_deref())
                    .map(|x| x.trim_start_matches("rfc822;").to_string())
                    .unwrap_or_else(|| d.recipient.clone()),
                dsn: d.status.clone(),
                text: d.reason.clone(),
                remote_mta: None,
                diagnostic: None,
            }
        })
        .collect();
    let delay = bounce::Delay {
        warn_hours: s.delay_warning_time.as_secs() / 3600,
        lifetime_days: s.maximal_queue_lifetime.as_secs() / 86400,
        retry_until: msg.arrival + s.maximal_queue_lifetime,
    };
    match bounce::send(
        queue,
        msg,
        &rcpts,
        bounce::Audience::Sender,
        "",
        "",
        Some(delay),
    ) {
        Ok(new) => {
            log::info(
                &s.ident_bounce,
                &format!("{id}: sender delay notification: {new}"),
            );
            if let Err(e) = crate::queue::file::clear_warn_record(path, offset) {
                log::warning(&s.ident_qmgr, &format!("{id}: {e}"));
            }
        }
        Err(e) => log::warning(
            &s.ident_bounce,
            &format!("{id}: cannot queue the delay notification: {e}"),
        ),
    }
}

/// Mark `p` done in the queue file; without the mark it would be delivered again, so a
/// failure keeps the file (deferred) and says so loudly.
pub(super) fn mark_done(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    p: &Pending,
    deferred: &mut Vec<defer::DeferEntry>,
) {
    if let Err(e) = mark_recipient_done(path, p.r.offset) {
        log::error(
            &s.ident_qmgr,
            &format!("{id}: cannot mark recipient done: {e}"),
        );
        deferred.push(defer::DeferEntry {
            recipient: p.addr.clone(),
            status: "4.3.0".into(),
            reason: format!("queue file update error: {e}"),
        });
    }
}

/// error(8)/retry(8) next-hop text: an optional leading `d.s.n` status, then the text.
/// As Postfix 3.7's error(8) logs it, a bounce keeps a leading 5.x.x status and turns a
/// 4.x.x one into 5.0.0; retry(8) likewise keeps 4.x.x and turns others into 4.0.0.
pub(super) fn error_text(nh: &str, empty: &str, class: char) -> (String, String) {
    let nh = if nh.is_empty() { empty } else { nh };
    let default = format!("{class}.0.0");
    match nh.split_once(' ') {
        Some((code, rest))
            if code.len() >= 5
                && (code.starts_with("4.") || code.starts_with("5."))
                && code[2..].chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            let dsn = if code.starts_with(class) {
                code.to_string()
            } else {
                default
            };
            (dsn, rest.trim().to_string())
        }
        _ => (default, nh.to_string()),
    }
}

/// Return the failed recipients to the sender; for `<>` mail, a postmaster copy when
/// `notify_classes` has `bounce`, else nothing (Postfix's default). Returns whether the
/// recipients may be marked done (the notification is queued or, as in Postfix, not
/// wanted).
pub(super) fn send_bounce(
    s: &QmgrSettings,
    id: &str,
    msg: &QueuedMessage,
    failed: &[bounce::Failed],
) -> bool {
    let audience = if msg.sender.is_empty() {
        if !s.notify_bounce {
            return true;
        }
        bounce::Audience::Postmaster
    } else if msg.sender.eq_ignore_ascii_case(&s.double_bounce_sender) {
        log::warning(
            &s.ident_bounce,
            &format!("{id}: undeliverable postmaster notification discarded"),
        );
        return true;
    } else {
        bounce::Audience::Sender
    };
    let Some(queue) = QUEUE.get() else {
        log::warning(
            &s.ident_bounce,
            &format!("{id}: no queue: non-delivery notification not sent"),
        );
        return false;
    };
    match bounce::send(
        queue,
        msg,
        failed,
        audience,
        &s.double_bounce_sender,
        &s.double_bounce_recipient,
        None,
    ) {
        Ok(new) => {
            let who = match audience {
                bounce::Audience::Sender => "sender",
                bounce::Audience::Postmaster => "postmaster",
            };
            log::info(
                &s.ident_bounce,
                &format!("{id}: {who} non-delivery notification: {new}"),
            );
            true
        }
        Err(e) => {
            log::warning(
                &s.ident_bounce,
                &format!("{id}: cannot queue the non-delivery notification: {e}"),
            );
            false
        }
    }
}

pub(super) fn defer_message(
    s: &QmgrSettings,
    path: &Path,
    id: &str,
    msg: &QueuedMessage,
    entries: &[defer::DeferEntry],
) {
    if let Err(e) = defer::write_log(&s.queue_directory, id, entries) {
        log::warning(&s.ident_qmgr, &format!("{id}: cannot write defer log: {e}"));
    }
    let store = Store::new(&s.queue_directory);
    let dest = store.path("deferred", id);
    let age = msg.arrival.elapsed().unwrap_or_default();
    let backoff = age.clamp(s.minimal_backoff, s.maximal_backoff.max(s.minimal_backoff));
    let next = SystemTime::now() + backoff;
    if let Err(e) = store.defer(path, id, next) {
        log::warning(
            &s.ident_qmgr,
            &format!("{id}: move to {}: {e}", dest.display()),
        );
    }
}

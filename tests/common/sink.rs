//! A scripted SMTP peer on loopback (the relay or MX that Postern's smtp(8) client talks
//! to): fixed replies (the same as the peers of `scripts/regen-smtp-fixtures`), RCPT
//! refused for addresses starting with `bad` (550) or `later` (450), a message for an
//! address starting with `busy` answered 421 at its end (the connection kept open: a
//! client that caches it anyway shows in the transcript), and a [`SinkMode`] for
//! the failures the tests need. It keeps every session's transcript, counts connections,
//! collects the messages, and reports events (`connected`, `message\n` + the message) to
//! whoever waits for them; a held sink greets each connection only after [`Sink::release`].

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The queue ID the sink answers the end of DATA with.
pub const SINK_QID: &str = "4PEERQID01";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SinkMode {
    Accept,
    Greet554,
    /// Reads the whole message, closes without answering the final dot.
    DropEndOfData,
    /// Answers the final dot, then closes (a server that ends a session its client keeps
    /// idle in a connection cache).
    CloseAfterMessage,
    /// As `Accept`, but takes `later…` recipients too (a fallback relay for what another
    /// server greylisted).
    AcceptAll,
}

pub struct Sink {
    pub port: u16,
    mode: Arc<Mutex<SinkMode>>,
    /// Every session's lines, `C: …` from the client, `S: …` replies.
    transcript: Arc<Mutex<Vec<String>>>,
    /// The same lines, one list per session.
    per_session: Arc<Mutex<Vec<Vec<String>>>>,
    pub connections: Arc<AtomicUsize>,
    /// Non-empty messages received (DATA completed and answered 250): the raw lines.
    pub messages: Arc<Mutex<Vec<String>>>,
    events: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
}

impl Sink {
    /// A sink on a free loopback port.
    pub fn start(mode: SinkMode) -> Sink {
        Self::start_on("127.0.0.1", 0, mode, false)
    }

    /// A sink on `addr`:`port` (0: a free one). With `hold`, each connection waits for a
    /// [`Sink::release`] before the greeting.
    pub fn start_on(addr: &str, port: u16, mode: SinkMode, hold: bool) -> Sink {
        let l = TcpListener::bind((addr, port)).expect("bind sink");
        let port = l.local_addr().unwrap().port();
        let (tx, events) = mpsc::channel();
        let (release, go) = mpsc::channel::<()>();
        let s = Sink {
            port,
            mode: Arc::new(Mutex::new(mode)),
            transcript: Arc::default(),
            per_session: Arc::default(),
            connections: Arc::default(),
            messages: Arc::default(),
            events,
            release,
        };
        let (m, t, c, msgs, per) = (
            s.mode.clone(),
            s.transcript.clone(),
            s.connections.clone(),
            s.messages.clone(),
            s.per_session.clone(),
        );
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send("connected".to_string());
                if hold && go.recv().is_err() {
                    return;
                }
                let (m, t, msgs, tx) = (*m.lock().unwrap(), t.clone(), msgs.clone(), tx.clone());
                let idx = {
                    let mut p = per.lock().unwrap();
                    p.push(Vec::new());
                    p.len() - 1
                };
                let per = per.clone();
                std::thread::spawn(move || {
                    let note = |l: String| {
                        per.lock().unwrap()[idx].push(l.clone());
                        t.lock().unwrap().push(l);
                    };
                    let _ = session(conn, m, &note, &msgs, &tx);
                });
            }
        });
        s
    }

    pub fn set_mode(&self, m: SinkMode) {
        *self.mode.lock().unwrap() = m;
    }

    /// Each session's transcript, in the order the connections came.
    pub fn sessions(&self) -> Vec<Vec<String>> {
        self.per_session.lock().unwrap().clone()
    }

    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().unwrap().clone()
    }

    /// Let one held connection go on.
    pub fn release(&self) {
        let _ = self.release.send(());
    }

    /// The next event, within 30 s.
    pub fn next(&self) -> String {
        self.events
            .recv_timeout(Duration::from_secs(30))
            .expect("sink event")
    }

    /// Wait (60 s at most) for a message containing `token`.
    pub fn wait_message(&self, token: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(e) = self.events.recv_timeout(Duration::from_secs(1))
                && e.starts_with("message")
                && e.contains(token)
            {
                return e;
            }
        }
        panic!("the sink got no message with {token}");
    }
}

fn session(
    conn: TcpStream,
    mode: SinkMode,
    t: &dyn Fn(String),
    msgs: &Mutex<Vec<String>>,
    events: &mpsc::Sender<String>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let say = |w: &mut TcpStream, line: &str| -> std::io::Result<()> {
        t(format!("S: {line}"));
        w.write_all(format!("{line}\r\n").as_bytes())
    };
    if mode == SinkMode::Greet554 {
        say(
            &mut w,
            "554 5.7.1 peer.example ESMTP not accepting mail from you",
        )?;
    } else {
        say(&mut w, "220 peer.example ESMTP scripted")?;
    }
    // The transaction has a `busy` recipient.
    let mut busy = false;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            t("C: <EOF>".into());
            return Ok(());
        }
        let l = l.trim_end_matches(['\r', '\n']).to_string();
        t(format!("C: {l}"));
        let verb = l.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" if mode == SinkMode::Greet554 => {
                say(&mut w, "503 5.5.1 Error: go away")?
            }
            "EHLO" => {
                for x in [
                    "250-peer.example",
                    "250-PIPELINING",
                    "250-SIZE 10240000",
                    "250-ENHANCEDSTATUSCODES",
                    "250 8BITMIME",
                ] {
                    say(&mut w, x)?;
                }
            }
            "HELO" => say(&mut w, "250 peer.example")?,
            "MAIL" => {
                busy = false;
                say(&mut w, "250 2.1.0 Ok")?
            }
            "RCPT" => {
                let a = l
                    .split('<')
                    .nth(1)
                    .and_then(|x| x.split('>').next())
                    .unwrap_or("");
                if a.starts_with("bad") {
                    say(
                        &mut w,
                        &format!(
                            "550 5.1.1 <{a}>: Recipient address rejected: User unknown in local recipient table"
                        ),
                    )?;
                } else if a.starts_with("later") && mode != SinkMode::AcceptAll {
                    say(
                        &mut w,
                        &format!(
                            "450 4.2.0 <{a}>: Recipient address rejected: Greylisted, try again later"
                        ),
                    )?;
                } else {
                    busy |= a.starts_with("busy");
                    say(&mut w, "250 2.1.5 Ok")?;
                }
            }
            "DATA" => {
                say(&mut w, "354 End data with <CR><LF>.<CR><LF>")?;
                let mut body = String::new();
                loop {
                    let mut b = String::new();
                    if r.read_line(&mut b)? == 0 {
                        t("C: <EOF in DATA>".into());
                        return Ok(());
                    }
                    if b == ".\r\n" || b == ".\n" {
                        break;
                    }
                    body.push_str(&b);
                }
                t("C: <message> .".into());
                if mode == SinkMode::DropEndOfData {
                    t("-- peer closes without answering".into());
                    return Ok(());
                }
                if busy {
                    say(&mut w, "421 4.3.2 peer.example Service shutting down")?;
                    continue;
                }
                // Postfix answers a 354 that follows no accepted recipient with an empty
                // message (pipelining): not a message.
                if !body.is_empty() {
                    let _ = events.send(format!("message\n{body}"));
                    msgs.lock().unwrap().push(body);
                }
                say(&mut w, &format!("250 2.0.0 Ok: queued as {SINK_QID}"))?;
                if mode == SinkMode::CloseAfterMessage {
                    t("-- peer closes".into());
                    return Ok(());
                }
            }
            "RSET" | "NOOP" => say(&mut w, "250 2.0.0 Ok")?,
            "QUIT" => {
                say(&mut w, "221 2.0.0 Bye")?;
                return Ok(());
            }
            _ => say(&mut w, "502 5.5.2 Error: command not recognized")?,
        }
    }
}

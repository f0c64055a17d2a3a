//! POP3 load client for `scripts/bench-pop3` (measures servers, never asserts): CLIENTS
//! threads each run SESSIONS sessions of USER/PASS, STAT, UIDL, RETR of every message,
//! QUIT against 127.0.0.1:PORT, and print sessions per second. Written in Rust so the
//! client's own CPU (on the same cores as the server) stays small next to the server's:
//! a Python client spent more CPU reading replies line by line than either server did.
//!
//! Usage: pop3-load PORT CLIENTS SESSIONS MESSAGES [USER PASSWORD]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

fn session(port: u16, msgs: usize, user: &str, pass: &str) -> Result<(), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).ok();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut line = Vec::with_capacity(1024);
    let mut status = |r: &mut BufReader<TcpStream>| -> Result<String, String> {
        line.clear();
        r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        if !line.starts_with(b"+OK") {
            return Err(format!("bad reply {:?}", String::from_utf8_lossy(&line)));
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    };
    // Skips a multi-line answer up to the ".\r\n" line, reading whole buffers.
    fn multi(r: &mut BufReader<TcpStream>) -> Result<(), String> {
        let mut at_line_start = true;
        let mut dot = 0u8; // 1: "." at line start seen, 2: ".\r" seen
        loop {
            let buf = r.fill_buf().map_err(|e| e.to_string())?;
            if buf.is_empty() {
                return Err("connection closed in a multi-line reply".into());
            }
            let mut used = 0;
            for &b in buf {
                used += 1;
                match (dot, b) {
                    (2, b'\n') => {
                        r.consume(used);
                        return Ok(());
                    }
                    (1, b'\r') => dot = 2,
                    _ if at_line_start && b == b'.' => dot = 1,
                    _ => dot = 0,
                }
                at_line_start = b == b'\n';
            }
            r.consume(used);
        }
    }
    let cmd = |w: &mut TcpStream, c: &str| -> Result<(), String> {
        w.write_all(format!("{c}\r\n").as_bytes())
            .map_err(|e| e.to_string())
    };
    status(&mut r)?;
    cmd(&mut w, &format!("USER {user}"))?;
    status(&mut r)?;
    cmd(&mut w, &format!("PASS {pass}"))?;
    status(&mut r)?;
    cmd(&mut w, "STAT")?;
    let stat = status(&mut r)?;
    let n: usize = stat
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .ok_or("bad STAT")?;
    if n != msgs {
        return Err(format!("STAT says {n} messages, expected {msgs}"));
    }
    cmd(&mut w, "UIDL")?;
    status(&mut r)?;
    multi(&mut r)?;
    for i in 1..=n {
        cmd(&mut w, &format!("RETR {i}"))?;
        status(&mut r)?;
        multi(&mut r)?;
    }
    cmd(&mut w, "QUIT")?;
    status(&mut r)?;
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: pop3-load PORT CLIENTS SESSIONS MESSAGES [USER PASSWORD]");
        std::process::exit(2);
    }
    let port: u16 = a[1].parse().expect("port");
    let clients: usize = a[2].parse().expect("clients");
    let sessions: usize = a[3].parse().expect("sessions");
    let msgs: usize = a[4].parse().expect("messages");
    let user = a.get(5).cloned().unwrap_or_else(|| "alice".into());
    let pass = a.get(6).cloned().unwrap_or_else(|| "secret".into());
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (user, pass) = (user.clone(), pass.clone());
            std::thread::spawn(move || {
                for _ in 0..sessions {
                    if let Err(e) = session(port, msgs, &user, &pass) {
                        eprintln!("pop3-load: {e}");
                        std::process::exit(1);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{:.2}", (clients * sessions) as f64 / secs);
}

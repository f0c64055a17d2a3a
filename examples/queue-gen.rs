//! A large queue for `scripts/bench-tools queue-tools` (measures, never asserts): N
//! messages of about 2 KB in `deferred/`, each with a defer log, as a mail system holds
//! them while a relay is down. The queue files are made by Postern's own queue writer
//! (`Queue::build_file`, the bytes `smtpd` commits), under queue IDs from
//! `Queue::new_queue_id_unfiled`; they are written without fsync (a benchmark's scratch
//! queue). The defer logs are in the format of `qmgr::defer::write_log` (Postfix's), also
//! unsynced. The real Postfix 3.7 reads these files (`postqueue -p`, `postsuper`).
//!
//! Usage: queue-gen CONFIG_DIR N (main.cf's `queue_directory` names the queue)

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use postern::config::postfix::{LoadOptions, PostfixConfig};
use postern::queue::{ClientInfo, Envelope, Queue, Recipient};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        anyhow::bail!("usage: queue-gen CONFIG_DIR N");
    };
    let cfg = PostfixConfig::load(&LoadOptions {
        config_dir: Some(dir.into()),
        overrides: Vec::new(),
    })?;
    let queue = Queue::open(&cfg)?;
    let qdir = queue.settings().queue_directory.clone();
    let client = ClientInfo {
        helo: Some("client.example.org".into()),
        hostname: "client.example.org".into(),
        addr: "192.0.2.10".parse()?,
        port: 40000,
        protocol: "ESMTP".into(),
        tls: None,
        sasl_method: None,
        sasl_username: None,
        local_submission: false,
    };
    let body: String = (0..25)
        .map(|i| format!("line {i} of a message body that is about two kilobytes long........\r\n"))
        .collect();
    let now = SystemTime::now();
    for i in 0..n {
        let id = queue.new_queue_id_unfiled();
        let rcpts: Vec<Recipient> = (0..1 + i % 3)
            .map(|r| Recipient {
                address: format!("user{i}.{r}@dest{}.example.net", i % 50),
                ..Recipient::default()
            })
            .collect();
        let env = Envelope {
            sender: if i % 20 == 0 {
                String::new()
            } else {
                format!("sender{i}@example.org")
            },
            recipients: rcpts.clone(),
            size_hint: None,
            body_type: None,
            smtputf8: false,
            ret: None,
            envid: None,
        };
        let message = format!(
            "From: <sender{i}@example.org>\r\nTo: <{}>\r\nSubject: queued message {i}\r\n\
             Message-ID: <{i}.bench@example.org>\r\n\r\n{body}",
            rcpts[0].address
        );
        let arrival = now - Duration::from_secs((i % 86_400) as u64);
        let data = queue.build_file(&id, &env, &client, message.as_bytes(), arrival)?;
        let store = queue.store();
        let path = store.path("deferred", id.as_str());
        if let Some(parent) = path.parent() {
            postern::queue::make_queue_dir(parent)?;
        }
        std::fs::write(&path, &data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        // The defer log: every recipient but the last of three deferred with a reason.
        let log = store.path("defer", id.as_str());
        if let Some(parent) = log.parent() {
            postern::queue::make_queue_dir(parent)?;
        }
        let mut out = Vec::new();
        for r in rcpts.iter().take(rcpts.len().min(2)) {
            let reason = format!(
                "connect to mx{}.example.net[192.0.2.{}]:25: Connection timed out",
                i % 50,
                i % 250
            );
            write!(
                out,
                "\n<{a}>: {reason}\nrecipient={a}\nstatus=4.4.1\naction=delayed\nreason={reason}\n\n",
                a = r.address
            )?;
        }
        std::fs::write(&log, &out)?;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600))?;
        queue.release_queue_id(&id);
    }
    println!("{n} messages in {}", qdir.join("deferred").display());
    Ok(())
}

// Shared by the fuzz targets (included with `#[path]`, not a crate of its own).

/// Table-opening options that drop warnings: a fuzzer makes millions of bad lines.
#[allow(dead_code)]
pub fn quiet_map_options() -> postern::maps::OpenOptions {
    postern::maps::OpenOptions {
        warn: std::sync::Arc::new(|_: &str| {}),
        ..Default::default()
    }
}

/// `data` cut at the first NUL: the text before it, and the lines after it (lookup keys,
/// at most `max`, each at most 256 bytes).
#[allow(dead_code)]
pub fn split_keys(data: &[u8], max: usize) -> (&[u8], Vec<String>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => {
            let keys = String::from_utf8_lossy(&data[i + 1..])
                .split('\n')
                .take(max)
                .map(|k| k.chars().take(256).collect())
                .collect();
            (&data[..i], keys)
        }
        None => (data, vec!["user@example.com".into(), "192.0.2.1".into()]),
    }
}

/// A fresh scratch directory for this process (on tmpfs when there is one: the mailbox
/// code fsyncs, which costs nothing there), emptied on each call.
#[allow(dead_code)]
pub fn scratch(name: &str) -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("postern-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// With `$FUZZ_LAST_INPUT` set, write each input there before running it: a run killed
/// by a signal libFuzzer cannot catch (a stack overflow: libFuzzer's SIGSEGV handler has
/// no alternate stack) leaves no artifact, but leaves this file.
#[allow(dead_code)]
pub fn note_input(data: &[u8]) {
    use std::sync::OnceLock;
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    if let Some(p) = PATH.get_or_init(|| std::env::var_os("FUZZ_LAST_INPUT").map(Into::into)) {
        let _ = std::fs::write(p, data);
    }
}

/// A connected pair of stream sockets for a server that takes a TCP stream: the client's
/// end (a Unix stream) and the server's end as a `std::net::TcpStream`, both non-blocking
/// (for tokio's `from_std`). A Unix socketpair, not loopback TCP: at thousands of runs a
/// second, loopback connections leave tens of thousands in TIME_WAIT and use up the
/// ephemeral ports (other programs' connections then fail). SIGPIPE is ignored from the
/// first call on. The servers here only read,
/// write and shut down their stream, and take the addresses as arguments; `local_addr`
/// and `set_nodelay` fail on it (AF_UNIX), which they ignore.
#[allow(dead_code)]
pub fn stream_pair() -> (std::os::unix::net::UnixStream, std::net::TcpStream) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // A write to a Unix socket whose peer is gone raises SIGPIPE (a TCP socket's does not:
    // Rust and tokio send with MSG_NOSIGNAL there), and libFuzzer's main does not ignore
    // it: the process would die where the TCP version got EPIPE.
    static IGNORE_SIGPIPE: std::sync::Once = std::sync::Once::new();
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory of this process.
    IGNORE_SIGPIPE.call_once(|| unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    });
    let (client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    client.set_nonblocking(true).expect("nonblocking");
    server.set_nonblocking(true).expect("nonblocking");
    // SAFETY: the descriptor is a connected stream socket owned by nothing else; a
    // TcpStream's reads, writes and shutdown are the same system calls on it.
    let server = unsafe { std::net::TcpStream::from_raw_fd(server.into_raw_fd()) };
    (client, server)
}

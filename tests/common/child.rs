//! Running one test body in a child process (entering the sandbox cannot be
//! undone): the test re-executes its own binary for itself alone
//! (`--exact NAME`) with [`CHILD_ENV`] set to its name. The child runs the
//! sandboxed body and prints `CHILD OK` ([`child_ok`]); the parent reads its
//! stdout line by line while it runs ([`Child::wait_line`]), so it can act
//! on what the child announces (a port, "sandbox entered"), then checks its
//! exit ([`Child::finish`]).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The variable that makes the test binary run a test's child body.
pub const CHILD_ENV: &str = "CAPLOOP_SANDBOX_CHILD";

/// Whether this process is the child of test `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Ends the child: everything checked.
pub fn child_ok() -> ! {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"CHILD OK\n");
    let _ = out.flush();
    std::process::exit(0)
}

/// Prints `line` to stdout at once (the parent may be waiting for it).
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A running child.
pub struct Child {
    name: String,
    proc: std::process::Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Child {
    /// Starts the child of test `name` with extra environment `env`.
    pub fn spawn(name: &str, env: &[(&str, String)]) -> Child {
        let mut proc = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, name)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the child");
        let (tx, lines) = mpsc::channel();
        let out = proc.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = proc.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Child {
            name: name.to_owned(),
            proc,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits (at most `timeout`) for a stdout line containing `prefix` and
    /// returns what follows it. Panics, with the child's output, if the
    /// child exits or the time runs out first.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // libtest prints "test NAME ... " without a newline
                    // before the body runs: the line may start with that.
                    let rest = line
                        .find(prefix)
                        .map(|i| line[i + prefix.len()..].to_owned());
                    self.seen.push(line);
                    if let Some(rest) = rest {
                        return rest;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.proc.kill();
                    let out = self.collect();
                    panic!(
                        "child {}: no line {prefix:?} within {timeout:?}\n{out}",
                        self.name
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let out = self.collect();
                    panic!("child {}: exited before {prefix:?}\n{out}", self.name);
                }
            }
        }
    }

    /// Waits for the child to exit, checks it printed `CHILD OK` and exited
    /// 0, and returns its whole stdout.
    pub fn finish(mut self) -> String {
        let status = self.proc.wait().expect("waiting for the child");
        let out = self.collect();
        let stdout = self.seen.join("\n");
        assert!(
            status.success() && self.seen.iter().any(|l| l.ends_with("CHILD OK")),
            "child {} failed ({status:?})\n{out}",
            self.name
        );
        stdout
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits at most `timeout` for the child to exit and returns how it
    /// ended (`None`: still running, now killed), with everything it
    /// printed.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.proc.try_wait().expect("waiting for the child") {
                break Some(st);
            }
            if Instant::now() >= end {
                let _ = self.proc.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = self.collect();
        (status, out)
    }

    /// Everything the child printed, for failure messages.
    fn collect(&mut self) -> String {
        let _ = self.proc.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        format!("--- stdout\n{}\n--- stderr\n{stderr}", self.seen.join("\n"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A parent-side assertion failed: do not leave the child running.
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}
